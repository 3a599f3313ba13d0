"""NATS accounts and users for the tests, made as ``nsc`` makes them: nkey pairs (ed25519), and
JWTs (operator, account, user) signed with them, in the formats nats-server checks. A server in
operator mode (``operator_config``) then takes only users whose ``.creds`` an account of its own
signed; a server whose users are nkeys (``nkey_config``) takes only those seeds."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass(frozen=True)
class Pair:
    seed: str
    public: str

    @classmethod
    def new(cls, prefix: int) -> Pair:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        pair = nkeys.from_seed(bytearray(seed))
        return cls(seed.decode(), pair.public_key.decode())

    def sign(self, data: bytes) -> bytes:
        pair = nkeys.from_seed(bytearray(self.seed.encode()))
        try:
            return bytes(pair.sign(data))
        finally:
            pair.wipe()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: Pair, subject: str, name: str, nats: dict[str, Any], *, expires: int | None = None) -> str:
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject, "nats": nats}
    if expires is not None:
        claims["exp"] = expires
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, separators=(",", ":")).encode()).digest()).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


def creds_text(user_jwt: str, user_seed: str) -> str:
    """A .creds file as nsc writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\nNKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


@dataclass(frozen=True)
class Operator:
    """An operator with a system account and one account of users (JetStream allowed)."""

    operator: Pair
    system: Pair
    account: Pair

    @classmethod
    def new(cls) -> Operator:
        return cls(Pair.new(nkeys.PREFIX_BYTE_OPERATOR), Pair.new(nkeys.PREFIX_BYTE_ACCOUNT), Pair.new(nkeys.PREFIX_BYTE_ACCOUNT))

    def server_config(self) -> str:
        """nats-server.conf text: operator mode, the accounts preloaded in a memory resolver."""
        operator = jwt(self.operator, self.operator.public, "op", {"type": "operator", "version": 2, "system_account": self.system.public})
        system = jwt(self.operator, self.system.public, "SYS", {"type": "account", "version": 2, "limits": _UNLIMITED})
        account = jwt(self.operator, self.account.public, "hub", {"type": "account", "version": 2, "limits": {**_UNLIMITED, **_JETSTREAM}})
        return (
            f'operator: "{operator}"\nsystem_account: "{self.system.public}"\nresolver: MEMORY\n'
            f'resolver_preload: {{\n  {self.account.public}: "{account}"\n  {self.system.public}: "{system}"\n}}\n'
        )

    def user_creds(self, name: str, *, expires: int | None = None, signer: Pair | None = None) -> str:
        """A user of the account (or signed by ``signer``, an account the server does not know)."""
        user = Pair.new(nkeys.PREFIX_BYTE_USER)
        issuer = signer or self.account
        nats = {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
        return creds_text(jwt(issuer, user.public, name, nats, expires=expires), user.seed)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path
