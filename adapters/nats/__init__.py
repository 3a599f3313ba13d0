"""NATS JetStream: pull from a stream with a durable consumer, and publish acknowledged messages."""

from adapters.nats.inbound import NatsInbound
from adapters.nats.outbound import NatsOutbound

# One entry point for the family: `type: nats` under inbound: consumes, under outbound: publishes.
ADAPTERS = (NatsInbound, NatsOutbound)
