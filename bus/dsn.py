"""Database URLs (DSNs) as the sql adapters and `bus migrate` take them: checked when the config
loads, and shown in messages without the user or the password.

A PostgreSQL DSN may name several servers, as libpq's do (``postgresql://hub@db-1:5432,db-2:5432/erp
?target_session_attrs=read-write``): the driver tries them in turn and keeps the first that answers
and has the asked-for role, which is how a client follows a primary that moved (Patroni,
CloudNativePG, a standby promoted by hand). MariaDB/MySQL's driver connects to one server only.
"""

from __future__ import annotations

__all__ = ["check_dsn", "servers"]

from urllib.parse import parse_qs, urlsplit

from bus.numbers import whole_number

POSTGRES = ("postgresql://", "postgres://")
MYSQL = ("mysql://", "mariadb://")
# What asyncpg takes for target_session_attrs (libpq's names).
_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")


def servers(dsn: str) -> str:
    """The servers a DSN names, ``host:port`` each, comma-separated; never the credentials."""
    netloc = urlsplit(dsn).netloc.rpartition("@")[2]
    return netloc or "localhost"


def _host_and_port(server: str) -> tuple[str, str]:
    if server.startswith("["):  # [::1]:5432
        host, _, rest = server[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = server.partition(":")
    return host, port


def check_dsn(dsn: str, *, postgres_only: bool = False) -> None:
    """ValueError saying what is wrong with ``dsn``: its scheme, a server's port, several servers
    for MariaDB/MySQL, an unknown ``target_session_attrs``, a ``pgbouncer`` flag that is neither
    true nor false. A DSN still holding a ``${...}`` (not resolved at this point) is checked for
    its scheme only, or not at all when that is one too."""
    schemes = POSTGRES if postgres_only else POSTGRES + MYSQL
    if "${" in dsn.partition("://")[0]:  # the whole DSN from the environment, not resolved at this point
        return
    if not dsn.startswith(schemes):
        raise ValueError(f"dsn must start with {', '.join(schemes[:-1])} or {schemes[-1]}")
    if "${" in dsn:
        return
    named = servers(dsn).split(",")
    for server in named:
        host, port = _host_and_port(server)
        if not host and len(named) > 1:
            raise ValueError(f"the dsn names an empty server in its list: {servers(dsn)!r}")
        if port and not whole_number(port, 65535):
            raise ValueError(f"the dsn's server {server!r}: the port must be a number from 1 to 65535")
    if len(named) > 1 and dsn.startswith(MYSQL):
        raise ValueError(
            f"a MariaDB/MySQL dsn names one server, not {len(named)} (its driver connects to one): for a cluster, name its "
            "proxy or endpoint (MaxScale, ProxySQL, a cloud endpoint)"
        )
    query = parse_qs(urlsplit(dsn).query, keep_blank_values=True)
    unknown = [value for value in query.get("target_session_attrs", []) if value not in _SESSION_ATTRS]
    if unknown and dsn.startswith(POSTGRES):
        raise ValueError(f"target_session_attrs must be one of {', '.join(_SESSION_ATTRS)}, not {unknown[0]!r}")
    flag = [value for value in query.get("pgbouncer", []) if value.lower() not in ("true", "false")]
    if flag and dsn.startswith(POSTGRES):
        raise ValueError(f"pgbouncer must be true or false, not {flag[0]!r}")
