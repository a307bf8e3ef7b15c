"""A ledger workload for SQLite: writer processes commit numbered rows and log each
acknowledgement client-side, so a restore can be checked for lost transactions.

Run a writer with ``python -m splitmirror.workload DB ACKFILE [--writer N]``; it commits until
SIGTERM.  Each line of ACKFILE is the row id SQLite acknowledged (written after COMMIT
returned), so every id in the file was durable in the database at that moment.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    writer INTEGER NOT NULL,
    at REAL NOT NULL,
    payload BLOB NOT NULL
)
"""


def create_ledger(path: Path, *, rows: int = 0, payload: int = 200, wal: bool = True) -> None:
    """Create the ledger database with ``rows`` seed rows."""
    with sqlite3.connect(path) as db:
        if wal:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(SCHEMA)
        db.executemany(
            "INSERT INTO ledger (writer, at, payload) VALUES (0, ?, randomblob(?))",
            ((time.time(), payload) for _ in range(rows)),
        )
    # The with-block commits but leaves the connection open; close it explicitly.
    db.close()


def start_writer(db: Path, acks: Path, writer: int = 1, interval: float = 0.0) -> subprocess.Popen[bytes]:
    """Start a writer process; stop it with :func:`stop_writer`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "splitmirror.workload",
            str(db),
            str(acks),
            "--writer",
            str(writer),
            "--interval",
            str(interval),
        ],
    )


def stop_writer(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


def acknowledged(acks: Path) -> list[int]:
    """Row ids a writer saw committed (a torn last line, if any, is ignored)."""
    if not acks.exists():
        return []
    return [int(line) for line in acks.read_text().splitlines() if line.strip().isdigit()]


def _run(db_path: Path, ack_path: Path, writer: int, interval: float) -> None:
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    db = sqlite3.connect(db_path, timeout=120, isolation_level=None)
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while not stopping:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(
                "INSERT INTO ledger (writer, at, payload) VALUES (?, ?, randomblob(200))",
                (writer, time.time()),
            )
            db.execute("COMMIT")
            os.write(fd, f"{cursor.lastrowid}\n".encode())
            if interval:
                time.sleep(interval)
    finally:
        os.close(fd)
        db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splitmirror.workload")
    parser.add_argument("db", type=Path)
    parser.add_argument("acks", type=Path)
    parser.add_argument("--writer", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.0)
    args = parser.parse_args(argv)
    _run(args.db, args.acks, args.writer, args.interval)


if __name__ == "__main__":
    main()
