"""Database URLs as the sql adapters and `bus migrate` take them (bus/dsn.py)."""

from __future__ import annotations

import re

import pytest

from bus.dsn import check_dsn, servers


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://hub:pw@db:5432/erp",
        "postgres://db/erp",
        "postgresql:///erp",  # the local socket
        "postgresql://hub@db-1:5432,db-2:5433,db-3/erp?target_session_attrs=read-write",
        "postgresql://hub@[::1]:5432,[fd00::2]/erp?target_session_attrs=prefer-standby",
        "mysql://root@127.0.0.1:3306/test",
        "mariadb://root@db/test?ssl-mode=DISABLED",
        "postgresql://hub:${PG_PASSWORD}@db:${PORT}/erp",  # not resolved yet: the scheme alone is checked
        "${LEGACY_DSN}",
        "postgresql://hub@pgbouncer:6432/erp?pgbouncer=true",
    ],
)
def test_dsns_that_connect_pass(dsn: str) -> None:
    check_dsn(dsn)


@pytest.mark.parametrize(
    ("dsn", "said"),
    [
        ("ftp://db/erp", "dsn must start with postgresql://, postgres://, mysql:// or mariadb://"),
        ("postgresql://db:54x2/erp", "the dsn's server 'db:54x2': the port must be a number from 1 to 65535"),
        ("postgresql://db-1:5432,db-2:99999/erp", "'db-2:99999': the port must be a number"),
        ("postgresql://db:54\u00b2/erp", "'db:54\u00b2': the port must be a number"),  # a digit to isdigit(), not to int()
        ("postgresql://db:" + "5" * 5000 + "/erp", "the port must be a number from 1 to 65535"),  # int() raised past 4,300 digits
        ("postgresql://db-1,,db-2/erp", "an empty server in its list"),
        ("mysql://root@db-1:3306,db-2:3306/erp", "a MariaDB/MySQL dsn names one server, not 2"),
        ("postgresql://db-1,db-2/erp?target_session_attrs=master", "target_session_attrs must be one of any, primary"),
        ("postgresql://pgbouncer:6432/erp?pgbouncer=yes", "pgbouncer must be true or false, not 'yes'"),
    ],
)
def test_dsns_that_cannot_work_are_refused_saying_why(dsn: str, said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        check_dsn(dsn)


def test_postgres_only_refuses_a_mariadb_dsn() -> None:
    with pytest.raises(ValueError, match="dsn must start with postgresql:// or postgres://"):
        check_dsn("mysql://db/erp", postgres_only=True)


def test_the_servers_are_shown_without_credentials() -> None:
    assert servers("postgresql://hub:s3cret@db-1:5432,db-2:5433/erp") == "db-1:5432,db-2:5433"
    assert servers("mysql://root:pw@127.0.0.1:3306/test") == "127.0.0.1:3306"
    assert servers("postgresql://hub:p@ss@db/erp") == "db"  # an @ left unescaped in the password
    assert servers("postgresql:///erp") == "localhost"


def test_the_pgbouncer_flag_is_the_hubs_and_never_reaches_the_driver() -> None:
    """asyncpg would send an unknown query parameter to the server as a setting (and be refused)."""
    from adapters.sql.pool import postgres_connection

    dsn, options = postgres_connection("postgresql://hub@pgb:6432/erp?sslmode=require&pgbouncer=true&target_session_attrs=any")
    assert dsn == "postgresql://hub@pgb:6432/erp?sslmode=require&target_session_attrs=any"
    assert options == {"statement_cache_size": 0}
    assert postgres_connection("postgresql://hub@pgb:6432/erp?pgbouncer=false") == ("postgresql://hub@pgb:6432/erp", {})
    assert postgres_connection("postgresql://hub@db/erp?sslmode=require") == ("postgresql://hub@db/erp?sslmode=require", {})
