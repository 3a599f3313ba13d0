"""Kafka as a system like any other: bridge a foreign topic in, publish events to a topic out."""

from adapters.kafka.inbound import KafkaInbound
from adapters.kafka.outbound import KafkaOutbound

# One entry point for the family: `type: kafka` under inbound bridges a topic in, under outbound publishes.
ADAPTERS = (KafkaInbound, KafkaOutbound)
