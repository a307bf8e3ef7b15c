"""The PostgreSQL catalog's hand-overs: splits database hosts leave for backup hosts to archive,
and what the catalog's two modules share (the connection, file rows, summary columns).

Workers on many hosts claim at once: a claim takes the oldest split it may have with ``FOR UPDATE
SKIP LOCKED``, so no two take the same one and none waits for another's claim.  Leases run on
the catalog server's clock, the one clock all the fleet's hosts share.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import sql

from splitmirror.api import UPDATABLE, CatalogAddress, CatalogError, FileRecord, Handover, first_line, utc_now

#: Columns stored as JSON text, as ``json.dumps`` wrote them.
JSON_COLUMNS = frozenset({"redo_range", "stats"})
_COPY_FILES = (
    "COPY splitmirror.files (session_id, seq, member, path, logical_key, role, size, sha256,"
    " archive_offset, read_method, extents) FROM STDIN"
)
_COLUMNS = "session_id, identity, state, host, handed_at, record, worker, attempts"
#: Seconds since the epoch by the server's clock, the unit of ``lease_until`` (as in SQLite).
_SERVER_NOW = "extract(epoch FROM clock_timestamp())::double precision"

P = ParamSpec("P")
R = TypeVar("R")


def answering(method: Callable[P, R]) -> Callable[P, R]:
    """A catalog server that went away mid-session (restarted, a network cut), or a grant
    missing, is one sentence, not a driver's traceback."""

    @functools.wraps(method)
    def answered(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege) as error:
            catalog = args[0]
            assert isinstance(catalog, PostgresSplits)
            raise CatalogError(
                f"the catalog {catalog.address.shown} failed to answer ({reason(error)}); check its "
                "server and this host's access to it, then run the command again"
            ) from None

    return answered


def reason(error: psycopg.Error) -> str:
    """What the server or libpq said, without libpq's "connection to server at ... failed:"."""
    return first_line(error).rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()


def file_row(session_id: int, f: FileRecord) -> tuple[Any, ...]:
    return (
        session_id, f.seq, f.member, f.path, json.dumps(list(f.logical_key)), f.role, f.size, f.sha256,
        f.offset, f.read_method, None if f.extents is None else json.dumps(f.extents),
    )  # fmt: skip


def assignments(fields: Mapping[str, Any]) -> tuple[sql.Composable, list[Any]]:
    """``column = %s, ...`` for summary columns, and their values; other columns are refused."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    values = [json.dumps(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
    return sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in fields), values


def where_all(clauses: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")


def _handover(row: Sequence[Any]) -> Handover:
    session_id, identity, state, host, handed_at, record, worker, attempts = row
    return Handover(session_id, identity, state, host, handed_at, json.loads(record), worker, attempts)


class PostgresSplits:
    """Mixed into :class:`~.catalog.PostgresCatalog`."""

    address: CatalogAddress
    _conn: psycopg.Connection[Any]

    def _copy_files(self, session_id: int, files: Sequence[FileRecord]) -> None:
        with self._conn.cursor() as cursor, cursor.copy(_COPY_FILES) as copy:
            for f in files:
                copy.write_row(file_row(session_id, f))

    def _set_fields(self, session_id: int, fields: Mapping[str, Any]) -> None:
        columns, values = assignments(fields)
        if fields:
            query = sql.SQL("UPDATE splitmirror.sessions SET {} WHERE id = %s").format(columns)
            self._conn.execute(query, (*values, session_id))

    @answering
    def hand_over(
        self,
        session_id: int,
        *,
        identity: str,
        host: str,
        record: Mapping[str, Any],
        parcels: Sequence[bytes],
    ) -> None:
        with self._conn.transaction():
            # The index of outstanding splits decides between hosts handing over at once.
            taken = self._conn.execute(
                f"INSERT INTO splitmirror.handovers ({_COLUMNS}) VALUES (%s, %s, 'WAITING', %s, %s, %s,"
                " NULL, 0) ON CONFLICT (identity) WHERE state IN ('WAITING', 'ARCHIVING') DO NOTHING"
                " RETURNING session_id",
                (session_id, identity, host, utc_now(), json.dumps(record)),
            ).fetchone()
            if taken is None:
                held = self._conn.execute(
                    "SELECT session_id, host FROM splitmirror.handovers"
                    " WHERE identity = %s AND state IN ('WAITING', 'ARCHIVING')",
                    (identity,),
                ).fetchone()
                holder = f"session {held[0]}'s split (handed over by {held[1]})" if held else "a split"
                raise CatalogError(
                    f"the mirror {identity} already holds {holder}, not yet archived; one mirror "
                    "holds one split: give each database its own mirror, and let a backup host "
                    "archive the split first"
                )
            with self._conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO splitmirror.parcels (session_id, seq, data) VALUES (%s, %s, %s)",
                    [(session_id, seq, data) for seq, data in enumerate(parcels)],
                )

    @answering
    def handovers(
        self, *, identity: str | None = None, outstanding: bool = False, session_id: int | None = None
    ) -> list[Handover]:
        clauses: list[sql.Composable] = []
        params: list[Any] = []
        if session_id is not None:
            clauses.append(sql.SQL("session_id = %s"))
            params.append(session_id)
        if identity is not None:
            clauses.append(sql.SQL("identity = %s"))
            params.append(identity)
        if outstanding:
            clauses.append(sql.SQL("state IN ('WAITING', 'ARCHIVING')"))
        query = sql.SQL(f"SELECT {_COLUMNS} FROM splitmirror.handovers {{}} ORDER BY session_id")
        return [_handover(row) for row in self._conn.execute(query.format(where_all(clauses)), params)]

    @answering
    def parcel(self, session_id: int, seq: int) -> bytes:
        row = self._conn.execute(
            "SELECT data FROM splitmirror.parcels WHERE session_id = %s AND seq = %s", (session_id, seq)
        ).fetchone()
        if row is None:
            raise CatalogError(f"session {session_id}'s split has no handed-over member {seq}")
        return bytes(row[0])

    @answering
    def claim_split(
        self, *, worker: str, identities: Sequence[str], lease_s: float, session_id: int | None = None
    ) -> Handover | None:
        which: str = "session_id = %s" if session_id is not None else "identity = ANY(%s::text[])"
        claimable = (
            f"SELECT session_id FROM splitmirror.handovers WHERE {which} AND (state = 'WAITING'"
            f" OR (state = 'ARCHIVING' AND lease_until < {_SERVER_NOW})) ORDER BY session_id"
            " LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
        row = self._conn.execute(
            f"UPDATE splitmirror.handovers SET state = 'ARCHIVING', worker = %s, lease_until ="
            f" {_SERVER_NOW} + %s, attempts = attempts + 1 WHERE session_id = ({claimable})"
            f" RETURNING {_COLUMNS}",
            (worker, float(lease_s), session_id if session_id is not None else list(identities)),
        ).fetchone()
        return None if row is None else _handover(row)

    @answering
    def renew_lease(self, session_id: int, *, worker: str, lease_s: float) -> bool:
        renewed = self._conn.execute(
            f"UPDATE splitmirror.handovers SET lease_until = {_SERVER_NOW} + %s"
            " WHERE session_id = %s AND worker = %s AND state = 'ARCHIVING'",
            (float(lease_s), session_id, worker),
        )
        return renewed.rowcount == 1

    @answering
    def finish_handover(
        self,
        session_id: int,
        *,
        worker: str,
        archived: bool,
        files: Sequence[FileRecord],
        fields: Mapping[str, Any],
        finished_at: str,
        failed_phase: str | None = None,
        error: str | None = None,
    ) -> bool:
        assignments(fields)  # refuse an unknown column before anything changes
        with self._conn.transaction():
            ours = self._conn.execute(
                "UPDATE splitmirror.handovers SET state = %s, lease_until = NULL"
                " WHERE session_id = %s AND worker = %s AND state = 'ARCHIVING'",
                ("ARCHIVED" if archived else "FAILED", session_id, worker),
            )
            if ours.rowcount != 1:
                return False  # another worker took it after this one's lease ran out
            self._conn.execute("DELETE FROM splitmirror.files WHERE session_id = %s", (session_id,))
            self._copy_files(session_id, files)
            self._set_fields(session_id, fields)
            self._conn.execute(
                "UPDATE splitmirror.sessions SET status = %s, finished_at = %s, failed_phase = %s,"
                " error = %s WHERE id = %s",
                ("DONE" if archived else "FAILED", finished_at, failed_phase, error, session_id),
            )
            self._conn.execute("DELETE FROM splitmirror.parcels WHERE session_id = %s", (session_id,))
        return True
