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
import contextlib
import json
from collections.abc import Awaitable
from typing import Any, ClassVar

import aiohttp

from adapters.http.poll import Position, record_id
from adapters.soap.config import SoapPollConfig
from adapters.soap.wsdl import Answer, FaultError, Operation, WsdlError
from bus.adapter_api import Context, ExpressionError, Health, Inbound, Intake, KafkaUnavailable, RetryableError, compile_expression


class SoapPollInbound(Inbound[SoapPollConfig]):
    Config: ClassVar[type[SoapPollConfig]] = SoapPollConfig
    summary: ClassVar[str] = "Call a WSDL operation on an interval (a watermark parameter); new records published; position kept in Kafka."

    def __init__(self, config: SoapPollConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._since_of = compile_expression(config.since.field)
        self._id_of = compile_expression(config.since.id) if config.since.id else None
        self._operation: Operation | None = None
        self._client: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._position = Position(None, set(), None)
        self._problem = "not started"
        basic = config.basic_auth
        self._auth = aiohttp.BasicAuth(basic.username, basic.password.get_secret_value()) if basic else None
        self.polls = 0

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.ctx.checkpoints is None:
            raise RuntimeError(f"soap_poll {self.config.name} needs the hub's checkpoint store")
        try:
            self._operation = await asyncio.to_thread(self.config.bound)
        except WsdlError as exc:
            raise RetryableError(str(exc)) from exc
        saved = await self.ctx.checkpoints.load(self.config.name)
        if saved is not None:
            self._position = Position(saved.get("since"), set(saved.get("seen") or ()), None)
            self.ctx.logger.info("soap_poll %s resumes at %s=%r", self.config.name, self.config.since.param, self._position.since)
        else:
            self._position = Position(self.config.since.initial, set(), None)
        timeout = self.config.timeout_s
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout))
        self._stopping.clear()
        self._task = self.ctx.spawn(self._run(), name=f"soap-poll:{self.config.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def progress(self) -> dict[str, int | str]:
        return {"polls": self.polls}

    async def health(self) -> Health:
        return Health(not self._problem, self._problem)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                taken = await self._poll()
                self._problem = ""
                self.polls += 1
                if taken:
                    self.ctx.logger.info(
                        "soap_poll %s: %d new record(s); now at %s=%r",
                        self.config.name,
                        taken,
                        self.config.since.param,
                        self._position.since,
                    )
            except RetryableError as exc:
                if self._stopping.is_set():
                    break
                self._problem = str(exc)
                self.ctx.logger.warning("soap_poll %s: call given up until the next interval: %s", self.config.name, exc)
            except Exception as exc:  # a bug must not end polling silently; it shows in /readyz
                self._problem = f"unexpected error: {exc!r}"
                self.ctx.logger.exception("soap_poll %s: unexpected error", self.config.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.config.interval.total_seconds())

    async def _poll(self) -> int:
        values = dict(self.config.params)
        if self._position.since not in (None, ""):
            values[self.config.since.param] = self._position.since
        result = await self._call(values)
        records: Any = result
        for name in self.config.records.split("."):
            records = records.get(name) if isinstance(records, dict) else None
        if records is None:
            records = []
        if not isinstance(records, list):
            records = [records]  # one record: zeep gives a repeated element that occurred once as a list, but a wrapper may not
        position = Position(self._position.since, set(self._position.seen), None)
        acks: list[Awaitable[None]] = []
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
            if not position.take(value, self._ident(record, digest)):
                continue
            try:
                acks.append(await self._intake.submit_document(record, raw=raw, event_id=f"{self.config.name}:{digest}"))
            except KafkaUnavailable as exc:
                raise RetryableError(f"Kafka did not take the records: {exc}") from exc
        for ack in acks:
            try:
                await ack
            except KafkaUnavailable as exc:
                raise RetryableError(f"Kafka did not acknowledge the records: {exc}") from exc
        if position.dump() != self._position.dump():
            assert self.ctx.checkpoints is not None
            try:
                await self.ctx.checkpoints.save(self.config.name, {"since": position.since, "seen": sorted(position.seen)})
            except KafkaUnavailable as exc:
                raise RetryableError(str(exc)) from exc
            self._position = position
        return len(acks)

    def _ident(self, record: Any, digest: str) -> str:
        if self._id_of is not None:
            with contextlib.suppress(ExpressionError):
                value = self._id_of(record)
                if value is not None:
                    return str(value)
        return digest

    async def _call(self, values: dict[str, Any]) -> Any:
        operation, client = self._operation, self._client
        assert operation is not None and client is not None
        try:
            body, headers = operation.envelope(values)
        except ValueError as exc:
            raise RetryableError(str(exc)) from exc  # the config's parameters do not fit: shown until fixed
        headers = {**{k: v.get_secret_value() for k, v in self.config.headers.items()}, **headers}
        delay = 1.0
        for attempt in range(self.config.retries + 1):
            try:
                async with client.post(operation.address, data=body, headers=headers, auth=self._auth) as response:
                    raw = await response.read()
                    status, content_type = response.status, response.headers.get("Content-Type", "")
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                raise RetryableError("stopping")
            delay = min(delay * 2, 60.0)
        raise AssertionError("unreachable")
