"""The ledger workload against MySQL/MariaDB: the same protocol as core's ``splitmirror.workload``.

Each writer numbers its own rows 1, 2, 3... (``writer``, ``seq``) in ``splitmirror_ledger.ledger``
(InnoDB), commits each row in its own transaction and, only after COMMIT returned, appends the
``seq`` to its acknowledgement file.  Run one with ``python -m splitmirror_mysql.ledger URL
ACKFILE --writer N``; the URL carries no password (``MYSQL_PWD`` or the option file does).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from .connection import connect

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
PAYLOAD = 200


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
    argv = [sys.executable, "-m", "splitmirror_mysql.ledger", url, str(acks), "--writer", str(writer)]
    return argv + (["--option-file", str(option_file)] if option_file else [])


def run_writer(url: str, acks: Path, writer: int, option_file: Path | None = None) -> None:
    """Commit rows until SIGTERM; acknowledge each only after its COMMIT returned."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with connect(url, option_file=option_file, database="") as conn:
        conn.autocommit(False)
        with conn.cursor() as cursor:
            cursor.execute(
                f"SELECT COALESCE(MAX(seq), 0) FROM {DATABASE}.ledger WHERE writer = %s", (writer,)
            )
            row = cursor.fetchone()
            conn.commit()
            seq = int(row[0]) if row else 0
            fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                while not stopping:
                    seq += 1
                    cursor.execute(
                        f"INSERT INTO {DATABASE}.ledger (writer, seq, payload) VALUES (%s, %s, %s)",
                        (writer, seq, os.urandom(PAYLOAD)),
                    )
                    conn.commit()
                    os.write(fd, f"{seq}\n".encode())
            finally:
                os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splitmirror_mysql.ledger")
    parser.add_argument("url", help="mysql:// or mariadb:// URL, without a password")
    parser.add_argument("acks", type=Path, help="file each acknowledged seq is appended to")
    parser.add_argument("--writer", type=int, default=1)
    parser.add_argument("--option-file", type=Path, default=None)
    args = parser.parse_args(argv)
    run_writer(args.url, args.acks, args.writer, args.option_file)


if __name__ == "__main__":
    main()
