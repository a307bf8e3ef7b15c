"""The ledger workload against PostgreSQL: the same protocol as core's ``splitmirror.workload``.

Each writer process numbers its own rows 1, 2, 3... (``writer``, ``seq``), commits each row in its
own transaction and, only after COMMIT returned, appends the ``seq`` to its acknowledgement file.
A restored ledger must then hold every ``seq`` acknowledged before QUIESCE and no gap below a
writer's highest ``seq``, which a lost or torn commit would break.

Run a writer with ``python -m splitmirror_postgresql.ledger CONNINFO ACKFILE --writer N``; it
commits until SIGTERM.  CONNINFO is a libpq connection string or ``postgresql://`` URL; it never
carries a password (passwords come from the environment or the driver's own files, as for the
engine), so the argv a test shows is safe to print.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    writer int NOT NULL,
    seq int NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    payload bytea,
    PRIMARY KEY (writer, seq)
)
"""

#: Bytes of random payload per row: enough that rows spread over pages as real data would.
PAYLOAD = 200


def create_ledger(conninfo: str) -> None:
    """Create the ledger table if it does not exist (idempotent, so every test may call it)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)


def ledger_rows(conninfo: str) -> dict[int, set[int]]:
    """``{writer: {seq, ...}}`` of the ledger (writer 0 would be seed rows, as in core)."""
    rows: dict[int, set[int]] = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for writer, seq in conn.execute("SELECT writer, seq FROM ledger"):
            rows.setdefault(writer, set()).add(seq)
    return rows


def writer_command(conninfo: str, acks: Path, writer: int = 1, interval: float = 0.0) -> list[str]:
    """The argv of a writer process (what the contract suite's adapter starts)."""
    return [
        sys.executable, "-m", "splitmirror_postgresql.ledger", conninfo, str(acks),
        "--writer", str(writer), "--interval", str(interval),
    ]  # fmt: skip


def run_writer(conninfo: str, acks: Path, writer: int, interval: float = 0.0) -> None:
    """Commit rows until SIGTERM.  The acknowledgement is written after ``commit()`` returned,
    never before: that is the promise a restore is checked against."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger WHERE writer = %s", (writer,)).fetchone()
        conn.commit()
        seq = int(row[0]) if row else 0
        fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while not stopping:
                seq += 1
                conn.execute(
                    "INSERT INTO ledger (writer, seq, payload) VALUES (%s, %s, %s)",
                    (writer, seq, os.urandom(PAYLOAD)),
                )
                conn.commit()
                os.write(fd, f"{seq}\n".encode())
                if interval:
                    time.sleep(interval)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splitmirror_postgresql.ledger")
    parser.add_argument("conninfo", help="libpq connection string or postgresql:// URL, without a password")
    parser.add_argument("acks", type=Path, help="file each acknowledged seq is appended to")
    parser.add_argument("--writer", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.0, help="seconds to sleep between commits")
    args = parser.parse_args(argv)
    run_writer(args.conninfo, args.acks, args.writer, args.interval)


if __name__ == "__main__":
    main()
