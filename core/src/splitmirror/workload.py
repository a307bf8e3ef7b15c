"""The SQLite ledger workload: writer processes commit numbered rows and log each
acknowledgement client-side, so a restore can be checked for lost transactions.

Every writer numbers its own rows 1, 2, 3... (``writer``, ``seq``), so a restored ledger must hold,
for every writer, every ``seq`` it acknowledged before QUIESCE and no gap below its highest
``seq``: numbering that cannot be confused by another writer's rollback or by the database's own
id allocation.  Run a writer with ``python -m splitmirror.workload DB ACKFILE --writer N``; it
commits until SIGTERM, appending each ``seq`` to ACKFILE after COMMIT returned.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

from .testing import ledger

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    writer INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (writer, seq)
)
"""


def create_ledger(path: Path, *, rows: int = 0, payload: int = 200, wal: bool = True) -> None:
    """Create the ledger database with ``rows`` seed rows (writer 0)."""
    with closing(sqlite3.connect(path)) as db:
        if wal:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(SCHEMA)
        db.executemany(
            "INSERT INTO ledger (writer, seq, at, payload) VALUES (0, ?, ?, randomblob(?))",
            ((seq, time.time(), payload) for seq in range(1, rows + 1)),
        )
        db.commit()


def writer_command(db: Path, acks: Path, writer: int = 1, interval: float = 0.0) -> list[str]:
    """The argv of a writer process (what the contract suite's SQLite adapter starts)."""
    return ledger.writer_command("splitmirror.workload", str(db), acks, writer, interval)


def start_writer(db: Path, acks: Path, writer: int = 1, interval: float = 0.0) -> subprocess.Popen[bytes]:
    """Start a writer process; stop it with :func:`stop_writer`."""
    return subprocess.Popen(writer_command(db, acks, writer, interval))


def stop_writer(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


def acknowledged(acks: Path) -> list[int]:
    """The ``seq`` numbers a writer saw committed (a torn last line, if any, is ignored)."""
    if not acks.exists():
        return []
    return [int(line) for line in acks.read_text().splitlines() if line.strip().isdigit()]


def ledger_rows(db: Path) -> dict[int, set[int]]:
    """``{writer: {seq, ...}}`` of a ledger database (writer 0 is the seed)."""
    rows: dict[int, set[int]] = {}
    with closing(sqlite3.connect(db)) as conn:
        for writer, seq in conn.execute("SELECT writer, seq FROM ledger"):
            rows.setdefault(writer, set()).add(seq)
    return rows


class _SqliteLedger:
    """The ledger's SQL for :func:`splitmirror.testing.ledger.run_writer`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def last_seq(self, writer: int) -> int:
        (seq,) = self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM ledger WHERE writer = ?", (writer,)
        ).fetchone()
        return int(seq)

    def commit_row(self, writer: int, seq: int, payload: bytes) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(
            "INSERT INTO ledger (writer, seq, at, payload) VALUES (?, ?, ?, ?)",
            (writer, seq, time.time(), payload),
        )
        self.db.execute("COMMIT")


def main(argv: list[str] | None = None) -> None:
    args = ledger.writer_parser("python -m splitmirror.workload", "the SQLite database file").parse_args(argv)
    with closing(sqlite3.connect(args.url, timeout=120, isolation_level=None)) as db:
        ledger.run_writer(_SqliteLedger(db), args.acks, args.writer, args.interval)


if __name__ == "__main__":
    main()
