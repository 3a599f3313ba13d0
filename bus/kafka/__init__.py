"""Kafka wiring: the embedded broker, client factories, topic names and topic bootstrap."""
