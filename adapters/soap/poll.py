"""``soap_poll``: call an operation of a WSDL-described service on an interval and publish each
new record of its result, like ``http_poll`` for REST.

Each call passes the watermark (``since.param``: the largest ``since.field`` seen) with the
fixed ``params``; the records at ``records`` that are newer, or carry the watermark but were not
seen at it, go to Kafka, and once Kafka acknowledged them the position (watermark and the ids
seen at it) is saved in Kafka: a restart resumes there. A fault or an answer that is no
envelope is retried with backoff (Server faults, 5xx, timeouts) or ends the call (Client
faults: the request is wrong) with the reason in the log and in /readyz; the next interval
tries again. Records that cannot become events go to the adapter's inbound dead-letter topic.
"""

from __future__ import annotations

__all__ = ["SoapPollInbound"]

import asyncio
import json
from typing import Any, ClassVar

import aiohttp

from adapters.http.bounded import AnswerTooLarge, answer_budget, read_body_bounded
from adapters.polling import Poller, Position, Walk, record_id
from adapters.soap.config import SoapPollConfig
from adapters.soap.wsdl import Answer, FaultError, Operation, WsdlError
from bus.adapter_api import Context, ExpressionError, KafkaUnavailable, RetryableError, compile_expression, proxy_options


class SoapPollInbound(Poller[SoapPollConfig]):
    Config: ClassVar[type[SoapPollConfig]] = SoapPollConfig
    summary: ClassVar[str] = "Call a WSDL operation on an interval (a watermark parameter); new records published; position kept in Kafka."
    kind: ClassVar[str] = "soap_poll"

    position_filters: ClassVar[frozenset[str]] = frozenset({"params"})

    @classmethod
    def position_of(cls, config: SoapPollConfig) -> dict[str, Any] | None:
        # The fixed parameters are a filter, as an http_poll's query is (the watermark's own is not).
        params = {k: v for k, v in config.params.items() if k != config.since.param}
        return {"operation": config.operation, "params": params, "records": config.records, "since": config.since.field}

    def __init__(self, config: SoapPollConfig, ctx: Context) -> None:
        super().__init__(config, ctx, id_of=config.since.id)
        self._since_of = compile_expression(config.since.field)
        self._operation: Operation | None = None
        self._client: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}  # the environment's proxy for the service (bus.http_clients.proxy_options)
        self._proxy_headers: dict[str, str] = {}
        self._overlap = config.since.overlap.total_seconds()
        self._position = Position(None, set(), None, overlap=self._overlap)
        self._headers = config.call_headers()

    async def open(self) -> None:
        assert self.ctx.checkpoints is not None
        try:
            self._operation = await asyncio.to_thread(self.config.bound)
        except WsdlError as exc:
            raise RetryableError(str(exc)) from exc
        saved = await self.ctx.checkpoints.load(self.config.name)
        if saved is not None:
            self._position = Position.load({**saved, "etag": None}, overlap=self._overlap)
            self.ctx.logger.info("soap_poll %s resumes at %s", self.config.name, self.where())
        else:
            self._position = Position(self.config.since.initial, set(), None, overlap=self._overlap)
        timeout = self.config.timeout_s
        self._proxy, self._proxy_headers = proxy_options(self._operation.address) if self._operation is not None else ({}, {})
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=answer_budget(timeout), connect=timeout, sock_read=timeout)
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def where(self) -> str:
        return f"{self.config.since.param}={self._position.since!r}"

    async def poll(self) -> tuple[int, int]:
        values = dict(self.config.params)
        if self._position.since not in (None, ""):
            values[self.config.since.param] = self._position.asked()
        result = await self._call(values)
        self.serving()
        records: Any = result
        for name in self.config.records.split("."):
            records = records.get(name) if isinstance(records, dict) else None
        if records is None:
            records = []
        if not isinstance(records, list):
            records = [records]  # one record: zeep gives a repeated element that occurred once as a list, but a wrapper may not
        position = self._position.copy()
        walk = Walk(position)  # every record since the watermark, in whatever order the service lists them
        documents: list[tuple[Any, bytes, str]] = []
        for record in records:
            raw = json.dumps(record, default=str).encode()
            try:
                value = self._since_of(record)
            except ExpressionError:
                value = None
            if value is None:
                await self.sink.reject(raw, f"record has no watermark value at {self.config.since.field!r}")
                continue
            digest = record_id(record)
            if walk.take(value, self.ident(record, digest)):
                documents.append((record, raw, f"{self.config.name}:{digest}"))
        taken = await self.publish(documents)
        found = position.dump()
        self.notice(self.crowded(position))
        if found != self._position.dump():
            assert self.ctx.checkpoints is not None
            found.pop("etag")
            try:
                await self.ctx.checkpoints.save(self.config.name, found)
            except KafkaUnavailable as exc:
                raise RetryableError(str(exc)) from exc
            self._position = position
        return taken, 1

    async def _call(self, values: dict[str, Any]) -> Any:
        operation, client = self._operation, self._client
        assert operation is not None and client is not None
        try:
            body, headers = operation.envelope(values)
        except ValueError as exc:
            raise RetryableError(str(exc)) from exc  # the config's parameters do not fit: shown until fixed
        headers = {**self._headers, **headers, **self._proxy_headers}
        delay = 1.0
        for attempt in range(self.config.retries + 1):
            try:
                # Redirects are not followed: the call (its headers, and a WS-Security password in
                # the envelope a 307 sends again) would go wherever the answer points.
                async with client.post(operation.address, data=body, headers=headers, allow_redirects=False, **self._proxy) as response:
                    raw = await read_body_bounded(response, limit=self.config.max_answer_bytes)
                    status, content_type = response.status, response.headers.get("Content-Type", "")
                    if 300 <= status < 400:
                        raise RetryableError(
                            f"{operation.name} at {operation.address} answered {status} to {response.headers.get('Location', '')[:300]}: "
                            "redirects are not followed (the call's credentials would go with it); set url to the service's address"
                        )
            except AnswerTooLarge as exc:  # as large at the next try: say so until the service or the config changes
                raise RetryableError(f"{operation.name}: {exc} (max_answer_bytes)") from None
            except TimeoutError:
                problem = f"{operation.name} timed out after {self.config.timeout_s:g}s"
            except (aiohttp.ClientError, OSError) as exc:
                problem = f"{operation.name} at {operation.address} unreachable: {exc!r}"
            else:
                try:
                    result = operation.reply(Answer(status, raw, {"Content-Type": content_type}))
                except FaultError as exc:
                    if exc.fault.from_the_request or exc.fault.about_credentials:
                        raise RetryableError(f"{operation.name}: {exc.fault}") from exc
                    problem = f"{operation.name}: {exc.fault}"
                except ValueError:
                    problem = f"{operation.name} answered {status}: {raw[:200].decode('utf-8', errors='replace')}"
                    if status < 500 and status not in (408, 429):
                        raise RetryableError(problem) from None
                else:
                    if status < 300:
                        return result
                    problem = f"{operation.name} answered {status}"
            if attempt == self.config.retries:
                raise RetryableError(f"{problem} (after {attempt + 1} attempts)")
            self.ctx.logger.info("soap_poll %s: %s; waiting %.1fs", self.config.name, problem, delay)
            await self.sleep(delay)
            if self.stopping:
                raise RetryableError("stopping")
            delay = min(delay * 2, 60.0)
        raise AssertionError("unreachable")
