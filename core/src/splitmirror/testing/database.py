"""What a database plugin hands the contract suite: a live database and its ledger operations.

The suite never speaks SQL itself; each plugin implements :class:`LedgerDatabase` for its
database (SQLite's is :class:`SqliteLedgerDatabase`, below, and doubles as the example).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from .. import workload
from ..restore import RestoreResult as RestoreResult  # re-exported by splitmirror.testing
from .steps import run_host_steps


@dataclasses.dataclass(frozen=True)
class RestoredLedger:
    """What was found in a restored copy: did it open and pass its own check, and which rows."""

    integrity_ok: bool
    integrity: str  # the database's own words, e.g. "ok" or pg_amcheck's output
    rows: Mapping[int, set[int]]  # writer -> the seq numbers present


class LedgerDatabase(abc.ABC):
    """A live database on a primary, with a ledger table the drill writes into.

    The ledger is ``(writer, seq)``: each writer process numbers its own rows from 1 and, after
    each COMMIT returns, appends the ``seq`` to its acknowledgement file, one per line.
    """

    #: ``[database] url`` for the session.
    url: str
    #: The directory holding every file of the database (``[mirror] primary``).
    primary: Path
    #: Extra ``[database]`` keys (engine options), as TOML-ready values.
    options: Mapping[str, Any] = {}

    @abc.abstractmethod
    def create_ledger(self) -> None:
        """Create the database (if needed) and an empty ledger table.  Its files must not be
        empty (a real database's have a header at least): the fault matrix acts on BACKUP's
        first bytes."""

    @abc.abstractmethod
    def writer_command(self, writer: int, acks: Path) -> list[str]:
        """argv of a process that commits ledger rows as ``writer`` until SIGTERM, appending each
        acknowledged ``seq`` to ``acks``."""

    @abc.abstractmethod
    def accepts_writes(self) -> bool:
        """True when the live database takes a write within about a second (nothing holds it)."""

    @abc.abstractmethod
    def files_in_use(self) -> set[Path]:
        """Every file the database needs in a backup, found independently of the engine's own
        discovery (the contract checks discovery against this)."""

    @abc.abstractmethod
    def restored_ledger(self, restore: RestoreResult) -> RestoredLedger:
        """Start (or open) the database restored into ``restore.directory`` **by executing the
        steps the restore returned** (``restore.steps``: what ``splitmirror restore`` printed;
        :mod:`splitmirror.testing.steps` runs them), with no server option of your own; run its
        own integrity check and read the ledger.  A copy that only starts with options the
        harness adds is a restore a DBA cannot start."""

    # -- optional, for the fault matrix (splitmirror.testing.faults) ---------------------------

    def leftovers(self) -> list[str]:
        """What a session may have left held on the live database (a backend, a slot, a lock),
        in words; empty when nothing is."""
        return []

    def kill_connections(self) -> int:
        """Kill every other client connection from the server's side (the session's among them)
        and return how many; :class:`NotImplementedError` where there is no server."""
        raise NotImplementedError(f"{type(self).__name__} has no server connection to kill")

    def blocker(self, mode: str) -> contextlib.AbstractContextManager[None] | None:
        """A context manager holding what makes ``mode``'s quiesce wait (an open write
        transaction, a table lock), or None when nothing a client does can make it wait."""
        return None


def committed_within(timeout: float, write: Callable[[], None], errors: tuple[type[Exception], ...]) -> bool:
    """Whether ``write`` (a committed write to the live database, on a connection of its own)
    returned within ``timeout`` seconds without raising one of the driver's ``errors``: what a
    server database's :meth:`LedgerDatabase.accepts_writes` answers.  The COMMIT matters: an
    uncommitted write only touches the server's buffers and succeeds even on a frozen
    filesystem.  The write runs in a daemon thread, because a server stuck on a frozen
    filesystem ignores its own statement timeouts (a backend in ``fsync``); a late write is
    abandoned, and finishes once the database is released."""
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            write()
            outcome.append(True)
        except errors:
            outcome.append(False)

    thread = threading.Thread(target=attempt, name="accepts_writes", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(outcome) and outcome[0]


#: A write transaction held until standard input closes (run with the database's path).
_HOLD_WRITE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=1, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


class SqliteLedgerDatabase(LedgerDatabase):
    """The built-in SQLite engine's side of the contract (WAL mode, so both modes apply)."""

    def __init__(self, primary: Path, name: str = "ledger.db") -> None:
        self.primary = primary
        self.path = primary / name
        self.url = f"sqlite://{self.path}"
        self.options = {}

    def create_ledger(self) -> None:
        workload.create_ledger(self.path)

    def writer_command(self, writer: int, acks: Path) -> list[str]:
        # A breath between commits: SQLite has no lock queue, and tight-loop writers starve each
        # other for seconds (measured: a drill took 17 s before every writer had 20 rows, 0.5 s with this).
        return workload.writer_command(self.path, acks, writer, interval=0.0005)

    def accepts_writes(self) -> bool:
        with closing(sqlite3.connect(self.path, timeout=1, isolation_level=None)) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return False
            db.execute("ROLLBACK")
            return True

    def files_in_use(self) -> set[Path]:
        # The database, and its WAL or rollback journal; -shm is only an index SQLite rebuilds.
        candidates = [self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-journal"))]
        return {path for path in candidates if path.exists()}

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        """Held by a child process, as the engine holds its own (:mod:`..engines.sqlite_holder`):
        held here, the first close of a database file in this process, where the suite's
        sessions run, would drop it (POSIX record locks), and the session would not wait."""
        with subprocess.Popen(
            [sys.executable, "-c", _HOLD_WRITE_LOCK, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ) as holder:
            assert holder.stdin is not None and holder.stdout is not None
            try:
                if holder.stdout.readline() != b"held\n":
                    raise RuntimeError(f"could not take the write lock on {self.path} for the test")
                yield
            finally:
                holder.stdin.close()  # it rolls back and exits
                holder.wait(timeout=30)

    def blocker(self, mode: str) -> contextlib.AbstractContextManager[None] | None:
        """An open write transaction: FREEZE waits for SQLite's write lock behind it
        (HOT_BACKUP takes only a read snapshot and does not wait)."""
        return self._write_transaction() if mode == "freeze" else None

    def restored_ledger(self, restore: RestoreResult) -> RestoredLedger:
        """The printed steps check the copy where it lies (``sqlite3 ... 'PRAGMA integrity_check'``)
        and leave moving it into place to a person; the ledger is read there too."""
        for process in run_host_steps(restore.steps):
            process.wait()  # SQLite prints no step that starts a server; none runs for long
        restored = restore.directory / self.path.name
        with closing(sqlite3.connect(restored)) as db:
            integrity = "\n".join(row[0] for row in db.execute("PRAGMA integrity_check"))
        return RestoredLedger(integrity == "ok", integrity, workload.ledger_rows(restored))
