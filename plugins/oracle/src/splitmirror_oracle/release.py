"""Ending backup mode and SUSPEND, whatever happened to the session that entered them.

Every other engine's hold ends when its connection closes; Oracle's do not, so the release is
tried, in turn, wherever a connection can still be had:

1. the session's own connection (:meth:`OracleEngine.release`);
2. a spare connection the engine opened before the window, so that no login is needed while
   the instance is suspended (Oracle does not document whether a new login completes then);
3. a fresh connection (:func:`emergency`), which is also what the watchdog runs, in its own
   process, when the session's process died: its login is bounded (python-oracledb's
   ``tcp_connect_timeout`` bounds only the TCP connect) and retried until a deadline.

Each is idempotent: RESUME first (END BACKUP writes the datafile headers, which needs I/O), then
END BACKUP while any datafile is in backup mode, then both checked again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Protocol

import oracledb

from . import connection

#: ``END BACKUP`` when no file is in backup mode ("none of the files are in backup").
NOTHING_TO_END = ("ORA-01142",)


class Cursor(Protocol):
    def execute(self, statement: str, parameters: Any = ...) -> Any: ...
    def fetchone(self) -> Any: ...


class ReleaseFailed(Exception):
    """Backup mode or SUSPEND could not be ended; the message is one sentence."""


def tolerant(cursor: Cursor, statement: str) -> None:
    """Run ``statement``; Oracle saying there is nothing to end (:data:`NOTHING_TO_END`) is success."""
    try:
        cursor.execute(statement)
    except oracledb.DatabaseError as error:
        if connection.code(error) not in NOTHING_TO_END:
            raise


def held(cursor: Cursor) -> tuple[bool, int]:
    """(the instance is suspended, how many datafiles are in backup mode)."""
    cursor.execute("SELECT database_status FROM v$instance")
    row = cursor.fetchone()
    suspended = row is not None and row[0] == "SUSPENDED"
    if suspended:
        return True, -1  # v$backup reads datafile headers: it would wait for RESUME
    cursor.execute("SELECT COUNT(*) FROM v$backup WHERE status = 'ACTIVE'")
    row = cursor.fetchone()
    return False, int(row[0]) if row is not None else 0


def end_everything(cursor: Cursor, resume_wait: float = 10.0) -> None:
    """RESUME (tolerated when the instance was not suspended: a SUSPEND still finishing when
    the session died may not show yet), up to ``resume_wait`` seconds for it to take, END
    BACKUP while files are in it, and the check that nothing is held any more;
    :class:`ReleaseFailed` when something still is."""
    try:
        cursor.execute("ALTER SYSTEM RESUME")
    except oracledb.DatabaseError:
        if held(cursor)[0]:
            raise
    _wait_active(cursor, resume_wait)
    if held(cursor)[0]:
        raise ReleaseFailed("the instance is still SUSPENDED after ALTER SYSTEM RESUME")
    if held(cursor)[1]:
        tolerant(cursor, "ALTER DATABASE END BACKUP")
    suspended, active = held(cursor)
    if suspended or active:
        raise ReleaseFailed(
            f"after RESUME and END BACKUP the instance is {'SUSPENDED' if suspended else 'ACTIVE'} with "
            f"{max(active, 0)} datafiles in backup mode"
        )


def connect_within(
    url: str, *, privilege: str, password_file: Path | None, seconds: float, call_timeout: float
) -> Any:
    """A fresh connection, or :class:`ReleaseFailed` when logging in takes over ``seconds``:
    the login runs in a thread of its own, abandoned (daemon) when late."""
    found: list[Any] = []
    failed: list[BaseException] = []
    lock = threading.Lock()
    abandoned = False

    def login() -> None:
        try:
            conn = connection.connect(
                url,
                privilege=privilege,
                password_file=password_file,
                timeout=seconds,
                call_timeout=call_timeout,
            )
        except (oracledb.Error, connection.ConnectionProblem) as error:
            failed.append(error)
            return
        with lock:
            if not abandoned:
                found.append(conn)
                return
        conn.close()  # logged in after the caller gave up: nobody would close it

    thread = threading.Thread(target=login, name="oracle-release-login", daemon=True)
    thread.start()
    thread.join(seconds)
    with lock:
        abandoned = not found
    if found:
        return found[0]
    if failed:
        raise ReleaseFailed(connection.message(failed[0]))
    raise ReleaseFailed(f"logging in took over {seconds:g} s")


def emergency(
    url: str,
    *,
    privilege: str,
    password_file: Path | None,
    login_timeout: float,
    call_timeout: float,
    deadline: float,
) -> None:
    """End everything on a fresh connection (each login bounded by ``login_timeout``, each
    statement by ``call_timeout``), trying again until ``deadline`` seconds have passed;
    :class:`ReleaseFailed` with the last reason when it never worked."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            conn = connect_within(
                url, privilege=privilege, password_file=password_file, seconds=login_timeout,
                call_timeout=call_timeout,
            )  # fmt: skip
            try:
                with conn.cursor() as cursor:
                    end_everything(cursor, min(call_timeout, 10.0))
                return
            finally:
                conn.close()
        except (ReleaseFailed, oracledb.Error) as error:
            if time.monotonic() + 1 > give_up:
                raise ReleaseFailed(connection.message(error)) from None
            time.sleep(1)


def _wait_active(cursor: Cursor, timeout: float) -> None:
    """Until ``v$instance`` says the instance is no longer SUSPENDED (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while held(cursor)[0] and time.monotonic() < deadline:
        time.sleep(0.1)
