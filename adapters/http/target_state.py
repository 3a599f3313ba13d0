"""What ``bus migrate`` reads back from and puts back into an ``http`` (or ``webhook``) target.

An HTTP API has no generic "read by key", so the migration names one: ``targets.NAME.read``, a
``${}`` template over the delivered event (``https://crm.example.com/api/customers/${id}``). A GET
there answers the record as JSON (404 or 410: there is none). Without it the target is declared
unverifiable and a run into it cannot be rolled back.

Compared: the fields of the body a delivery sends, against the same fields of the document read
(fields the service adds, such as ``created_at``, are not differences). Rollback: a record the
run created is deleted (DELETE to ``targets.NAME.delete``, default the read URL; a 404 is fine),
a record it replaced is sent back as it was read before the run (``restore_method``, PUT by
default, to the read URL).
"""

from __future__ import annotations

__all__ = ["HttpTargetState"]

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bus.adapter_api import Event, PermanentError, RetryableError, TargetOptions, compile_template, parse_json

if TYPE_CHECKING:
    from adapters.http.outbound import HttpOutbound

CONCURRENT_CALLS = 16


class HttpTargetState:
    def __init__(self, outbound: HttpOutbound, options: TargetOptions, *, escape: Callable[[str], str]) -> None:
        self._out = outbound
        self._options = options
        self.verifiable = options.read is not None
        self.rollback = "" if options.read is not None else "no read URL (targets.NAME.read): what the target held before is unknown"
        self._read = compile_template(options.read, escape=escape) if options.read else None
        self._delete = compile_template(options.delete, escape=escape) if options.delete else self._read
        self._slots = asyncio.Semaphore(CONCURRENT_CALLS)

    def record(self, event: Event) -> tuple[list[str], dict[str, Any] | None]:
        expected = self._out.expected(event)
        if self._read is None or self._delete is None:
            return [event.key or event.id], expected
        meta = event.meta()
        return [self._read(event.data, meta), self._delete(event.data, meta)], expected

    async def _call(self, method: str, url: str, document: Any = None) -> tuple[int, str]:
        async with self._slots:
            status, text = await self._out.request(method, url, document)
        if not 200 <= status < 300 and self._out.retryable(status):  # the outbound's own classification
            raise RetryableError(f"{method} {url} answered {status}: {text[:200]}")
        return status, text

    async def _read_one(self, address: list[str]) -> dict[str, Any] | None:
        if len(address) < 2:
            raise PermanentError("this target has no read URL (targets.NAME.read)")
        status, text = await self._call("GET", address[0])
        if status in (404, 410):
            return None
        if not 200 <= status < 300:
            raise PermanentError(f"GET {address[0]} answered {status}: {text[:200]}")
        try:
            document = parse_json(text, repeated_keys="last")
        except ValueError:
            raise PermanentError(f"GET {address[0]} answered something that is not JSON: {text[:200]!r}") from None
        return document if isinstance(document, dict) else {"(body)": document}

    async def read(self, addresses: list[Any]) -> list[dict[str, Any] | None]:
        return list(await asyncio.gather(*(self._read_one(a) for a in addresses)))

    async def _restore_one(self, address: list[str], before: dict[str, Any] | None) -> None:
        if len(address) < 2:
            raise PermanentError("this target has no read URL (targets.NAME.read): nothing to restore with")
        if before is None:
            status, text = await self._call("DELETE", address[1])
            ok = 200 <= status < 300 or status in (404, 410)
        else:
            status, text = await self._call(self._options.restore_method, address[0], before)
            ok = 200 <= status < 300
        if not ok:
            raise PermanentError(f"restoring {address[0]} answered {status}: {text[:200]}")

    async def restore(self, items: list[tuple[Any, dict[str, Any] | None]]) -> None:
        await asyncio.gather(*(self._restore_one(address, before) for address, before in items))
