"""Connection tokens at rest: one record per connection in a compacted Kafka topic, its value
the tokens encrypted with the config's key (Fernet). A record replaces the one before it whole,
so a reader sees the old pair or the new pair, never a mix; a write returns once Kafka
acknowledged it (acks=all), so the hub uses a rotated refresh token only after it is stored."""

from __future__ import annotations

__all__ = ["CredentialStore"]

import asyncio
import json

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography.fernet import Fernet, InvalidToken

from bus.config.connections import CredentialsConfig
from bus.config.models import KafkaConfig
from bus.credentials.grant import Tokens
from bus.errors import KafkaUnavailable
from bus.kafka.reader import read_topic


class CredentialStore:
    def __init__(self, config: CredentialsConfig, producer: AIOKafkaProducer, kafka: KafkaConfig, bootstrap: str, topic: str) -> None:
        self._fernet = Fernet(config.key.get_secret_value().encode())
        self._producer = producer
        self._kafka = kafka
        self._bootstrap = bootstrap
        self.topic = topic

    async def load_all(self) -> dict[str, Tokens | str]:
        """Connection -> its newest tokens, or why they cannot be read (another key, a cleared record)."""
        found: dict[str, Tokens | str] = {}
        for record in await read_topic(self._kafka, self._bootstrap, self.topic):
            if record.key is None:
                continue
            name = record.key.decode(errors="replace")
            if record.value is None:
                found.pop(name, None)  # logged out
                continue
            try:
                found[name] = Tokens.load(json.loads(self._fernet.decrypt(record.value)))
            except InvalidToken:
                found[name] = "the stored tokens do not decrypt with credentials.key (was the key changed?): run `bus auth login` again"
            except (ValueError, KeyError, TypeError):
                found[name] = "the stored tokens are not readable: run `bus auth login` again"
        return found

    async def save(self, name: str, tokens: Tokens) -> None:
        value = self._fernet.encrypt(json.dumps(tokens.dump()).encode())
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(self.topic, value, key=name.encode()), timeout=self._kafka.produce_timeout_s
            )
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnavailable(f"the tokens of connection {name} were not stored: {exc!r}") from exc
