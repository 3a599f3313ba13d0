"""Config models of the NATS JetStream adapter family."""

from __future__ import annotations

__all__ = ["NatsInboundConfig", "NatsOutboundConfig"]

import dataclasses
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.nats.credentials import check_seed_file, read_creds
from bus.adapter_api import AdapterConfig, BodyMap, ConfigPath, Contract, EmitSpec, OutboundConfig, TemplateText, TlsConnection


class _Server(TlsConnection, AdapterConfig):
    url: SecretStr = Field(
        description="Server URL (may hold a user and password, or a token: use ${ENV}); tls:// for TLS. Several servers of a "
        "cluster, comma-separated, so that a start needs any one of them up: nats://nats-0:4222,nats://nats-1:4222.",
        examples=["nats://nats:4222", "nats://nats-0:4222,nats://nats-1:4222,nats://nats-2:4222"],
    )
    credentials: ConfigPath | None = Field(
        default=None,
        description="A .creds file (the user's JWT and nkey seed), for NATS decentralized auth: accounts made with nsc, Synadia "
        "Cloud, NGS. Read at every connection, so a rotated file is taken up at the next reconnect.",
        examples=["secrets/hub.creds"],
    )
    nkey_seed: ConfigPath | None = Field(
        default=None,
        description="A file holding the user's nkey seed (SU...), for a server whose users are nkeys "
        "(authorization { users: [{nkey: U...}] }).",
        examples=["secrets/hub.nk"],
    )

    @model_validator(mode="after")
    def _one_way_in(self) -> _Server:
        if self.credentials is not None and self.nkey_seed is not None:
            raise ValueError("give credentials (a .creds file) or nkey_seed, not both: a .creds file holds its own seed")
        return self

    def contract(self, base_dir: Path) -> Contract:
        """``bus validate``: the TLS files, and the credentials or seed file read and checked."""
        found = super().contract(base_dir)
        try:
            if self.credentials is not None:
                read_creds(self.credentials)
            if self.nkey_seed is not None:
                check_seed_file(self.nkey_seed)
        except ValueError as exc:
            where = ("credentials",) if self.credentials is not None else ("nkey_seed",)
            return dataclasses.replace(found, errors=(*found.errors, (where, str(exc))))
        return found


class NatsInboundConfig(_Server):
    """Pull messages from a JetStream stream through a durable consumer. Each message is
    acknowledged only after Kafka has its event (a negative ack with a delay while Kafka cannot
    acknowledge); the durable consumer resumes where it stopped after a restart."""

    type: Literal["nats"] = "nats"
    stream: str = Field(description="JetStream stream.", examples=["ORDERS"])
    subject: str = Field(description="Subject filter; * and > wildcards.", examples=["orders.>"])
    durable: str | None = Field(default=None, description="Durable consumer name; default bus-<name>.")
    declare: bool = Field(default=True, description="Create the stream (file storage, the subject) if it does not exist.")
    batch: int = Field(default=100, ge=1, le=10_000, description="Messages fetched at once (and in flight).")
    empty: Literal["dead_letter", "skip"] = Field(
        default="dead_letter",
        description="A message with no payload (a key-value bucket's delete or purge marker, read from its KV_ stream): "
        "dead_letter parks it on the inbound dead letters saying so; skip passes over it, counted as "
        '`bus_inbound_events_total{outcome="skipped"}` and in the adapter\'s progress.',
    )
    emit: EmitSpec = Field(description="How the JSON payload becomes a canonical event.")


class NatsOutboundConfig(OutboundConfig, _Server):
    """Publish each event to JetStream: delivered once the stream acknowledged it. The event id is
    the Nats-Msg-Id header, so the stream itself drops a repeat within its duplicate window."""

    type: Literal["nats"] = "nats"
    subject: TemplateText = Field(description="Subject: a ${} template over the event's fields.", examples=["billing.invoices.${currency}"])
    body: BodyMap = Field(
        default=None,
        description="Payload field -> expression over the event's fields ($id, $type... for metadata). Default: the event's fields.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for the stream's acknowledgement; then retry.")
