"""The SQLite engine's lock lives in a child process (engines.sqlite_holder), so nothing the
session's process opens and closes can drop it.

POSIX ``fcntl`` locks belong to the (process, inode) pair: one close of any descriptor of the
inode drops all of the process's locks on it.  These tests quiesce the engine in this process and
then open and close its files here, as the directory mirror's final pass does inside the window:
FREEZE's write lock (WAL mode: locks on ``-shm``; rollback-journal mode: on the database) and
HOT_BACKUP's pinned snapshot must survive it.  Also: a session SIGKILLed while the child waits
for the lock leaves no child and no lock, and the child's failures come back as the in-process
lock's exceptions did.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from splitmirror.engines.sqlite import QuiesceFailed, SqliteEngine
from splitmirror.phases import Mode
from splitmirror.workload import acknowledged, create_ledger, start_writer, stop_writer


def engine_for(db: Path, lock_timeout: float = 10.0) -> SqliteEngine:
    engine = SqliteEngine(f"sqlite://{db}", SqliteEngine.options_model(lock_timeout=lock_timeout))
    engine.connect()
    return engine


def digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return "gone"


def companion(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


def open_and_close_in_this_process(db: Path, seconds: float = 0.4) -> None:
    """What the directory mirror's final pass does to each file: open, read, close; repeatedly,
    so a writer waiting on its busy handler has every chance to get in."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in (db, companion(db, "-shm"), companion(db, "-wal"), companion(db, "-journal")):
            try:
                with open(path, "rb") as handle:
                    handle.read(4096)
            except FileNotFoundError:
                pass
        time.sleep(0.01)


class Writers:
    """Two ledger writers committing every half millisecond; ``acks`` counts what they saw committed."""

    def __init__(self, db: Path) -> None:
        self.files = [db.with_name(f"acks-{w}.txt") for w in (1, 2)]
        self.procs = [start_writer(db, acks, w, 0.0005) for w, acks in enumerate(self.files, 1)]

    def acks(self) -> int:
        return sum(len(acknowledged(f)) for f in self.files)

    def wait_for(self, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.acks() < count:
            assert time.monotonic() < deadline, f"the writers committed only {self.acks()} rows"
            time.sleep(0.01)

    def stop(self) -> None:
        for proc in self.procs:
            stop_writer(proc)


@pytest.fixture
def writing(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, Writers]]:
    db = tmp_path / "ledger.db"
    create_ledger(db, rows=500, wal=request.param == "wal")
    writers = Writers(db)
    try:
        writers.wait_for(50)
        yield db, writers
    finally:
        writers.stop()


@pytest.mark.parametrize("writing", ["wal", "delete"], indirect=True)
def test_freeze_holds_the_writers_while_this_process_opens_and_closes_the_files(
    writing: tuple[Path, Writers],
) -> None:
    db, writers = writing
    engine = engine_for(db)
    try:
        engine.quiesce(Mode.FREEZE)
        time.sleep(0.05)  # a commit that returned just before the lock is acknowledged by now
        acks = writers.acks()
        files = {path: digest(path) for path in (db, companion(db, "-wal"), companion(db, "-journal"))}
        open_and_close_in_this_process(db)
        assert writers.acks() == acks, "a writer committed inside the window"
        assert {path: digest(path) for path in files} == files, "a database file changed inside the window"
        engine.unquiesce()
        writers.wait_for(acks + 20)  # and they go on once it is released
    finally:
        engine.close()


CHECKPOINT = textwrap.dedent(
    """
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], timeout=0.3)
    print(*db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
    """
)


def checkpoint_elsewhere(db: Path) -> tuple[int, int, int]:
    """A TRUNCATE checkpoint from another process: it copies every frame and empties the WAL
    unless a reader's snapshot stops it."""
    out = subprocess.run(
        [sys.executable, "-c", CHECKPOINT, str(db)], capture_output=True, text=True, check=True
    )
    busy, frames, done = (int(word) for word in out.stdout.split())
    return busy, frames, done


def test_hot_backup_keeps_its_snapshot_while_this_process_opens_and_closes_the_files(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    create_ledger(db, rows=500)
    wal = companion(db, "-wal")
    engine = engine_for(db)
    try:
        engine.quiesce(Mode.HOT_BACKUP)
        writers = Writers(db)  # HOT_BACKUP lets them write: frames past our snapshot
        try:
            writers.wait_for(50)
        finally:
            writers.stop()
        header = wal.read_bytes()[:32]  # its salts change when the WAL restarts
        open_and_close_in_this_process(db, 0.1)
        busy, frames, done = checkpoint_elsewhere(db)
        assert busy == 1 and done < frames, "the checkpoint passed the pinned snapshot"
        assert wal.stat().st_size > 0 and wal.read_bytes()[:32] == header, "the WAL was restarted"
        engine.unquiesce()
        assert checkpoint_elsewhere(db)[0] == 0, "released: the checkpoint completes"
    finally:
        engine.close()


SESSION = textwrap.dedent(
    """
    import sys
    from splitmirror.engines.sqlite import SqliteEngine
    from splitmirror.phases import Mode

    engine = SqliteEngine(f"sqlite://{sys.argv[1]}", SqliteEngine.options_model(lock_timeout=60))
    engine.connect()
    print("connected", flush=True)
    engine.quiesce(Mode.FREEZE)  # waits: the test holds the write lock
    """
)


def holders_of(db: Path) -> list[int]:
    """Lock-holder processes for ``db``, found by their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(arg.endswith(b"sqlite_holder.py") for arg in argv) and str(db).encode() in argv:
            found.append(int(entry.name))
    return found


def test_a_session_killed_while_the_holder_waits_for_the_lock_leaves_no_holder(tmp_path: Path) -> None:
    """The child exits the moment its pipe from the session closes, even mid-command: the
    session's SIGKILL must not leave it to take the lock afterwards."""
    db = tmp_path / "ledger.db"
    create_ledger(db, rows=10)
    with closing(sqlite3.connect(db, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        session = subprocess.Popen(
            [sys.executable, "-c", SESSION, str(db)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert session.stdout is not None and session.stdout.readline() == b"connected\n"
        (holder,) = holders_of(db)
        time.sleep(0.2)  # the holder is polling for the lock now
        session.send_signal(signal.SIGKILL)
        session.wait()
        killed_at = time.monotonic()
        while holder in holders_of(db):
            assert time.monotonic() - killed_at < 1, "the holder outlived the session"
            time.sleep(0.01)
        blocker.execute("ROLLBACK")
    with closing(sqlite3.connect(db, timeout=0, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # nobody took the lock after the session died
        writer.execute("ROLLBACK")


def test_the_holders_failures_are_the_engines_exceptions_and_close_ends_it(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    create_ledger(db, rows=10)
    engine = engine_for(db, lock_timeout=0.2)
    (holder,) = holders_of(db)
    with closing(sqlite3.connect(db, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(QuiesceFailed, match=r"within lock_timeout \(0.2s\): database is locked; find"):
            engine.quiesce(Mode.FREEZE)
        blocker.execute("ROLLBACK")
    engine.abort()
    engine.quiesce(Mode.FREEZE)  # the same child, after a failure
    assert holders_of(db) == [holder]
    os.kill(holder, signal.SIGKILL)  # a holder gone in the window: the split is not trusted
    with pytest.raises(QuiesceFailed, match="ended unexpectedly"):
        engine.unquiesce()
    engine.abort()
    engine.close()
    assert holders_of(db) == []
