"""The ledger workload against MySQL/MariaDB: its SQL (``splitmirror_ledger.ledger``, InnoDB)
for the writer loop of :mod:`splitmirror.testing.ledger`, which says the protocol.

Run one with ``python -m splitmirror_mysql.ledger URL ACKFILE --writer N``; the URL carries no
password (``MYSQL_PWD`` or the option file does).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from splitmirror.testing import ledger

from .connection import connect

if TYPE_CHECKING:  # not imported at run time: a writer process loads as little as it can
    from .locks import Connection

DATABASE = "splitmirror_ledger"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {DATABASE}.ledger (
    writer INT NOT NULL,
    seq INT NOT NULL,
    at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    payload VARBINARY(200),
    PRIMARY KEY (writer, seq)
) ENGINE=InnoDB
"""


def create_ledger(url: str, option_file: Path | None = None) -> None:
    """Create the database and ledger table if missing (idempotent)."""
    with connect(url, option_file=option_file, database="") as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        cursor.execute(SCHEMA)


def ledger_rows(url: str, option_file: Path | None = None) -> dict[int, set[int]]:
    rows: dict[int, set[int]] = {}
    with connect(url, option_file=option_file, database="") as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT writer, seq FROM {DATABASE}.ledger")
        for writer, seq in cursor.fetchall():
            rows.setdefault(int(writer), set()).add(int(seq))
    return rows


def writer_command(url: str, acks: Path, writer: int, option_file: Path | None = None) -> list[str]:
    options = ["--option-file", str(option_file)] if option_file else []
    return ledger.writer_command("splitmirror_mysql.ledger", url, acks, writer, 0.0, *options)


class MysqlLedger:
    """The ledger's SQL for :func:`splitmirror.testing.ledger.run_writer` (autocommit off)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def last_seq(self, writer: int) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute(
                f"SELECT COALESCE(MAX(seq), 0) FROM {DATABASE}.ledger WHERE writer = %s", (writer,)
            )
            row = cursor.fetchone()
        self.conn.commit()
        return int(row[0]) if row else 0

    def commit_row(self, writer: int, seq: int, payload: bytes) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {DATABASE}.ledger (writer, seq, payload) VALUES (%s, %s, %s)",
                (writer, seq, payload),
            )
        self.conn.commit()


def main(argv: list[str] | None = None) -> None:
    parser = ledger.writer_parser(
        "python -m splitmirror_mysql.ledger", "mysql:// or mariadb:// URL, without a password"
    )
    parser.add_argument("--option-file", type=Path, default=None)
    args = parser.parse_args(argv)
    with connect(args.url, option_file=args.option_file, database="") as conn:
        conn.autocommit(False)
        ledger.run_writer(MysqlLedger(conn), args.acks, args.writer, args.interval)


if __name__ == "__main__":
    main()
