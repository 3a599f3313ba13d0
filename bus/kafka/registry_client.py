"""A client for the Confluent Schema Registry REST API (also Karapace, Apicurio ccompat, Redpanda).

Requests it makes:

- ``POST /subjects/{subject}/versions`` ``{"schema": "..."}`` -> ``{"id": N}``: register (idempotent)
- ``GET /schemas/ids/{id}`` -> ``{"schema": "..."}``: fetch a writer schema by id
- ``POST /subjects/{subject}`` ``{"schema": "..."}`` -> ``{"id": N, "version": V}``: look a schema up
- ``GET /subjects``: list subjects (health check)
- ``POST /compatibility/subjects/{subject}/versions/latest`` ``{"schema": "..."}`` -> ``{"is_compatible": b, "messages": [...]}``
  (``?verbose=true`` asks Confluent for the messages; Karapace and Redpanda send them or an empty list)
- ``PUT /config[/{subject}]`` ``{"compatibility": "BACKWARD"}``: set a compatibility level
- ``DELETE /subjects/{subject}``: soft-delete a subject's versions
"""

from __future__ import annotations

__all__ = ["RegistryClient"]

import functools
import logging
from typing import Any

import httpx

from bus.errors import BusError, PermanentError, RetryableError
from bus.http_clients import async_client

log = logging.getLogger("bus.kafka.registry_client")

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryClient:
    def __init__(
        self, url: str, *, username: str | None = None, password: str | None = None, token: str | None = None, timeout: float = 10.0
    ) -> None:
        auth = httpx.BasicAuth(username, password or "") if username else None
        headers = {"Accept": _CONTENT_TYPE, **({"Authorization": f"Bearer {token}"} if token else {})}
        self._open = functools.partial(async_client, base_url=url.rstrip("/"), auth=auth, timeout=timeout, headers=headers)
        self._http = self._open()

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    async def close(self) -> None:
        """Closes its connections; a later call opens new ones. An adapter that holds one is stopped
        and started again (a supervisor's restart, an operator's pause and resume): it used to be
        left with a closed client, every schema it had not seen yet refused for good."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        if self._http.is_closed:
            self._http = self._open()
        try:
            response = await self._http.request(method, path, json=json, headers={"Content-Type": _CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise RetryableError(f"schema registry {self._http.base_url} unreachable: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise RetryableError(f"schema registry answered {response.status_code} to {method} {path}: {response.text[:200]}")
        if response.status_code >= 400:
            try:
                detail = response.json().get("message", response.text)
            except ValueError:
                detail = response.text
            raise PermanentError(f"schema registry refused {method} {path} ({response.status_code}): {detail}")
        return response.json()

    async def register(self, subject: str, schema: str) -> int:
        body = await self._call("POST", f"/subjects/{subject}/versions", {"schema": schema})
        return int(body["id"])

    async def register_own(self, subject: str, text: str) -> int:
        """Register a hub's own version of a schema, and say when the subject is not as the hub left it.

        When the registry refuses it because the subject was changed behind the hub's back (an
        incompatible version added, its level changed) and the hub's version is still there, the
        hub goes on with that version and a WARNING says what was found; a later version than the
        hub's is also reported. Raises BusError when the subject does not hold the hub's version.
        """
        try:
            schema_id = await self.register(subject, text)
        except PermanentError as refused:
            found = await self.lookup(subject, text)
            if found is None:
                raise BusError(
                    f"the schema registry refuses this hub's schema for subject {subject} and does not hold it: {refused}. "
                    f"Someone changed the subject; restore it (bus schemas) or delete the versions that were added."
                ) from refused
            schema_id, version = found
            log.warning(
                "subject %s was changed outside the hub: the registry refuses to register the hub's schema again (%s). "
                "The hub goes on with its own version %d (id %d); check the subject's later versions",
                subject,
                refused,
                version,
                schema_id,
            )
            return schema_id
        latest_id, latest_version = await self.latest(subject)
        if latest_id != schema_id:
            log.warning(
                "subject %s has a later version %d (id %d) than this hub's schema (id %d): registered by a newer hub, or "
                "changed outside the hub; this hub writes and reads with its own version",
                subject,
                latest_version,
                latest_id,
                schema_id,
            )
        return schema_id

    async def lookup(self, subject: str, schema: str) -> tuple[int, int] | None:
        """(id, version) of ``schema`` under ``subject``, or None if the subject does not hold it."""
        try:
            body = await self._call("POST", f"/subjects/{subject}", {"schema": schema})
        except PermanentError as exc:
            if "(404)" in str(exc):
                return None
            raise
        return int(body["id"]), int(body["version"])

    async def latest(self, subject: str) -> tuple[int, int]:
        """(id, version) of the subject's latest version."""
        body = await self._call("GET", f"/subjects/{subject}/versions/latest")
        return int(body["id"]), int(body["version"])

    async def schema_by_id(self, schema_id: int) -> str:
        body = await self._call("GET", f"/schemas/ids/{schema_id}")
        return str(body["schema"])

    async def subjects(self) -> list[str]:
        return list(await self._call("GET", "/subjects"))

    async def compatibility(self, subject: str, schema: str, version: str = "latest") -> tuple[bool, list[str]]:
        """Whether ``schema`` may follow ``version`` of ``subject`` under its level, and why not.
        A subject the registry does not know yet is compatible (the first version of anything is)."""
        try:
            body = await self._call("POST", f"/compatibility/subjects/{subject}/versions/{version}?verbose=true", {"schema": schema})
        except PermanentError as exc:
            if "(404)" in str(exc):
                return True, []
            raise
        return bool(body["is_compatible"]), [str(m) for m in body.get("messages") or []]

    async def delete_subject(self, subject: str) -> list[int]:
        return [int(v) for v in await self._call("DELETE", f"/subjects/{subject}")]
