"""The PostgreSQL catalog: one catalog a fleet of hosts shares, in the ``splitmirror`` schema of a
database on a PostgreSQL server (``[session] catalog = "postgresql://backup@catalog-host/db"``).

Its password is never in the URL (core refuses such URLs): it comes from
``$SPLITMIRROR_CATALOG_PASSWORD``, else libpq's password file (``$PGPASSFILE``, else
``~/.pgpass``).  Never from ``$PGPASSWORD``: that holds the password of the PostgreSQL database
being backed up, which must not be sent to another server.  Passing the password explicitly,
empty when the variable is unset, is what keeps libpq from reading ``$PGPASSWORD`` while it
still looks in the password file.

What the SQLite catalog keeps in lock files beside it this one keeps in advisory locks of the
catalog's server (keys in :mod:`.catalog_schema`): every host sees them, and the server lets go
of a process's locks when its connection ends, however the process ended.  The locks belong to
the connection, so the URL must reach the server itself, or a pooler in session mode (a pooler
handing each transaction to any connection, as PgBouncer's transaction mode does, breaks them).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from splitmirror.api import (
    DRILL_ABANDONED,
    Catalog,
    CatalogAddress,
    CatalogError,
    DrillRecord,
    FileRecord,
    PhaseRecord,
    SessionBusyError,
    SessionSummary,
    utc_now,
)

from .catalog_schema import DRILL_SCAN_KEY, LOCK_SPACE, PRUNE_KEY, SCHEMA, migrate, schema_version
from .catalog_splits import JSON_COLUMNS, PostgresSplits, answering, reason, where_all

PASSWORD_ENV = "SPLITMIRROR_CATALOG_PASSWORD"
#: How often a prune waiting for another one asks again.
PRUNE_POLL_S = 0.2
#: How soon the server finds the connection of a host that went down (rather than a process that
#: ended, whose connection closes at once) dead, and so lets go of its drill's or prune's lock:
#: about two minutes, not the system's default of two hours and more.
_KEEPALIVES = "SET tcp_keepalives_idle = 60; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 6"

# A RUNNING drill nobody holds the lock of belongs to a process that is gone: its row was
# committed with the lock already held, and its outcome is recorded before the lock is let go.
# ``pg_locks`` rather than a try-lock, which would succeed on a lock this very connection holds.
_CLOSE_DEAD_DRILLS = f"""
    UPDATE splitmirror.drills d SET status = 'FAILED', finished_at = %s, duration_ms = 0, error = %s
    WHERE d.status = 'RUNNING' AND NOT EXISTS (
        SELECT FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
          AND l.classid = {LOCK_SPACE}::oid AND l.objid = d.id::oid)
    RETURNING d.id
"""


class PostgresCatalog(PostgresSplits, Catalog):
    """A catalog in a PostgreSQL database: many hosts write it at once, each through its own
    connection; nothing here relies on what one process remembers."""

    name = "postgresql"
    url_schemes = ("postgresql", "postgres")

    @classmethod
    def open(cls, address: CatalogAddress, *, create: bool) -> PostgresCatalog:
        conn = _connect(address)
        try:
            conn.execute(_KEEPALIVES)
            if not create and schema_version(conn) is None:
                raise CatalogError(
                    f"there is no catalog at {address.shown} (its database has no {SCHEMA} schema); "
                    "name the one your sessions use with --config FILE (its [session] catalog) or "
                    "--catalog URL"
                )
            migrate(conn, address.shown)
        except psycopg.Error as error:
            conn.close()
            raise CatalogError(
                f"the catalog {address.shown} cannot be set up ({reason(error)}); let its user "
                f"create the {SCHEMA} schema in the database, or have the database's owner open it once"
            ) from None
        except BaseException:
            conn.close()
            raise
        return cls(address, conn)

    def __init__(self, address: CatalogAddress, conn: psycopg.Connection[Any]) -> None:
        self.address = address
        self._conn = conn

    @answering
    def start_session(
        self, *, name: str, mode: str, database: str, database_url: str, config: str, started_at: str
    ) -> int:
        return self._new_id(
            "INSERT INTO splitmirror.sessions (name, status, mode, database, database_url, config,"
            " started_at) VALUES (%s, 'STARTED', %s, %s, %s, %s, %s) RETURNING id",
            (name, mode, database, database_url, config, started_at),
        )

    @answering
    def record_phase(self, session_id: int, phase: PhaseRecord) -> None:
        self._conn.execute(
            "INSERT INTO splitmirror.phases (session_id, seq, name, started_at, duration_ms, error, host)"
            " SELECT %(id)s, COALESCE(MAX(seq), 0) + 1, %(name)s, %(at)s, %(ms)s, %(error)s, %(host)s"
            " FROM splitmirror.phases WHERE session_id = %(id)s",
            {"id": session_id, "name": phase.name, "at": phase.started_at, "ms": phase.duration_ms,
             "error": phase.error, "host": phase.host},
        )  # fmt: skip

    @answering
    def update_session(self, session_id: int, **fields: Any) -> None:
        self._set_fields(session_id, fields)

    @answering
    def add_files(self, session_id: int, files: Iterable[FileRecord]) -> None:
        with self._conn.transaction():
            self._copy_files(session_id, list(files))

    @answering
    def finish_session(
        self,
        session_id: int,
        *,
        status: str,
        finished_at: str,
        failed_phase: str | None = None,
        error: str | None = None,
    ) -> None:
        self._conn.execute(
            "UPDATE splitmirror.sessions SET status = %s, finished_at = %s, failed_phase = %s,"
            " error = %s WHERE id = %s",
            (status, finished_at, failed_phase, error, session_id),
        )

    @answering
    def get(self, session_id: int) -> SessionSummary:
        found = self._summaries(sql.SQL("WHERE id = %s"), [session_id])
        if not found:
            raise CatalogError(
                f"there is no session {session_id} in the catalog {self.address.shown}; "
                "run `splitmirror list` to see the sessions it holds"
            )
        return found[0]

    @answering
    def sessions(
        self, *, database: str | None = None, status: str | None = None, since: str | None = None
    ) -> list[SessionSummary]:
        clauses, params = _equal(database=database, status=status)
        if since is not None:
            clauses.append(sql.SQL("started_at >= %s"))
            params.append(since)
        return self._summaries(where_all(clauses), params)

    @answering
    def files(self, session_id: int) -> list[FileRecord]:
        rows = self._conn.execute(
            "SELECT seq, member, path, logical_key, role, size, sha256, archive_offset, read_method,"
            " extents FROM splitmirror.files WHERE session_id = %s ORDER BY seq",
            (session_id,),
        )
        return [
            FileRecord(seq, member, path, tuple(json.loads(key)), role, size, sha, offset, method,
                       None if extents is None else [tuple(e) for e in json.loads(extents)])
            for seq, member, path, key, role, size, sha, offset, method, extents in rows
        ]  # fmt: skip

    @answering
    def mark_pruning(self, session_id: int, *, at: str, why: str) -> None:
        self._conn.execute(
            "UPDATE splitmirror.sessions SET pruned = 'PRUNING', pruned_at = %s, pruned_why = %s"
            " WHERE id = %s AND pruned IS NULL",
            (at, why, session_id),
        )

    @answering
    def mark_pruned(self, session_id: int, *, at: str) -> None:
        self._conn.execute(
            "UPDATE splitmirror.sessions SET pruned = 'PRUNED', pruned_at = %s WHERE id = %s",
            (at, session_id),
        )

    @answering
    def start_drill(self, session_id: int, *, name: str, started_at: str) -> int:
        return self._new_id(
            "INSERT INTO splitmirror.drills (session_id, name, status, started_at)"
            " VALUES (%s, %s, 'RUNNING', %s) RETURNING id",
            (session_id, name, started_at),
        )

    @answering
    def finish_drill(
        self, drill_id: int, *, status: str, finished_at: str, duration_ms: float, route: str,
        checks: list[str], error: str | None,
    ) -> None:  # fmt: skip
        self._conn.execute(
            "UPDATE splitmirror.drills SET status = %s, finished_at = %s, duration_ms = %s,"
            " route = %s, checks = %s, error = %s WHERE id = %s AND status = 'RUNNING'",
            (status, finished_at, duration_ms, route, json.dumps(checks), error, drill_id),
        )

    @answering
    def drills(self, *, name: str | None = None, session_id: int | None = None) -> list[DrillRecord]:
        clauses, params = _equal(name=name, session_id=session_id)
        query = sql.SQL("SELECT * FROM splitmirror.drills {} ORDER BY id").format(where_all(clauses))
        with self._conn.cursor(row_factory=dict_row) as cursor:
            rows = cursor.execute(query, params).fetchall()
        return [DrillRecord(**{**row, "checks": json.loads(row["checks"])}) for row in rows]

    def one_prune_at_a_time(self, wait: float) -> contextlib.AbstractContextManager[None]:
        return self._pruning(wait)

    @contextlib.contextmanager
    def _pruning(self, wait: float) -> Iterator[None]:
        deadline = time.monotonic() + wait
        while not self._try_lock(PRUNE_KEY):
            if time.monotonic() > deadline:
                raise SessionBusyError(
                    f"another prune of the catalog {self.address.shown} has run for more than "
                    f"{wait:g}s; let it finish, then prune again"
                )
            time.sleep(PRUNE_POLL_S)
        try:
            yield
        finally:
            self._unlock(PRUNE_KEY)

    @answering
    def drill_started(
        self, session_id: int, *, name: str, started_at: str, abandoned: Callable[[int], None]
    ) -> tuple[int, Callable[[], None]]:
        for dead in self._close_dead_drills():
            abandoned(dead)  # outside any transaction: removing what it left may take a while
        drill_id: int | None = None
        try:
            # The lock is taken before the row is committed: no host ever sees the row RUNNING
            # without its lock held, and so takes a live drill for dead.
            with self._conn.transaction():
                drill_id = self.start_drill(session_id, name=name, started_at=started_at)
                self._conn.execute(f"SELECT pg_advisory_lock({LOCK_SPACE}, %s::integer)", (drill_id,))
        except BaseException:
            if drill_id is not None:  # a session-level lock outlives the rollback of its transaction
                self._unlock(drill_id)
            raise
        held = drill_id
        return held, lambda: self._unlock(held)

    def _close_dead_drills(self) -> list[int]:
        """The ids of the dead drills this call closed: a drill another host closed at the same
        moment is handed to that host's ``abandoned``, never to both."""
        with self._conn.transaction():
            self._conn.execute(f"SELECT pg_advisory_xact_lock({LOCK_SPACE}, {DRILL_SCAN_KEY})")
            return [row[0] for row in self._conn.execute(_CLOSE_DEAD_DRILLS, (utc_now(), DRILL_ABANDONED))]

    @answering
    def copy_in(
        self, session: SessionSummary, files: Sequence[FileRecord], drills: Sequence[DrillRecord]
    ) -> None:
        row = session.to_json()
        phases = row.pop("phases")
        for column in JSON_COLUMNS:
            row[column] = json.dumps(row[column])
        with self._conn.transaction():
            # No host adds a session or a drill meanwhile: the identities are moved past the
            # copied ids below, and an insert between would take one of them first.
            self._conn.execute(
                "LOCK TABLE splitmirror.sessions, splitmirror.drills IN SHARE ROW EXCLUSIVE MODE"
            )
            taken = self._conn.execute("SELECT 1 FROM splitmirror.sessions WHERE id = %s", (session.id,))
            if taken.fetchone() is not None:
                raise CatalogError(
                    f"the catalog {self.address.shown} already has a session {session.id}; copy into "
                    "a new, empty catalog"
                )
            insert = sql.SQL("INSERT INTO splitmirror.sessions ({}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(sql.Placeholder() * len(row))
            )
            self._conn.execute(insert, list(row.values()))
            with self._conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO splitmirror.phases (session_id, seq, name, started_at, duration_ms,"
                    " error, host) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(session.id, seq, p["name"], p["started_at"], p["duration_ms"], p["error"], p["host"])
                     for seq, p in enumerate(phases, start=1)],
                )  # fmt: skip
                cursor.executemany(
                    "INSERT INTO splitmirror.drills (id, session_id, name, status, started_at,"
                    " finished_at, duration_ms, route, checks, error)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(d.id, session.id, d.name, d.status, d.started_at, d.finished_at, d.duration_ms,
                      d.route, json.dumps(d.checks), d.error) for d in drills],
                )  # fmt: skip
            self._copy_files(session.id, files)
            for table in ("sessions", "drills"):
                self._conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('splitmirror.{table}', 'id'),"
                    f" GREATEST(max(id), 1)) FROM splitmirror.{table}"
                )

    def close(self) -> None:
        self._conn.close()

    def _new_id(self, insert: str, params: tuple[Any, ...]) -> int:
        row = self._conn.execute(insert, params).fetchone()
        assert row is not None, "INSERT ... RETURNING returns the row"
        return int(row[0])

    def _summaries(self, where: sql.Composable, params: list[Any]) -> list[SessionSummary]:
        """Sessions with their phases, in two queries however many there are: a catalog across
        the network answers ``list`` of a year of sessions without a round trip per session."""
        with self._conn.cursor(row_factory=dict_row) as cursor:
            query = sql.SQL("SELECT * FROM splitmirror.sessions {} ORDER BY id").format(where)
            rows = cursor.execute(query, params).fetchall()
        phases: dict[int, list[PhaseRecord]] = {row["id"]: [] for row in rows}
        for session_id, *phase in self._conn.execute(
            "SELECT session_id, name, started_at, duration_ms, error, host FROM splitmirror.phases"
            " WHERE session_id = ANY(%s) ORDER BY session_id, seq",
            (list(phases),),
        ):
            phases[session_id].append(PhaseRecord(*phase))
        for row in rows:
            for column in JSON_COLUMNS:
                row[column] = json.loads(row[column])
        return [SessionSummary(**row, phases=phases[row["id"]]) for row in rows]

    @answering
    def _try_lock(self, key: int) -> bool:
        row = self._conn.execute(f"SELECT pg_try_advisory_lock({LOCK_SPACE}, %s::integer)", (key,)).fetchone()
        return bool(row and row[0])

    def _unlock(self, key: int) -> None:
        # A connection that is gone has let go of its locks already: the server ended them.
        with contextlib.suppress(psycopg.OperationalError):
            self._conn.execute(f"SELECT pg_advisory_unlock({LOCK_SPACE}, %s::integer)", (key,))


def _connect(address: CatalogAddress) -> psycopg.Connection[Any]:
    """A connection in autocommit (each write its own transaction, several in an explicit one)."""
    password = os.environ.get(PASSWORD_ENV, "")
    try:
        # Keepalives and a TCP user timeout on this side too: a catalog cut off mid-call fails
        # the call within a minute instead of TCP's quarter of an hour (a worker's lease renewal
        # must fail while its lease still holds).
        return psycopg.connect(
            address.text, password=password, connect_timeout=10, application_name="splitmirror",
            autocommit=True, keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
            tcp_user_timeout=60000,
        )  # fmt: skip
    except psycopg.Error as error:
        said = reason(error).replace(password, "***") if password else reason(error)
        if "password" in said or "authentication" in said:
            raise CatalogError(
                f"the catalog {address.shown} refused the login ({said}); give its password in "
                f"${PASSWORD_ENV} or a pgpass file ($PGPASSFILE, else ~/.pgpass)"
            ) from None
        raise CatalogError(
            f"the catalog {address.shown} cannot be opened ({said}); check that its server runs "
            "and lets this host in, or name the right catalog with [session] catalog or --catalog"
        ) from None


def _equal(**wanted: Any) -> tuple[list[sql.Composable], list[Any]]:
    given = {column: value for column, value in wanted.items() if value is not None}
    return [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in given], list(given.values())
