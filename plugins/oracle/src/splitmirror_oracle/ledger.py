"""The ledger workload against Oracle: its SQL (table ``LEDGER`` in the application user's schema
of a pluggable database) for the writer loop of :mod:`splitmirror.testing.ledger`, which says
the protocol.

Run one with ``python -m splitmirror_oracle.ledger URL ACKFILE --writer N --password-file F``;
the URL (``oracle://APPUSER@HOST:PORT/FREEPDB1``, a plain login) carries no password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitmirror.testing import ledger

from .connection import connect

SCHEMA = """
CREATE TABLE ledger (
    writer NUMBER(10) NOT NULL,
    seq NUMBER(10) NOT NULL,
    at TIMESTAMP(6) DEFAULT SYSTIMESTAMP NOT NULL,
    payload RAW(200),
    CONSTRAINT ledger_pk PRIMARY KEY (writer, seq)
)
"""


def _connect(url: str, password_file: Path) -> Any:
    return connect(url, privilege="none", password_file=password_file, timeout=5, call_timeout=60)


def create_ledger(url: str, password_file: Path) -> None:
    """Create the ledger table if missing (idempotent)."""
    with _connect(url, password_file) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM user_tables WHERE table_name = 'LEDGER'")
        if not cursor.fetchone()[0]:
            cursor.execute(SCHEMA)


def ledger_rows(url: str, password_file: Path) -> dict[int, set[int]]:
    rows: dict[int, set[int]] = {}
    with _connect(url, password_file) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT writer, seq FROM ledger")
        for writer, seq in cursor.fetchall():
            rows.setdefault(int(writer), set()).add(int(seq))
    return rows


def writer_command(url: str, acks: Path, writer: int, password_file: Path) -> list[str]:
    return ledger.writer_command(
        "splitmirror_oracle.ledger", url, acks, writer, 0.0, "--password-file", str(password_file)
    )


class OracleLedger:
    """The ledger's SQL for :func:`splitmirror.testing.ledger.run_writer` (autocommit off)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def last_seq(self, writer: int) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT NVL(MAX(seq), 0) FROM ledger WHERE writer = :1", [writer])
            row = cursor.fetchone()
        self.conn.commit()
        return int(row[0]) if row else 0

    def commit_row(self, writer: int, seq: int, payload: bytes) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ledger (writer, seq, payload) VALUES (:1, :2, :3)", [writer, seq, payload]
            )
        self.conn.commit()


def main(argv: list[str] | None = None) -> None:
    parser = ledger.writer_parser(
        "python -m splitmirror_oracle.ledger", "oracle://USER@HOST:PORT/PDB URL, without a password"
    )
    parser.add_argument("--password-file", type=Path, required=True)
    args = parser.parse_args(argv)
    with _connect(args.url, args.password_file) as conn:
        conn.autocommit = False
        ledger.run_writer(OracleLedger(conn), args.acks, args.writer, args.interval)


if __name__ == "__main__":
    main()
