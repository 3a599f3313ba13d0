"""The authorization-code grant with PKCE (RFC 6749 4.1, RFC 7636): the consent URL, the code
exchange, and the refresh (RFC 6749 6), against a connection's provider."""

from __future__ import annotations

__all__ = ["ConsentLost", "Grant", "TokenEndpointError", "Tokens", "pkce_pair"]

import base64
import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx

from bus.config.connections import ConnectionConfig
from bus.credentials.expiry import lifetime as token_lifetime
from bus.documents import parse_json


class TokenEndpointError(Exception):
    """The token endpoint could not be reached or answered something else than tokens: try later."""


class ConsentLost(Exception):
    """The provider refused the refresh token (invalid_grant): the consent was revoked, expired, or
    the token was rotated and the new one lost. Only a new `bus auth login` brings it back."""


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: float  # epoch seconds
    generation: int  # 1 at login, one more at every refresh
    obtained_at: float
    scope: str = ""

    def dump(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, data: dict[str, Any]) -> Tokens:
        return cls(
            **{k: data[k] for k in ("access_token", "refresh_token", "expires_at", "generation", "obtained_at")},
            scope=data.get("scope", ""),
        )


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Grant:
    """One connection's provider: consent URL, code exchange, refresh."""

    def __init__(self, config: ConnectionConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._client = client

    def consent_url(self, state: str, challenge: str) -> str:
        c = self.config
        query = {
            "response_type": "code",
            "client_id": c.client_id,
            "redirect_uri": c.redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **({"scope": " ".join(c.scopes)} if c.scopes else {}),
            **c.extra_params,
        }
        return f"{c.authorize_url}{'&' if '?' in c.authorize_url else '?'}{urlencode(query)}"

    async def exchange(self, code: str, verifier: str) -> Tokens:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.config.redirect_uri, "code_verifier": verifier}
        return await self._tokens(form, generation=1, previous_refresh="")

    async def refresh(self, current: Tokens) -> Tokens:
        """New tokens for ``current``'s refresh token; a provider that rotates sends a new refresh
        token too (kept), one that does not leaves the old one valid (kept as it was)."""
        form = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
        return await self._tokens(form, generation=current.generation + 1, previous_refresh=current.refresh_token)

    async def _tokens(self, form: dict[str, str], *, generation: int, previous_refresh: str) -> Tokens:
        c = self.config
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        secret = c.client_secret.get_secret_value() if c.client_secret else None
        if secret is not None and c.client_auth == "basic":
            pair = f"{quote_plus(c.client_id)}:{quote_plus(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form = {**form, "client_id": c.client_id, **({"client_secret": secret} if secret is not None else {})}
        try:
            answer = await self._client.post(c.token_url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise TokenEndpointError(f"connection {c.name}: token endpoint {c.token_url} unreachable: {exc!r}") from exc
        try:
            body = parse_json(answer.content, repeated_keys="last")  # an answer nested 100,000 deep is no answer, not a RecursionError
        except ValueError:
            body = {}
        if answer.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = str(body.get("error", "")) if isinstance(body, dict) else ""
            said = f"{answer.status_code} {error} {body.get('error_description', '') if isinstance(body, dict) else ''}".strip()
            if error == "invalid_grant":
                raise ConsentLost(f"connection {c.name}: the provider refused the grant ({said}): run `bus auth login {c.name}`")
            raise TokenEndpointError(f"connection {c.name}: token endpoint answered {said or answer.text[:200]}")
        now = time.time()
        return Tokens(
            access_token=str(body["access_token"]),
            refresh_token=str(body.get("refresh_token") or previous_refresh),
            expires_at=now + token_lifetime(body.get("expires_in")),
            generation=generation,
            obtained_at=now,
            scope=str(body.get("scope", "")),
        )
