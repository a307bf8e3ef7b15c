"""The ledger's writer processes, for every database: one loop, the SQL left to each plugin.

The contract suite's restore drill proves no acknowledged transaction is lost: each writer
process numbers its own rows 1, 2, 3... (``writer``, ``seq``), commits each row in its own
transaction and, only after the COMMIT returned, appends the ``seq`` to its acknowledgement
file, one per line.  A restored ledger must then hold every ``seq`` acknowledged before
QUIESCE and no gap below a writer's highest one.  The order (commit, *then* acknowledge) is
the whole promise, so it is written once, here, in :func:`run_writer`; a plugin supplies
only a :class:`LedgerConnection`, its SQL for "the highest ``seq`` so far" and "commit this
row".

A plugin's ledger module is then small::

    def main(argv=None):
        args = writer_parser("python -m my_plugin.ledger", "my:// URL, without a password").parse_args(argv)
        with my_driver.connect(args.url) as conn:
            run_writer(MyLedgerConnection(conn), args.acks, args.writer, args.interval)

and :func:`writer_command` gives the argv the plugin's ``LedgerDatabase.writer_command``
returns.  This module imports nothing but the standard library: every writer process loads it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Protocol

#: Bytes of random payload per row: enough that rows spread over pages as real data would.
PAYLOAD = 200


class LedgerConnection(Protocol):
    """One writer's connection to the ledger, in the database's own SQL."""

    def last_seq(self, writer: int) -> int:
        """The highest ``seq`` ``writer`` has committed (0 for none): a writer restarted on the
        same ledger carries on from there."""
        ...

    def commit_row(self, writer: int, seq: int, payload: bytes) -> None:
        """Insert the row (``writer``, ``seq``, ``payload``) in a transaction of its own and
        return only once its COMMIT returned."""
        ...


def run_writer(ledger: LedgerConnection, acks: Path, writer: int, interval: float = 0.0) -> None:
    """Commit rows until SIGTERM, appending each ``seq`` to ``acks`` after its commit returned,
    never before; ``interval`` seconds apart (0: as fast as the database takes them).  A
    SIGTERM lets the row being committed finish and be acknowledged, then the loop ends."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    seq = ledger.last_seq(writer)
    fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while not stopping:
            seq += 1
            ledger.commit_row(writer, seq, os.urandom(PAYLOAD))
            os.write(fd, f"{seq}\n".encode())
            if interval:
                time.sleep(interval)
    finally:
        os.close(fd)


def writer_command(
    module: str, url: str, acks: Path, writer: int = 1, interval: float = 0.0, *options: str
) -> list[str]:
    """The argv of a writer process: ``python -m MODULE URL ACKS --writer N --interval S``, then
    the plugin's own ``options`` (an option file, say).  The URL never carries a password
    (passwords come from the environment or the driver's own files, as for the engine), so
    the argv a test prints is safe to print."""
    return [
        sys.executable, "-m", module, url, str(acks),
        "--writer", str(writer), "--interval", str(interval), *options,
    ]  # fmt: skip


def writer_parser(prog: str, url_help: str) -> argparse.ArgumentParser:
    """The arguments :func:`writer_command` passes; a plugin adds its own to the parser."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("url", help=url_help)
    parser.add_argument("acks", type=Path, help="file each acknowledged seq is appended to")
    parser.add_argument("--writer", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.0, help="seconds to sleep between commits")
    return parser
