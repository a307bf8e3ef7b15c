"""The ledger workload against PostgreSQL: its SQL for the writer loop of
:mod:`splitmirror.testing.ledger`, which says the protocol.

Run a writer with ``python -m splitmirror_postgresql.ledger CONNINFO ACKFILE --writer N``; it
commits until SIGTERM.  CONNINFO is a libpq connection string or ``postgresql://`` URL; it never
carries a password (passwords come from the environment or the driver's own files, as for the
engine), so the argv a test shows is safe to print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from splitmirror.testing import ledger

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    writer int NOT NULL,
    seq int NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    payload bytea,
    PRIMARY KEY (writer, seq)
)
"""


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
    return ledger.writer_command("splitmirror_postgresql.ledger", conninfo, acks, writer, interval)


class PostgresLedger:
    """The ledger's SQL for :func:`splitmirror.testing.ledger.run_writer`."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def last_seq(self, writer: int) -> int:
        row = self.conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM ledger WHERE writer = %s", (writer,)
        ).fetchone()
        self.conn.commit()
        return int(row[0]) if row else 0

    def commit_row(self, writer: int, seq: int, payload: bytes) -> None:
        self.conn.execute(
            "INSERT INTO ledger (writer, seq, payload) VALUES (%s, %s, %s)", (writer, seq, payload)
        )
        self.conn.commit()


def main(argv: list[str] | None = None) -> None:
    parser = ledger.writer_parser(
        "python -m splitmirror_postgresql.ledger",
        "libpq connection string or postgresql:// URL, without a password",
    )
    args = parser.parse_args(argv)
    with psycopg.connect(args.url) as conn:
        ledger.run_writer(PostgresLedger(conn), args.acks, args.writer, args.interval)


if __name__ == "__main__":
    main()
