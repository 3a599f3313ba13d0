"""AMQP 0-9-1 (RabbitMQ): consume a queue into canonical events, publish events to an exchange."""

from adapters.amqp.inbound import AmqpInbound
from adapters.amqp.outbound import AmqpOutbound

# One entry point for the family: `type: amqp` under inbound: consumes, under outbound: publishes.
ADAPTERS = (AmqpInbound, AmqpOutbound)
