"""The embedded schema registry: the Confluent REST API, served by the hub, stored in Kafka.

Every registration is one record on a compacted topic (key ``subject/version``), produced with
acks=all before the answer; on start the whole topic is read back, so ids and versions survive
a restart of the hub. Schema ids are derived from the schema text (SHA-256, 31 bits, probing on
the rare collision), so two hub processes that register the same schema agree on its id without
talking to each other, and ids stay the same even if the topic is lost.

Readers take the last record per key themselves: the embedded broker does not compact
(docs/embedded-broker.md), and doing so is also correct on Kafka.

Served subset of the Confluent API:
``GET /subjects``, ``GET /subjects/{s}/versions``, ``GET /subjects/{s}/versions/{v|latest}``,
``POST /subjects/{s}/versions`` (register; 409 with the reasons when incompatible, 422 when not a
valid Avro schema), ``POST /subjects/{s}`` (lookup), ``GET /schemas/ids/{id}``,
``DELETE /subjects/{s}`` and ``DELETE /subjects/{s}/versions/{v}`` (soft deletes: the versions
leave the listings and the compatibility checks; ids keep resolving, as Confluent does),
``POST /compatibility/subjects/{s}/versions[/{v|latest}]`` (``is_compatible`` and ``messages``),
``GET/PUT /config`` and ``GET/PUT/DELETE /config/{s}`` (compatibility level: BACKWARD by default;
schemas/compatibility.py checks by the Avro resolution rules). Config changes and deletes are
records on the same topic (keys ``_config/<subject>``, and the version records with ``deleted``).
"""

from __future__ import annotations

__all__ = ["EmbeddedRegistry"]

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from fastavro import parse_schema

from bus.config.models import KafkaConfig
from bus.documents import parse_json
from bus.errors import RetryableError
from bus.kafka.clients import make_producer
from bus.kafka.reader import replay
from schemas.compatibility import MODES, check

log = logging.getLogger("schemas.embedded_registry")
_JSON = "application/vnd.schemaregistry.v1+json"


DEFAULT_LEVEL = "BACKWARD"


class Incompatible(Exception):
    """A schema the subject's compatibility level refuses; ``problems`` says why."""

    def __init__(self, subject: str, level: str, problems: list[str]) -> None:
        super().__init__(f"schema for {subject} is incompatible ({level}): " + "; ".join(problems))
        self.subject, self.level, self.problems = subject, level, problems


class InvalidSchema(ValueError):
    """Not an Avro schema fastavro can parse."""


@dataclass(frozen=True, slots=True)
class _Version:
    subject: str
    version: int
    id: int
    schema: str
    deleted: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "version": self.version, "id": self.id, "schema": self.schema}


def _normalise(schema: str) -> str:
    """Same schema, same text: parse and re-dump compactly so whitespace never changes an id."""
    return json.dumps(parse_json(schema), separators=(",", ":"))  # bounded in depth: a RecursionError was a 500


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"error_code": code, "message": message}, status=status, content_type=_JSON)


class EmbeddedRegistry:
    def __init__(self, kafka: KafkaConfig, bootstrap: str, topic: str) -> None:
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._topic = topic
        self._producer = make_producer(kafka, bootstrap)
        self._subjects: dict[str, list[_Version]] = {}  # every version, soft-deleted ones too
        self._by_id: dict[int, str] = {}
        self._levels: dict[str, str] = {}  # subject -> compatibility level; "" is the global one
        self._refreshed_at = float("-inf")
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
        # broker's ListOffsets answers too low, docs/embedded-broker.md; the fetch's watermark is right).
        await replay(self._kafka, self._bootstrap, [TopicPartition(self._topic, 0)], self._apply_records, timeout_s=60)

    def _apply_records(self, _tp: TopicPartition, records: list[Any]) -> None:
        for record in records:
            key = (record.key or b"").decode(errors="replace")
            try:
                if key.startswith("_config/"):
                    subject = key.removeprefix("_config/")
                    if record.value is None:
                        self._levels.pop(subject, None)
                    else:
                        self._levels[subject] = str(json.loads(record.value)["compatibilityLevel"])
                elif record.value is not None:
                    self._apply(_Version(**json.loads(record.value)))
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                # Not a record a registry wrote (by hand, another program): skipped, said. Raised, the
                # registry, and with it every hub process, never started.
                log.warning("schemas record %s/%d/%d cannot be read (%r); skipped", record.topic, record.partition, record.offset, exc)

    async def _caught_up(self) -> bool:
        """Read what other processes added to the topic; at most once a second (a flood of unknown
        ids must not become a flood of topic reads). True if it read."""
        now = time.monotonic()
        if now - self._refreshed_at < 1.0:
            return False
        self._refreshed_at = now
        try:
            await self._load()
        except KafkaError as exc:
            log.warning("embedded schema registry: cannot re-read %s: %s", self._topic, exc)
            return False
        return True

    # -- reads -----------------------------------------------------------------------------
    def live(self, subject: str) -> list[_Version]:
        return [v for v in self._subjects.get(subject, []) if not v.deleted]

    def level(self, subject: str) -> str:
        return self._levels.get(subject) or self._levels.get("") or DEFAULT_LEVEL

    def compatibility(self, subject: str, schema: str, version: str | None = None) -> list[str]:
        """Problems of ``schema`` against the subject's versions by its level: against one version
        (``version``: a number or latest) or, without it, as a registration would be checked."""
        versions = self.live(subject)
        level = self.level(subject)
        if version is not None:
            wanted = versions[-1:] if version in ("latest", "-1") else [v for v in versions if str(v.version) == version]
            if not wanted:
                raise KeyError(version)
            return check(level.removesuffix("_TRANSITIVE"), schema, [wanted[0].schema])
        return check(level, schema, [v.schema for v in versions])

    # -- writes ----------------------------------------------------------------------------
    async def _store(self, key: str, value: bytes | None) -> None:
        try:
            await self._producer.send_and_wait(self._topic, value, key=key.encode(), partition=0)
        except KafkaError as exc:
            raise RetryableError(f"cannot store {key} in {self._topic}: {exc}") from exc

    async def set_level(self, subject: str, level: str | None) -> None:
        """``subject`` "" is the global level; ``level`` None removes a subject's own level."""
        if level is not None and level.upper() not in MODES:
            raise ValueError(f"unknown compatibility level {level!r}; use one of {', '.join(MODES)}")
        value = None if level is None else json.dumps({"compatibilityLevel": level.upper()}).encode()
        await self._store(f"_config/{subject}", value)
        if level is None:
            self._levels.pop(subject, None)
        else:
            self._levels[subject] = level.upper()

    async def delete(self, subject: str, version: str | None = None) -> list[int]:
        """Soft-delete one version (a number or latest) or every version; returns their numbers."""
        versions = self.live(subject)
        if version is not None:
            versions = versions[-1:] if version in ("latest", "-1") else [v for v in versions if str(v.version) == version]
        gone = []
        for v in versions:
            deleted = _Version(v.subject, v.version, v.id, v.schema, deleted=True)
            await self._store(f"{subject}/{v.version}", json.dumps({**deleted.as_json(), "deleted": True}).encode())
            self._apply(deleted)
            gone.append(v.version)
        return gone

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
        """Raises InvalidSchema, Incompatible (the subject's level refuses it) or RetryableError."""
        schema = _normalise(schema)
        try:
            parse_schema(json.loads(schema))
        except Exception as exc:  # fastavro raises several kinds for a schema it cannot parse
            raise InvalidSchema(f"not a valid Avro schema: {exc}") from exc
        live = self.live(subject)
        for existing in live:
            if existing.schema == schema:
                return existing.id
        problems = self.compatibility(subject, schema)
        if problems:
            raise Incompatible(subject, self.level(subject), problems)
        every = self._subjects.get(subject, [])
        version = _Version(subject, (every[-1].version if every else 0) + 1, self._id_for(schema), schema)
        await self._store(f"{subject}/{version.version}", json.dumps(version.as_json()).encode())
        self._apply(version)
        log.info("registered %s version %d as id %d", subject, version.version, version.id)
        return version.id

    # -- HTTP ------------------------------------------------------------------------------
    def routes(self) -> web.RouteTableDef:
        r = web.RouteTableDef()

        @r.get("/subjects")
        async def subjects(_: web.Request) -> web.Response:
            return web.json_response(sorted(s for s in self._subjects if self.live(s)), content_type=_JSON)

        @r.get("/subjects/{subject}/versions")
        async def versions(request: web.Request) -> web.Response:
            found = self.live(request.match_info["subject"])
            if not found:
                return _error(404, 40401, "Subject not found")
            return web.json_response([v.version for v in found], content_type=_JSON)

        @r.get("/subjects/{subject}/versions/{version}")
        async def version(request: web.Request) -> web.Response:
            found = self.live(request.match_info["subject"])
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
            subject = request.match_info["subject"]
            try:
                schema_id = await self.register(subject, schema)
            except InvalidSchema as exc:
                return _error(422, 42201, str(exc))
            except Incompatible as exc:
                details = "; ".join(exc.problems)
                message = f'Schema being registered is incompatible with an earlier schema for subject "{subject}" ({exc.level}): {details}'
                return _error(409, 409, message)
            except RetryableError as exc:
                return _error(503, 50003, str(exc))
            return web.json_response({"id": schema_id}, content_type=_JSON)

        @r.delete("/subjects/{subject}")
        async def delete_subject(request: web.Request) -> web.Response:
            return await self._delete(request.match_info["subject"], None)

        @r.delete("/subjects/{subject}/versions/{version}")
        async def delete_version(request: web.Request) -> web.Response:
            return await self._delete(request.match_info["subject"], request.match_info["version"])

        @r.post("/compatibility/subjects/{subject}/versions")
        async def compatible_with_all(request: web.Request) -> web.Response:
            return await self._compatibility(request, None)

        @r.post("/compatibility/subjects/{subject}/versions/{version}")
        async def compatible_with(request: web.Request) -> web.Response:
            return await self._compatibility(request, request.match_info["version"])

        @r.post("/subjects/{subject}")
        async def lookup(request: web.Request) -> web.Response:
            schema = await self._schema_from(request)
            if isinstance(schema, web.Response):
                return schema
            for v in self.live(request.match_info["subject"]):
                if v.schema == schema:
                    return web.json_response(v.as_json(), content_type=_JSON)
            return _error(404, 40403, "Schema not found")

        @r.get("/schemas/ids/{schema_id}")
        async def by_id(request: web.Request) -> web.Response:
            try:
                wanted = int(request.match_info["schema_id"])
            except ValueError:
                return _error(404, 40403, "Schema not found")
            text = self._by_id.get(wanted)
            if text is None and await self._caught_up():
                text = self._by_id.get(wanted)  # registered by another hub process since this one started
            if text is None:
                return _error(404, 40403, "Schema not found")
            return web.json_response({"schema": text}, content_type=_JSON)

        @r.get("/config")
        async def config(_: web.Request) -> web.Response:
            return web.json_response({"compatibilityLevel": self.level("")}, content_type=_JSON)

        @r.put("/config")
        async def set_config(request: web.Request) -> web.Response:
            return await self._set_level(request, "")

        @r.get("/config/{subject}")
        async def subject_config(request: web.Request) -> web.Response:
            subject = request.match_info["subject"]
            if subject not in self._levels and request.query.get("defaultToGlobal", "false") != "true":
                return _error(404, 40408, f"Subject {subject} does not have subject-level compatibility configured")
            return web.json_response({"compatibilityLevel": self.level(subject)}, content_type=_JSON)

        @r.put("/config/{subject}")
        async def set_subject_config(request: web.Request) -> web.Response:
            return await self._set_level(request, request.match_info["subject"])

        @r.delete("/config/{subject}")
        async def delete_subject_config(request: web.Request) -> web.Response:
            subject = request.match_info["subject"]
            previous = self.level(subject)
            try:
                await self.set_level(subject, None)
            except RetryableError as exc:
                return _error(503, 50003, str(exc))
            return web.json_response({"compatibilityLevel": previous}, content_type=_JSON)

        return r

    async def _delete(self, subject: str, version: str | None) -> web.Response:
        if not self.live(subject):
            return _error(404, 40401, "Subject not found")
        try:
            gone = await self.delete(subject, version)
        except RetryableError as exc:
            return _error(503, 50003, str(exc))
        if not gone:
            return _error(404, 40402, "Version not found")
        return web.json_response(gone if version is None else gone[0], content_type=_JSON)

    async def _compatibility(self, request: web.Request, version: str | None) -> web.Response:
        schema = await self._schema_from(request)
        if isinstance(schema, web.Response):
            return schema
        subject = request.match_info["subject"]
        if not self.live(subject) and version is not None:
            return _error(404, 40401, "Subject not found")
        try:
            problems = self.compatibility(subject, schema, version)
        except KeyError:
            return _error(404, 40402, "Version not found")
        return web.json_response({"is_compatible": not problems, "messages": problems}, content_type=_JSON)

    async def _set_level(self, request: web.Request, subject: str) -> web.Response:
        try:
            body = parse_json(await request.read())  # bounded in depth: a RecursionError was a 500
            level = str(body["compatibility"])
            await self.set_level(subject, level)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(
                422, 42203, f'Invalid compatibility level: the body must be {{"compatibility": "<one of {", ".join(MODES)}>"}} ({exc})'
            )
        except RetryableError as exc:
            return _error(503, 50003, str(exc))
        return web.json_response({"compatibility": level.upper()}, content_type=_JSON)

    @staticmethod
    async def _schema_from(request: web.Request) -> str | web.Response:
        try:
            body = parse_json(await request.read())
            return _normalise(body["schema"])
        except ValueError as exc:  # not JSON, nested too deep, a key twice: said, not taken for a wrong shape
            return _error(422, 42201, f'Invalid schema: {exc} (the body must be {{"schema": "<Avro schema JSON>"}})')
        except (KeyError, TypeError):
            return _error(422, 42201, 'Invalid schema: the body must be {"schema": "<Avro schema JSON>"}')

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(self.routes())
        return app
