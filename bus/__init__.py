"""The hub's core: config, the canonical event and its codec, Kafka wiring, runtime, CLI."""
