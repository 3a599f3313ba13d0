"""An outbound adapter made from its config alone, as the hub makes it, for tests that talk to a
target directly (what one event does, not what the hub does around it)."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from bus.adapter_api import Context

_MODULES = {
    "mqtt": ("adapters.mqtt.config", "MqttOutboundConfig", "adapters.mqtt.outbound", "MqttOutbound"),
    "nats": ("adapters.nats.config", "NatsOutboundConfig", "adapters.nats.outbound", "NatsOutbound"),
    "kafka": ("adapters.kafka.config", "KafkaOutboundConfig", "adapters.kafka.outbound", "KafkaOutbound"),
    "amqp": ("adapters.amqp.config", "AmqpOutboundConfig", "adapters.amqp.outbound", "AmqpOutbound"),
}


def outbound(kind: str, spec: dict[str, Any]) -> Any:
    """The ``kind`` outbound named "out", configured by ``spec`` (validated like a config file's)."""
    config_module, config_name, adapter_module, adapter_name = _MODULES[kind]
    config = getattr(importlib.import_module(config_module), config_name).model_validate({"name": "out", "type": kind, **spec})
    return getattr(importlib.import_module(adapter_module), adapter_name)(config, Context("out", logging.getLogger("test")))
