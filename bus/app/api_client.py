"""The CLI's side of the management API (``ops.api``): ``bus status``, and ``bus dlq`` and
``bus reconcile`` with ``--hub URL``, which go through a running hub instead of straight to Kafka
(no config file needed, no line to Kafka: what an operator has outside the cluster).

The token comes from ``--token-file`` or ``$BUS_OPS_TOKEN``. A refusal comes back as the API's
problem detail (``ApiRefused``), said as the API said it.
"""

from __future__ import annotations

__all__ = ["ApiClient", "ApiRefused", "token_from"]

import os
from pathlib import Path
from typing import Any

import httpx

from bus.config.models import MAX_TOKEN_CHARS, plain_token
from bus.documents import FileTooLarge, read_at_most
from bus.errors import BusError
from bus.http_clients import client


class ApiRefused(BusError):
    """The hub answered with an error, or did not answer."""


def token_from(token_file: Path | None) -> str:
    """The API token, from ``token_file`` or ``$BUS_OPS_TOKEN``; ApiRefused saying what is wrong
    with it (each was a traceback: a folder, a binary file, a line break inside)."""
    where = f"--token-file {token_file}" if token_file is not None else "BUS_OPS_TOKEN"
    not_a_token = f"{where} holds something other than a token: one line of ASCII without spaces, at most {MAX_TOKEN_CHARS}"
    if token_file is not None:
        try:  # the token and a line end
            token = read_at_most(token_file, MAX_TOKEN_CHARS + 2, where).decode("ascii").strip()
        except FileTooLarge:
            raise ApiRefused(not_a_token) from None
        except OSError as exc:
            raise ApiRefused(f"cannot read {where}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ApiRefused(f"{where} holds something other than a token (not ASCII text)") from None
    else:
        token = os.environ.get("BUS_OPS_TOKEN", "").strip()
    if not token:
        raise ApiRefused("the management API needs a token: set BUS_OPS_TOKEN or pass --token-file (ops.tokens in the config)")
    if not plain_token(token):
        raise ApiRefused(not_a_token)
    return token


class ApiClient:
    def __init__(self, hub: str, token: str, *, timeout: float = 120.0) -> None:
        self.base = f"{hub.rstrip('/')}/api/v1"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        url = f"{self.base}{path}"
        try:
            with client(timeout=self._timeout) as http:  # a hub on this machine is reached directly, whatever HTTP_PROXY says
                answer = http.request(method, url, params=params, json=body, headers=self._headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ApiRefused(f"{url}: no answer ({exc.__class__.__name__}: {exc}); is the hub running there?") from None
        try:
            found = answer.json()
        except ValueError:  # another server on that port (a proxy's HTML page): a JSONDecodeError traceback
            found = None
        if answer.status_code >= 400:
            detail = found.get("detail") if isinstance(found, dict) else None
            raise ApiRefused(f"{method} {url}: {answer.status_code} {detail if isinstance(detail, str) else answer.text[:300]}")
        if found is None:
            kind = answer.headers.get("content-type", "no content type")
            raise ApiRefused(f"{method} {url}: answered {answer.status_code} with {kind}, not JSON: is that a hub's ops port?")
        return found

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body=body)

    def dead_letters(self, *, ids: list[str], all_: bool, **filters: str | None) -> list[dict[str, Any]]:
        """Every dead letter matching the filters (subscriber, since, until, error_class), page by
        page; one query per id (the API filters by one)."""
        found: list[dict[str, Any]] = []
        wanted: list[str | None] = [*ids] or [None]
        for event_id in wanted:
            offset = 0
            while True:
                page = self.get(
                    "/dead-letters",
                    id=event_id,
                    all="true" if all_ else None,
                    **filters,
                    offset=offset,
                    limit=1000,
                )
                found += page["items"]
                offset += len(page["items"])
                if not page["items"] or offset >= page["total"]:
                    break
        return found
