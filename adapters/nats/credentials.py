"""NATS credentials read from files: a ``.creds`` file (the user's JWT and nkey seed, NATS's
decentralized auth: accounts made with ``nsc``, Synadia Cloud, NGS) and an nkey seed file.

Read and checked here before nats-py sees them, at ``bus validate`` and at every connection (so a
rotated Secret is taken up at the next reconnect): nats-py's own reader of a ``.creds`` file loops
for ever on a file without a JWT block, blocking the hub's event loop. Every error names the file
and what is wrong with it, never the seed.
"""

from __future__ import annotations

__all__ = ["UserCredentials", "check_seed_file", "read_creds"]

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from bus.adapter_api import FileTooLarge, read_at_most

_MAX_BYTES = 64 * 1024  # a .creds file is under 2 KB
_JWT = re.compile(rb"-{3,}BEGIN NATS USER JWT-{3,}\s*?\n\s*(\S+)\s*\n\s*-{3,}END NATS USER JWT-{3,}")
_SEED = re.compile(rb"-{3,}BEGIN USER NKEY SEED-{3,}\s*?\n\s*(\S+)\s*\n\s*-{3,}END USER NKEY SEED-{3,}")


@dataclass(frozen=True)
class UserCredentials:
    jwt: bytes
    seed: bytes


def _read(path: Path, what: str) -> bytes:
    try:  # bounded as it is read: a device (/dev/zero) says it holds 0 bytes
        return read_at_most(path, _MAX_BYTES, f"{what} {path}")
    except FileTooLarge as exc:
        raise ValueError(f"{exc}: not a NATS credentials file (they hold about 1 KB)") from None
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def _checked_seed(seed: bytes, path: Path, what: str) -> bytes:
    if not seed.startswith(b"SU"):
        kind = "an account's or an operator's seed" if seed[:2] in (b"SA", b"SO") else "not a user's nkey seed"
        raise ValueError(f"{what} {path}: its seed is {kind}; a user's seed starts with SU")
    if not _intact(seed):
        raise ValueError(f"{what} {path}: its seed is damaged (its checksum or encoding does not hold)")
    return seed


def _intact(seed: bytes) -> bool:
    """The seed decodes and its CRC-16 holds. nkeys.py does not check the checksum (Go's nkeys
    does): a seed damaged in a copy would sign as another key, and the server say only
    "authorization violation"."""
    try:
        raw = base64.b32decode(seed + b"=" * (-len(seed) % 8))
        nkeys.from_seed(bytearray(seed)).wipe()
    except Exception:  # noqa: BLE001 - binascii's and nkeys's own errors alike: not a seed
        return False
    return len(raw) == 36 and nkeys.crc16_checksum(raw[:-2]) == raw[-2:]


def read_creds(path: Path) -> UserCredentials:
    """The JWT and seed of a ``.creds`` file, checked (an expired JWT too: the server would only say
    "authorization violation"); ValueError saying what is wrong."""
    text = _read(path, "the credentials file")
    jwt, seed = _JWT.search(text), _SEED.search(text)
    if jwt is None or seed is None:
        missing = " and no ".join(n for n, m in (("user JWT block", jwt), ("user nkey seed block", seed)) if m is None)
        raise ValueError(
            f"the credentials file {path} has no {missing} (-----BEGIN NATS USER JWT----- ... and -----BEGIN USER NKEY SEED----- "
            "...): give the .creds file nsc or your NATS provider made for the user"
        )
    token = jwt.group(1)
    claims = _claims(token)
    if claims is None:
        raise ValueError(f"the credentials file {path}: its user JWT is not a JWT (three base64url parts, JSON claims)")
    kind = claims["nats"].get("type") if isinstance(claims.get("nats"), dict) else None
    if kind not in (None, "user"):
        raise ValueError(f"the credentials file {path}: its JWT is an {kind}'s, not a user's")
    expires = claims.get("exp")
    if isinstance(expires, int | float) and expires <= time.time():
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        raise ValueError(f"the credentials file {path}: its user JWT expired at {when}; ask for a new one (nsc, or your NATS provider)")
    return UserCredentials(token, _checked_seed(seed.group(1), path, "the credentials file"))


def _claims(token: bytes) -> dict[str, Any] | None:
    parts = token.split(b".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def check_seed_file(path: Path) -> None:
    """An nkey seed file: one user seed (SU...); ValueError saying what is wrong."""
    seed = _read(path, "the nkey seed file").strip()
    if not seed or b"\n" in seed:
        raise ValueError(f"the nkey seed file {path} must hold one user nkey seed (SU...) and nothing else")
    _checked_seed(seed, path, "the nkey seed file")
