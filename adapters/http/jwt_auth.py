"""JWT bearer tokens for ``http_webhook``: a shared secret (HS256...) or the sender's JWKS (RS256,
ES256, PS256, EdDSA), verified with PyJWT.

Keys from a JWKS URL are fetched once and kept by ``kid``; a token with a ``kid`` not yet known
refetches the set (the sender rotated its keys), at most once every ``jwks_refresh_s``, so a flood
of forged kids cannot turn the hub into a load on the key server. If the set cannot be fetched the
request is answered 503 (send again later), never 401: the sender did nothing wrong.
"""

from __future__ import annotations

__all__ = ["JwtAuth", "JwtVerifier", "KeysUnavailable"]

import time
from typing import Any, Literal

import httpx
import jwt
from pydantic import Field, SecretStr, model_validator

from bus.adapter_api import ConfigModel, http_client, parse_json

_ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class JwtAuth(ConfigModel):
    """A JWT in a bearer header, verified with a shared secret or the keys of a JWKS URL."""

    type: Literal["jwt"] = "jwt"
    header: str = Field(default="Authorization", description="Header that carries `Bearer <token>`.")
    secret: SecretStr | None = Field(default=None, description="Shared secret for HS256/384/512 (use ${ENV}).")
    jwks_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The sender's JWKS (public keys).",
        examples=["https://login.example.com/.well-known/jwks.json"],
    )
    algorithms: list[str] | None = Field(
        default=None, description="Accepted algorithms; default HS256 with a secret, RS/PS/ES/EdDSA with a JWKS. `none` never."
    )
    issuer: str | None = Field(default=None, description="Required `iss`.")
    audience: str | None = Field(default=None, description="Required `aud` (one of the token's audiences).")
    require: list[str] = Field(default_factory=lambda: ["exp"], description="Claims that must be present.")
    leeway_s: float = Field(default=30.0, ge=0, description="Clock skew allowed on exp, nbf and iat.")
    jwks_refresh_s: float = Field(default=60.0, ge=0, description="Least time between two fetches of the JWKS.")

    @model_validator(mode="after")
    def _check(self) -> JwtAuth:
        if (self.secret is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of `secret` (HS*) or `jwks_url` (public keys)")
        if self.algorithms and any(a.lower() == "none" for a in self.algorithms):
            raise ValueError("the `none` algorithm would accept unsigned tokens")
        return self


class KeysUnavailable(Exception):
    """The JWKS could not be fetched: answer 503, the sender should try again."""


class JwtVerifier:
    def __init__(self, config: JwtAuth) -> None:
        self.config = config
        self._algorithms = config.algorithms or (["HS256"] if config.secret else _ASYMMETRIC)
        self._keys: dict[str | None, Any] = {}
        self._fetched_at = float("-inf")
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def verify(self, header_value: str) -> tuple[dict[str, Any] | None, str]:
        """(claims, "") when valid, (None, reason) when not. Raises KeysUnavailable."""
        scheme, _, token = header_value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None, f"expected `Bearer <token>` in {self.config.header}"
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:  # DecodeError, or a header PyJWT refuses (a kid that is not text)
            return None, f"malformed token ({exc})"  # not "token: ...", which logs and answers mask as a secret
        if header.get("alg") not in self._algorithms:
            return None, f"algorithm {header.get('alg')!r} is not accepted"
        key = self.config.secret.get_secret_value() if self.config.secret else await self._key(header.get("kid"))
        if key is None:
            return None, f"no key with kid {header.get('kid')!r} in the JWKS"
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": self.config.require, "verify_aud": self.config.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            return None, "token expired"
        except jwt.InvalidAudienceError:
            return None, "token is for another audience"
        except jwt.InvalidIssuerError:
            return None, "token is from another issuer"
        except jwt.InvalidSignatureError:
            return None, "token signature does not verify"
        except jwt.MissingRequiredClaimError as exc:
            return None, f"token lacks the {exc.claim!r} claim"
        except jwt.InvalidTokenError as exc:
            return None, f"invalid token ({exc})"
        return claims, ""

    async def _key(self, kid: str | None) -> Any:
        if kid not in self._keys and time.monotonic() - self._fetched_at >= self.config.jwks_refresh_s:
            await self._fetch()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))  # a set of one key; tokens without a kid use it
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        assert self.config.jwks_url is not None
        if self._client is None:
            self._client = http_client(timeout=10.0)
        self._fetched_at = time.monotonic()
        try:
            response = await self._client.get(self.config.jwks_url)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(parse_json(response.content, repeated_keys="last"))
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            self._fetched_at = float("-inf")  # try again on the next request
            raise KeysUnavailable(f"cannot fetch the JWKS from {self.config.jwks_url}: {exc!r}") from exc
        self._keys = {k.key_id: k.key for k in keys.keys}
