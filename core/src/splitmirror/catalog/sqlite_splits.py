"""The SQLite catalog's hand-overs: splits a database host left for a backup host to archive.

SQLite has one writer at a time (``BEGIN IMMEDIATE``), so a claim is a read and an update in one
write transaction: two workers never take the same split.  Leases run on this host's clock:
a SQLite catalog is one host's (a fleet shares a PostgreSQL catalog, which uses the server's).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import CatalogError
from .base import ARCHIVED, ARCHIVING, DONE, FAILED, UPDATABLE, WAITING, FileRecord, Handover, utc_now

_COLUMNS = "session_id, identity, state, host, handed_at, record, worker, attempts"
#: Columns stored as JSON text.
JSON_COLUMNS = {"redo_range", "stats"}


def file_row(session_id: int, f: FileRecord) -> tuple[Any, ...]:
    """A file record as a row of ``files``."""
    return (
        session_id,
        f.seq,
        f.member,
        f.path,
        json.dumps(list(f.logical_key)),
        f.role,
        f.size,
        f.sha256,
        f.offset,
        f.read_method,
        None if f.extents is None else json.dumps(f.extents),
    )


def _handover(row: tuple[Any, ...]) -> Handover:
    session_id, identity, state, host, handed_at, record, worker, attempts = row
    return Handover(session_id, identity, state, host, handed_at, json.loads(record), worker, attempts)


class SqliteSplits:
    """Mixed into :class:`~splitmirror.catalog.sqlite.SqliteCatalog`."""

    _db: sqlite3.Connection

    @contextmanager
    def _writing(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def hand_over(
        self,
        session_id: int,
        *,
        identity: str,
        host: str,
        record: Mapping[str, Any],
        parcels: Sequence[bytes],
    ) -> None:
        with self._writing():
            held = self._db.execute(
                "SELECT session_id, host FROM handovers WHERE identity = ? AND state IN (?, ?)",
                (identity, WAITING, ARCHIVING),
            ).fetchone()
            if held is not None:
                raise CatalogError(
                    f"the mirror {identity} already holds session {held[0]}'s split (handed over by "
                    f"{held[1]}), not yet archived; one mirror holds one split: give each database "
                    "its own mirror, and let a backup host archive the split first"
                )
            self._db.execute(
                f"INSERT INTO handovers ({_COLUMNS}, lease_until) VALUES (?, ?, ?, ?, ?, ?, NULL, 0, NULL)",
                (session_id, identity, WAITING, host, utc_now(), json.dumps(record)),
            )
            self._db.executemany(
                "INSERT INTO parcels (session_id, seq, data) VALUES (?, ?, ?)",
                [(session_id, seq, data) for seq, data in enumerate(parcels)],
            )

    def handovers(
        self, *, identity: str | None = None, outstanding: bool = False, session_id: int | None = None
    ) -> list[Handover]:
        clauses: list[str] = []
        params: list[object] = []
        if session_id is not None:
            clauses.append("session_id = ?")
            params.append(session_id)
        if identity is not None:
            clauses.append("identity = ?")
            params.append(identity)
        if outstanding:
            clauses.append(f"state IN ('{WAITING}', '{ARCHIVING}')")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM handovers{where} ORDER BY session_id", params)
        return [_handover(row) for row in rows]

    def parcel(self, session_id: int, seq: int) -> bytes:
        row = self._db.execute(
            "SELECT data FROM parcels WHERE session_id = ? AND seq = ?", (session_id, seq)
        ).fetchone()
        if row is None:
            raise CatalogError(f"session {session_id}'s split has no handed-over member {seq}")
        return bytes(row[0])

    def claim_split(
        self, *, worker: str, identities: Sequence[str], lease_s: float, session_id: int | None = None
    ) -> Handover | None:
        now = time.time()
        marks = ", ".join("?" for _ in identities) or "NULL"
        which, params = f"identity IN ({marks})", list[object](identities)
        if session_id is not None:
            which, params = "session_id = ?", [session_id]
        with self._writing():
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM handovers WHERE {which}"
                " AND (state = ? OR (state = ? AND lease_until < ?)) ORDER BY session_id LIMIT 1",
                (*params, WAITING, ARCHIVING, now),
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE handovers SET state = ?, worker = ?, lease_until = ?, attempts = attempts + 1"
                " WHERE session_id = ?",
                (ARCHIVING, worker, now + lease_s, row[0]),
            )
        claimed = _handover(row)
        return dataclasses.replace(claimed, state=ARCHIVING, worker=worker, attempts=claimed.attempts + 1)

    def renew_lease(self, session_id: int, *, worker: str, lease_s: float) -> bool:
        cursor = self._db.execute(
            "UPDATE handovers SET lease_until = ? WHERE session_id = ? AND worker = ? AND state = ?",
            (time.time() + lease_s, session_id, worker, ARCHIVING),
        )
        return cursor.rowcount == 1

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
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        with self._writing():
            ours = self._db.execute(
                "UPDATE handovers SET state = ?, lease_until = NULL"
                " WHERE session_id = ? AND worker = ? AND state = ?",
                (ARCHIVED if archived else FAILED, session_id, worker, ARCHIVING),
            )
            if ours.rowcount != 1:
                return False
            self._db.execute("DELETE FROM files WHERE session_id = ?", (session_id,))
            self._db.executemany(
                "INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?)", [file_row(session_id, f) for f in files]
            )
            if fields:
                values = [json.dumps(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
                assignments = ", ".join(f"{k} = ?" for k in fields)
                self._db.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", (*values, session_id))
            self._db.execute(
                "UPDATE sessions SET status = ?, finished_at = ?, failed_phase = ?, error = ? WHERE id = ?",
                (DONE if archived else FAILED, finished_at, failed_phase, error, session_id),
            )
            self._db.execute("DELETE FROM parcels WHERE session_id = ?", (session_id,))
        return True
