"""Redis: read a Stream through a consumer group into canonical events; append events to a Stream,
or keep them under keys as JSON strings or hashes."""

from adapters.redis.inbound import RedisInbound
from adapters.redis.outbound import RedisOutbound

# One entry point for the family: `type: redis` under inbound: reads a stream, under outbound: writes.
ADAPTERS = (RedisInbound, RedisOutbound)
