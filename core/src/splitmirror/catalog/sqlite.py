"""The SQLite catalog: one file, WAL journal, schema versioned by ``PRAGMA user_version``."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import CatalogError
from ..paths import ensure_private_dir
from . import locks
from .address import CatalogAddress
from .base import UPDATABLE, Catalog, DrillRecord, FileRecord, PhaseRecord, SessionSummary
from .sqlite_splits import JSON_COLUMNS, SqliteSplits, file_row

#: Each entry upgrades the schema by one version; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('STARTED', 'DONE', 'FAILED')),
        mode TEXT NOT NULL,
        database TEXT NOT NULL,
        database_url TEXT NOT NULL,
        config TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        window_ms REAL,
        failed_phase TEXT,
        error TEXT,
        files INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        archive TEXT,
        server_version TEXT NOT NULL DEFAULT '',
        label TEXT NOT NULL DEFAULT '',
        redo_range TEXT NOT NULL DEFAULT '{}',
        stats TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX sessions_by_start ON sessions (started_at);
    CREATE TABLE phases (
        session_id INTEGER NOT NULL REFERENCES sessions (id),
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        started_at TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        error TEXT,
        PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE files (
        session_id INTEGER NOT NULL REFERENCES sessions (id),
        seq INTEGER NOT NULL,
        member TEXT NOT NULL,
        path TEXT NOT NULL,
        logical_key TEXT NOT NULL,
        role TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        archive_offset INTEGER NOT NULL,
        read_method TEXT NOT NULL,
        extents TEXT,
        PRIMARY KEY (session_id, seq)
    );
    """,
    # 2: how long the writers were held, beside the window (NULL in the rows before it).
    """
    ALTER TABLE sessions ADD COLUMN blocked_ms REAL;
    """,
    # 3: retention (an archive being deleted, then gone) and the drills of archives.
    """
    ALTER TABLE sessions ADD COLUMN pruned TEXT CHECK (pruned IN ('PRUNING', 'PRUNED'));
    ALTER TABLE sessions ADD COLUMN pruned_at TEXT;
    ALTER TABLE sessions ADD COLUMN pruned_why TEXT;
    CREATE TABLE drills (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id INTEGER NOT NULL REFERENCES sessions (id),
        name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('RUNNING', 'PASSED', 'FAILED')),
        started_at TEXT NOT NULL,
        finished_at TEXT,
        duration_ms REAL,
        route TEXT NOT NULL DEFAULT '',
        checks TEXT NOT NULL DEFAULT '[]',
        error TEXT
    );
    CREATE INDEX drills_by_name ON drills (name, id);
    """,
    # 4: off-host backup: which host ran each phase; splits handed over to backup hosts, the
    # bytes only the database host could read, and one outstanding split per mirror.
    """
    ALTER TABLE phases ADD COLUMN host TEXT NOT NULL DEFAULT '';
    CREATE TABLE handovers (
        session_id INTEGER PRIMARY KEY REFERENCES sessions (id),
        identity TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('WAITING', 'ARCHIVING', 'ARCHIVED', 'FAILED')),
        host TEXT NOT NULL,
        handed_at TEXT NOT NULL,
        record TEXT NOT NULL,
        worker TEXT,
        lease_until REAL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX one_split_per_mirror ON handovers (identity)
        WHERE state IN ('WAITING', 'ARCHIVING');
    CREATE TABLE parcels (
        session_id INTEGER NOT NULL REFERENCES sessions (id),
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    """,
)


@contextlib.contextmanager
def _opening(path: Path) -> Iterator[None]:
    """One process at a time opens (creates, switches to WAL, migrates) the catalog: SQLite
    answers "database is locked" at once, without waiting, to a second process changing the
    journal mode of a new database (found by CI: two sessions creating one catalog)."""
    fd = os.open(path.with_name(path.name + ".open-lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class SqliteCatalog(SqliteSplits, Catalog):
    """The embedded default: one file on this host, its locks in ``locks/`` beside it."""

    name = "sqlite"

    @classmethod
    def open(cls, address: CatalogAddress, *, create: bool) -> SqliteCatalog:
        assert address.path is not None, "the SQLite catalog opens paths"
        if not create and not address.path.exists():
            raise CatalogError(
                f"there is no catalog at {address.path}; name the one your sessions use with "
                "--config FILE (its [session] catalog) or --catalog PATH"
            )
        return cls(address.path)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.address = CatalogAddress(str(path))
        try:
            ensure_private_dir(path.parent)
            with _opening(path):
                fresh = not path.exists()
                if fresh:
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._migrate()
        except sqlite3.DatabaseError as error:
            raise CatalogError(
                f"the catalog {path} cannot be opened ({error}); point [session] catalog or "
                f"$SPLITMIRROR_CATALOG at a healthy catalog file"
            ) from None
        except OSError as error:
            raise CatalogError(
                f"the catalog {path} cannot be created ({error.strerror}); choose a writable "
                f"location with [session] catalog or $SPLITMIRROR_CATALOG"
            ) from None

    def _migrate(self) -> None:
        (current,) = self._db.execute("PRAGMA user_version").fetchone()
        if current > len(MIGRATIONS):
            raise CatalogError(
                f"the catalog {self.path} has schema version {current}, newer than this "
                f"splitmirror understands ({len(MIGRATIONS)}); upgrade splitmirror"
            )
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Read again under the write lock: two sessions creating one catalog at once
                # both saw it empty, and the second must not run the first's migration again.
                (now,) = self._db.execute("PRAGMA user_version").fetchone()
                if now >= version:
                    self._db.execute("COMMIT")
                    continue
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def start_session(
        self, *, name: str, mode: str, database: str, database_url: str, config: str, started_at: str
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO sessions (name, status, mode, database, database_url, config, started_at)"
            " VALUES (?, 'STARTED', ?, ?, ?, ?, ?)",
            (name, mode, database, database_url, config, started_at),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def record_phase(self, session_id: int, phase: PhaseRecord) -> None:
        self._db.execute(
            "INSERT INTO phases (session_id, seq, name, started_at, duration_ms, error, host) VALUES"
            " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM phases WHERE session_id = ?), ?, ?, ?, ?, ?)",
            (
                session_id,
                session_id,
                phase.name,
                phase.started_at,
                phase.duration_ms,
                phase.error,
                phase.host,
            ),
        )

    def update_session(self, session_id: int, **fields: Any) -> None:
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if not fields:
            return
        values = [json.dumps(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", (*values, session_id))

    def add_files(self, session_id: int, files: Iterable[FileRecord]) -> None:
        rows = [file_row(session_id, f) for f in files]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def finish_session(
        self,
        session_id: int,
        *,
        status: str,
        finished_at: str,
        failed_phase: str | None = None,
        error: str | None = None,
    ) -> None:
        self._db.execute(
            "UPDATE sessions SET status = ?, finished_at = ?, failed_phase = ?, error = ? WHERE id = ?",
            (status, finished_at, failed_phase, error, session_id),
        )

    def _summary(self, row: sqlite3.Row) -> SessionSummary:
        data = dict(row)
        for column in JSON_COLUMNS:
            data[column] = json.loads(data[column])
        phases = [
            PhaseRecord(*p)
            for p in self._db.execute(
                "SELECT name, started_at, duration_ms, error, host FROM phases"
                " WHERE session_id = ? ORDER BY seq",
                (row["id"],),
            )
        ]
        return SessionSummary(**data, phases=phases)

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        self._db.row_factory = sqlite3.Row
        try:
            return list(self._db.execute(sql, params))
        finally:
            self._db.row_factory = None

    def get(self, session_id: int) -> SessionSummary:
        rows = self._rows("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise CatalogError(
                f"there is no session {session_id} in the catalog {self.path}; "
                f"run `splitmirror list` to see the sessions it holds"
            )
        return self._summary(rows[0])

    def sessions(
        self, *, database: str | None = None, status: str | None = None, since: str | None = None
    ) -> list[SessionSummary]:
        clauses, params = [], []
        for column, value in (("database", database), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("started_at >= ?")
            params.append(since)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(f"SELECT * FROM sessions{where} ORDER BY id", tuple(params))
        return [self._summary(row) for row in rows]

    def files(self, session_id: int) -> list[FileRecord]:
        result = []
        for row in self._db.execute(
            "SELECT seq, member, path, logical_key, role, size, sha256, archive_offset,"
            " read_method, extents FROM files WHERE session_id = ? ORDER BY seq",
            (session_id,),
        ):
            seq, member, path, key, role, size, sha, offset, method, extents = row
            result.append(
                FileRecord(
                    seq,
                    member,
                    path,
                    tuple(json.loads(key)),
                    role,
                    size,
                    sha,
                    offset,
                    method,
                    None if extents is None else [tuple(e) for e in json.loads(extents)],
                )
            )
        return result

    def mark_pruning(self, session_id: int, *, at: str, why: str) -> None:
        self._db.execute(
            "UPDATE sessions SET pruned = 'PRUNING', pruned_at = ?, pruned_why = ?"
            " WHERE id = ? AND pruned IS NULL",
            (at, why, session_id),
        )

    def mark_pruned(self, session_id: int, *, at: str) -> None:
        self._db.execute(
            "UPDATE sessions SET pruned = 'PRUNED', pruned_at = ? WHERE id = ?", (at, session_id)
        )

    def start_drill(self, session_id: int, *, name: str, started_at: str) -> int:
        cursor = self._db.execute(
            "INSERT INTO drills (session_id, name, status, started_at) VALUES (?, ?, 'RUNNING', ?)",
            (session_id, name, started_at),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_drill(
        self, drill_id: int, *, status: str, finished_at: str, duration_ms: float, route: str,
        checks: list[str], error: str | None,
    ) -> None:  # fmt: skip
        self._db.execute(
            "UPDATE drills SET status = ?, finished_at = ?, duration_ms = ?, route = ?, checks = ?,"
            " error = ? WHERE id = ? AND status = 'RUNNING'",
            (status, finished_at, duration_ms, route, json.dumps(checks), error, drill_id),
        )

    def drills(self, *, name: str | None = None, session_id: int | None = None) -> list[DrillRecord]:
        clauses, params = [], []
        for column, value in (("name", name), ("session_id", session_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(f"SELECT * FROM drills{where} ORDER BY id", tuple(params))
        return [DrillRecord(**{**dict(row), "checks": json.loads(row["checks"])}) for row in rows]

    def one_prune_at_a_time(self, wait: float) -> contextlib.AbstractContextManager[None]:
        return locks.one_prune_at_a_time(self.path, wait)

    def drill_started(
        self, session_id: int, *, name: str, started_at: str, abandoned: Callable[[int], None]
    ) -> tuple[int, Callable[[], None]]:
        def start() -> int:
            return self.start_drill(session_id, name=name, started_at=started_at)

        return locks.drill_started(self, self.path, start, abandoned)

    def copy_in(
        self, session: SessionSummary, files: Sequence[FileRecord], drills: Sequence[DrillRecord]
    ) -> None:
        row = session.to_json()
        phases = row.pop("phases")
        for column in JSON_COLUMNS:
            row[column] = json.dumps(row[column])
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session.id,)).fetchone():
                raise CatalogError(
                    f"the catalog {self.path} already has a session {session.id}; copy into a new, "
                    "empty catalog"
                )
            columns = ", ".join(row)
            self._db.execute(
                f"INSERT INTO sessions ({columns}) VALUES ({', '.join('?' for _ in row)})",
                tuple(row.values()),
            )
            self._db.executemany(
                "INSERT INTO phases VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(session.id, seq, p["name"], p["started_at"], p["duration_ms"], p["error"], p["host"])
                 for seq, p in enumerate(phases, start=1)],
            )  # fmt: skip
            self._db.executemany(
                "INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?)", [file_row(session.id, f) for f in files]
            )
            self._db.executemany(
                "INSERT INTO drills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(d.id, session.id, d.name, d.status, d.started_at, d.finished_at, d.duration_ms,
                  d.route, json.dumps(d.checks), d.error) for d in drills],
            )  # fmt: skip
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()
