"""Config models and loading. See ``bus.config.loader`` for the rules of a config file."""

from bus.config.loader import LoadedConfig, load_config
from bus.config.models import HttpServerConfig, HubConfig, KafkaConfig, KafkaSecurity, RouteConfig, SchemaRegistryConfig

__all__ = [
    "HttpServerConfig",
    "HubConfig",
    "KafkaConfig",
    "KafkaSecurity",
    "LoadedConfig",
    "RouteConfig",
    "SchemaRegistryConfig",
    "load_config",
]
