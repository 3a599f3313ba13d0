"""How database errors are classed: the target's setup (retried, loudly) versus the event's data
(dead-lettered), with the exceptions the real drivers raise."""

from __future__ import annotations

import asyncpg
import pymysql
import pytest

from adapters.sql.outbound import _classify
from bus.errors import PermanentError, RetryableError


@pytest.mark.parametrize(
    ("error", "retried", "says"),
    [
        (pymysql.err.ProgrammingError(1146, "Table 'test.t' doesn't exist"), True, "no such table"),
        (pymysql.err.OperationalError(1054, "Unknown column 'x' in 'field list'"), True, "no such column"),
        (pymysql.err.OperationalError(1142, "INSERT command denied to user"), True, "permission denied"),
        (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), True, "Lock wait"),  # PyMySQL's SQLSTATE: HY000
        (pymysql.err.DataError(1406, "Data too long for column 'currency'"), False, "Data too long"),
        (asyncpg.exceptions.UndefinedTableError('relation "t" does not exist'), True, "no such table"),
        (asyncpg.exceptions.InsufficientPrivilegeError("permission denied for table t"), True, "permission denied"),
        (asyncpg.exceptions.CheckViolationError("new row violates check constraint"), False, "CheckViolationError"),
        # A server that takes no writes (a standby, a primary set read-only): every event alike.
        (asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"), True, "takes no writes"),
        (pymysql.err.OperationalError(1290, "The MariaDB server is running with the --read-only option"), True, "takes no writes"),
        (pymysql.err.OperationalError(1792, "Cannot execute statement in a READ ONLY transaction"), True, "takes no writes"),
        (pymysql.err.OperationalError(1836, "Running in read-only mode"), True, "takes no writes"),
        # What PgBouncer in transaction mode makes of the driver's prepared statements.
        (asyncpg.exceptions.InvalidSQLStatementNameError('prepared statement "__asyncpg_stmt_4__" does not exist'), True, "pgbouncer="),
        (asyncpg.exceptions.DuplicatePreparedStatementError('prepared statement "__asyncpg_stmt_1__" already exists'), True, "?pgbouncer"),
    ],
)
def test_setup_errors_are_retried_and_data_errors_dead_lettered(error: Exception, retried: bool, says: str) -> None:
    if isinstance(error, pymysql.err.MySQLError):
        error.sqlstate = "HY000" if error.args[0] == 1205 else "42S02"  # as PyMySQL sets it from the error packet
    found = _classify(error, "db/t")
    assert isinstance(found, RetryableError if retried else PermanentError)
    assert says in str(found)
