"""The embedded schema registry: the Confluent REST API, served by the hub, stored in Kafka.

Every registration is one record on a compacted topic (key ``subject/version``), produced with
acks=all before the answer; on start the whole topic is read back, so ids and versions survive
a restart of the hub. Schema ids are derived from the schema text (SHA-256, 31 bits, probing on
the rare collision), so two hub processes that register the same schema agree on its id without
talking to each other, and ids stay the same even if the topic is lost.

Readers take the last record per key themselves: the embedded broker does not compact
(shared/TANSU.md), and doing so is also correct on Kafka.

Served subset (issue 6 adds compatibility checks, per-subject config and deletes):
``GET /subjects``, ``GET /subjects/{s}/versions``, ``GET /subjects/{s}/versions/{v|latest}``,
``POST /subjects/{s}/versions``, ``POST /subjects/{s}`` (lookup), ``GET /schemas/ids/{id}``,
``GET /config``.
"""

from __future__ import annotations

__all__ = ["EmbeddedRegistry"]

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bus.config.models import KafkaConfig
from bus.errors import RetryableError
from bus.kafka.clients import make_consumer, make_producer
from bus.kafka.reader import read_to_end

log = logging.getLogger("schemas.embedded_registry")
_JSON = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True, slots=True)
class _Version:
    subject: str
    version: int
    id: int
    schema: str

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "version": self.version, "id": self.id, "schema": self.schema}


def _normalise(schema: str) -> str:
    """Same schema, same text: parse and re-dump compactly so whitespace never changes an id."""
    return json.dumps(json.loads(schema), separators=(",", ":"))


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"error_code": code, "message": message}, status=status, content_type=_JSON)


class EmbeddedRegistry:
    def __init__(self, kafka: KafkaConfig, bootstrap: str, topic: str) -> None:
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._topic = topic
        self._producer = make_producer(kafka, bootstrap)
        self._subjects: dict[str, list[_Version]] = {}
        self._by_id: dict[int, str] = {}
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        try:
            await self._producer.start()
            await self._load()
        except KafkaError as exc:
            await self._producer.stop()
            raise RetryableError(f"embedded schema registry cannot read {self._topic}: {exc}") from exc
        self._started = True
        log.info("embedded schema registry: %d subject(s), %d schema(s) loaded from %s", len(self._subjects), len(self._by_id), self._topic)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def _load(self) -> None:
        # No group: read partition 0 from the start to the fetch high watermark (the embedded
        # broker's ListOffsets answers too low, shared/TANSU.md; the fetch's watermark is right).
        consumer = make_consumer(self._kafka, self._bootstrap, group_id=None)  # type: ignore[arg-type]
        try:
            await consumer.start()
            tp = TopicPartition(self._topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            await read_to_end(consumer, [tp], self._apply_records, timeout_s=60)
        finally:
            await consumer.stop()

    def _apply_records(self, _tp: TopicPartition, records: list[Any]) -> None:
        for record in records:
            if record.value is not None:
                self._apply(_Version(**json.loads(record.value)))

    def _apply(self, version: _Version) -> None:
        versions = self._subjects.setdefault(version.subject, [])
        versions[:] = [v for v in versions if v.version != version.version]
        versions.append(version)
        versions.sort(key=lambda v: v.version)
        self._by_id[version.id] = version.schema

    def _id_for(self, schema: str) -> int:
        for candidate_id, text in self._by_id.items():
            if text == schema:
                return candidate_id
        schema_id = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:4], "big") & 0x7FFFFFFF or 1
        while schema_id in self._by_id:  # a different schema already holds this id
            schema_id = schema_id % 0x7FFFFFFF + 1
        return schema_id

    async def register(self, subject: str, schema: str) -> int:
        schema = _normalise(schema)
        versions = self._subjects.get(subject, [])
        for existing in versions:
            if existing.schema == schema:
                return existing.id
        version = _Version(subject, (versions[-1].version if versions else 0) + 1, self._id_for(schema), schema)
        value = json.dumps(version.as_json()).encode()
        try:
            await self._producer.send_and_wait(self._topic, value, key=f"{subject}/{version.version}".encode(), partition=0)
        except KafkaError as exc:
            raise RetryableError(f"cannot store schema for {subject}: {exc}") from exc
        self._apply(version)
        log.info("registered %s version %d as id %d", subject, version.version, version.id)
        return version.id

    # -- HTTP ------------------------------------------------------------------------------
    def routes(self) -> web.RouteTableDef:
        r = web.RouteTableDef()

        @r.get("/subjects")
        async def subjects(_: web.Request) -> web.Response:
            return web.json_response(sorted(self._subjects), content_type=_JSON)

        @r.get("/subjects/{subject}/versions")
        async def versions(request: web.Request) -> web.Response:
            found = self._subjects.get(request.match_info["subject"])
            if not found:
                return _error(404, 40401, "Subject not found")
            return web.json_response([v.version for v in found], content_type=_JSON)

        @r.get("/subjects/{subject}/versions/{version}")
        async def version(request: web.Request) -> web.Response:
            found = self._subjects.get(request.match_info["subject"])
            if not found:
                return _error(404, 40401, "Subject not found")
            wanted = request.match_info["version"]
            if wanted in ("latest", "-1"):
                return web.json_response(found[-1].as_json(), content_type=_JSON)
            for v in found:
                if str(v.version) == wanted:
                    return web.json_response(v.as_json(), content_type=_JSON)
            return _error(404, 40402, "Version not found")

        @r.post("/subjects/{subject}/versions")
        async def register(request: web.Request) -> web.Response:
            schema = await self._schema_from(request)
            if isinstance(schema, web.Response):
                return schema
            try:
                schema_id = await self.register(request.match_info["subject"], schema)
            except RetryableError as exc:
                return _error(503, 50003, str(exc))
            return web.json_response({"id": schema_id}, content_type=_JSON)

        @r.post("/subjects/{subject}")
        async def lookup(request: web.Request) -> web.Response:
            schema = await self._schema_from(request)
            if isinstance(schema, web.Response):
                return schema
            for v in self._subjects.get(request.match_info["subject"], []):
                if v.schema == schema:
                    return web.json_response(v.as_json(), content_type=_JSON)
            return _error(404, 40403, "Schema not found")

        @r.get("/schemas/ids/{schema_id}")
        async def by_id(request: web.Request) -> web.Response:
            try:
                text = self._by_id.get(int(request.match_info["schema_id"]))
            except ValueError:
                text = None
            if text is None:
                return _error(404, 40403, "Schema not found")
            return web.json_response({"schema": text}, content_type=_JSON)

        @r.get("/config")
        async def config(_: web.Request) -> web.Response:
            return web.json_response({"compatibilityLevel": "BACKWARD"}, content_type=_JSON)

        return r

    @staticmethod
    async def _schema_from(request: web.Request) -> str | web.Response:
        try:
            body = await request.json()
            return _normalise(body["schema"])
        except (ValueError, KeyError, TypeError):
            return _error(422, 42201, 'Invalid schema: the body must be {"schema": "<Avro schema JSON>"}')

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(self.routes())
        return app
