"""Taking a server-wide lock without ever leaving the server blocked behind it.

FLUSH TABLES WITH READ LOCK and BACKUP STAGE wait for whoever holds a conflicting lock (a long
statement, LOCK TABLES, another backup), and while they wait every new writer queues behind
them: one long query can stop the whole server.  So each lock statement runs with the session's
``lock_wait_timeout`` set to the budget, and a watchdog thread kills the statement from a second
connection (``KILL QUERY``) if it is still waiting half a second past the budget, in case the
server's own timeout does not apply to that wait.  Either way the caller gets
:class:`LockTimedOut`, naming the connections that were in the way, and releases what it holds.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pymysql
import pymysql.connections

from splitmirror.api import SplitmirrorError

#: Server errors that mean "the lock statement gave up": lock wait timeout, query interrupted
#: (our watchdog's KILL QUERY), statement time limits of MariaDB and MySQL.
_GAVE_UP = frozenset({1205, 1317, 1969, 3024})
#: Connections that are never "in the way": replication threads, the server's own.
_IGNORED_COMMANDS = ("Daemon", "Binlog Dump", "Binlog Dump GTID", "Slave_IO", "Slave_SQL", "Slave_worker")
_IGNORED_USERS = ("system user", "event_scheduler")

if TYPE_CHECKING:
    Connection = pymysql.connections.Connection[Any]
else:  # PyMySQL's class is generic only in its stubs
    Connection = pymysql.connections.Connection


class LockTimedOut(SplitmirrorError):
    """A lock statement waited past its budget; the message names who was in the way."""


def other_sessions(
    conn: Connection, exclude: int, *, min_seconds: float = 0.0, busy_only: bool = False
) -> list[str]:
    """Other client connections, longest first, as ``connection 12 (app@10.0.0.5, 'SELECT ...', 31 s)``;
    with ``busy_only`` only those running a statement."""
    commands = ", ".join(["%s"] * len(_IGNORED_COMMANDS))
    users = ", ".join(["%s"] * len(_IGNORED_USERS))
    sql = (
        "SELECT ID, USER, HOST, COMMAND, TIME, LEFT(INFO, 120) FROM information_schema.PROCESSLIST "
        f"WHERE ID NOT IN (%s, CONNECTION_ID()) AND COMMAND NOT IN ({commands}) "
        f"AND USER NOT IN ({users}) AND TIME >= %s ORDER BY TIME DESC"
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, (exclude, *_IGNORED_COMMANDS, *_IGNORED_USERS, math.floor(min_seconds)))
        rows = cursor.fetchall()
    described = []
    for ident, user, host, command, seconds, info in rows:
        if command == "Query" and info:
            described.append(f"connection {ident} ({user}@{host}, {info!r}, {seconds} s)")
        elif not busy_only:
            described.append(
                f"connection {ident} ({user}@{host}, idle {seconds} s, "
                "which may hold LOCK TABLES or a transaction)"
            )
    return described


def connection_id(conn: Connection) -> int:
    """The server's id of ``conn`` (what KILL and the process list use)."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def take(conn: Connection, statement: str, budget: float, connect_again: Callable[[], Connection]) -> None:
    """Run the lock ``statement`` on ``conn``, waiting at most ``budget`` seconds."""
    ident = connection_id(conn)
    finished = threading.Event()
    blockers: list[str] = []
    killed: list[bool] = []

    def watchdog() -> None:
        if finished.wait(budget + 0.5):
            return
        try:
            with connect_again() as other:
                blockers[:] = other_sessions(other, ident)
                if finished.is_set():
                    return  # granted while we looked: never kill the next statement by mistake
                with other.cursor() as cursor:
                    cursor.execute(f"KILL QUERY {int(ident)}")
                killed.append(True)
        except pymysql.Error:
            pass  # the server's own timeout is the first line; this is the second

    with conn.cursor() as cursor:
        cursor.execute("SET SESSION lock_wait_timeout = %s", (max(1, math.ceil(budget)),))
    thread = threading.Thread(target=watchdog, name="splitmirror-lock-watchdog", daemon=True)
    thread.start()
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    except pymysql.err.OperationalError as error:
        if error.args and error.args[0] in _GAVE_UP:
            finished.set()
            thread.join()  # the watchdog's verdict, if it had one, is in before the message
            if not blockers:
                blockers[:] = _describe_quietly(connect_again, ident)
            in_the_way = "; ".join(blockers[:3]) or "a connection that is gone now"
            ended_by = "splitmirror's watchdog" if killed else "the server's lock_wait_timeout"
            raise LockTimedOut(
                f"{statement} waited {budget:g} s for a lock held by {in_the_way} (ended by {ended_by}); "
                "splitmirror gave up and released the server, which keeps running; retry when that "
                "finishes, or end it (KILL)"
            ) from None
        raise
    finally:
        finished.set()
        thread.join()


def _describe_quietly(connect_again: Callable[[], Connection], ident: int) -> list[str]:
    try:
        with connect_again() as other:
            return other_sessions(other, ident)
    except pymysql.Error:
        return []
