"""The SQLite engine's lock holder: a small child process that owns the quiescing connection.

Why a process of its own: SQLite locks with POSIX ``fcntl`` record locks, which belong to the
(process, inode) pair, and closing *any* descriptor of that inode in the process drops *all* of
the process's locks on it.  SQLite shields its own connections in one process from this (it
defers their closes), but nothing else: the session's mirror copies every file of the primary
in the window, in the session's process, ``ledger.db-shm`` (where WAL mode keeps its locks) and,
in rollback-journal mode, the database itself (where that mode keeps them) among them.  Each
close of those copies silently dropped FREEZE's write lock or HOT_BACKUP's pinned snapshot, and
writers committed inside the window.  A lock held by another process cannot be dropped by
anything the session's process opens or closes.

The child runs this file as a script (``python -I sqlite_holder.py PATH LOCK_TIMEOUT
ATTEMPTS``, standard library only, so it starts in a few tens of milliseconds) when the engine
connects, before the window: QUIESCE only sends a command and waits for the answer.  One JSON
line each way per command: ``{"do": "freeze" | "freeze-wal" | "hot-backup" | "release"}``;
answers ``{"ok": true}`` (``release`` adds ``"held"``: whether a transaction was still open),
``{"error": "lock" | "checkpoint", "detail": ...}`` or ``{"error": "exception", "type": ...,
"detail": ...}``.  The child's first line says ``{"ready": true}`` once its connection is open.

It dies with the session: a thread of its own reads the commands and exits the process as soon as
the pipe from the session reaches end of file, which the kernel makes happen the instant the
session's process dies (SIGKILL and the OOM killer included), even while the child is busy
polling for the lock; exiting releases every lock it held.  (``PR_SET_PDEATHSIG`` would fire
when the *thread* that started the child ends, not the process: not used.)  It runs in a session
of its own, so a Ctrl-C at the terminal reaches only the session, which releases it in order.
"""

from __future__ import annotations

import json
import os
import queue
import select
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing, suppress
from pathlib import Path
from typing import IO, Any

#: How long a ``release`` may take to answer (a ROLLBACK of a transaction that wrote nothing).
RELEASE_TIMEOUT_S = 10.0


class HolderLost(Exception):
    """The child did not answer: it died, or was killed because it hung.  Its locks are gone."""


class LockHolder:
    """The session's side: start the child, ask it to take or leave the lock, end it."""

    def __init__(self, path: Path, lock_timeout: float, attempts: int) -> None:
        self.path, self.lock_timeout, self.attempts = path, float(lock_timeout), attempts
        self._process: subprocess.Popen[bytes] | None = None
        #: A command was sent and its answer never read (interrupted, timed out): the child's
        #: state is unknown, so the only safe release is to end it.
        self._unanswered = False

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None and not self._unanswered

    def start(self) -> None:
        self._unanswered = True  # until it says it is ready
        self._process = subprocess.Popen(
            [sys.executable, "-I", __file__, str(self.path), str(self.lock_timeout), str(self.attempts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,
        )
        answer = self._answer(self.lock_timeout + 30)  # {"ready": true} once its connection is open
        if not answer.get("ready"):
            self.kill()
            raise HolderLost(f"it could not open the database: {answer.get('detail')}")

    def ask(self, command: str) -> dict[str, Any]:
        """Send ``command`` and wait for the answer; :class:`HolderLost` when none comes."""
        process = self._process
        if process is None or process.stdin is None or not self.alive:
            raise HolderLost("it is not running")
        self._unanswered = True
        try:
            process.stdin.write(json.dumps({"do": command}).encode() + b"\n")
            process.stdin.flush()
        except OSError as error:
            self.kill()
            raise HolderLost(f"it stopped reading commands ({error.strerror})") from None
        # Taking the lock waits up to lock_timeout, then FREEZE's checkpoint as long again.
        return self._answer(RELEASE_TIMEOUT_S if command == "release" else 2 * self.lock_timeout + 5)

    def _answer(self, timeout: float) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if readable else b""
        if not line:
            why = "it exited" if readable else f"it did not answer within {timeout:g}s"
            self.kill()
            raise HolderLost(why)
        self._unanswered = False
        answer: dict[str, Any] = json.loads(line)
        return answer

    def release(self) -> dict[str, Any] | None:
        """End the transaction, or the child itself when it cannot be asked; None then."""
        if self._process is None:
            return None
        if self.alive:
            try:
                return self.ask("release")
            except HolderLost:
                pass
        self.kill()
        return None

    def kill(self) -> None:
        """End the child at once: the kernel drops its locks as it exits."""
        if self._process is not None:
            self._process.kill()
            self._finish(self._process)

    def stop(self) -> None:
        """End the child in order: it exits when its pipe closes."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
        self._finish(process)

    def _finish(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with suppress(OSError):
                    stream.close()
        self._process = None
        self._unanswered = False


class _Failure(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind, self.detail = kind, detail


class _Quiescer:
    """The child's side: the connection that holds the lock, and what it does on command."""

    def __init__(self, path: str, lock_timeout: float, attempts: int) -> None:
        self.path, self.lock_timeout, self.attempts = path, lock_timeout, attempts
        self.db = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None)

    def run(self, command: str) -> dict[str, Any]:
        try:
            if command == "release":
                held = self.db.in_transaction
                if held:
                    self.db.execute("ROLLBACK")
                return {"ok": True, "held": held}
            if command == "hot-backup":
                self.db.execute("BEGIN")
                self.db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            elif command == "freeze-wal":
                self._freeze_wal()
            elif command == "freeze":
                self._begin_immediate()
            else:
                raise ValueError(f"unknown command {command!r}")
            return {"ok": True}
        except _Failure as failure:
            return {"error": failure.kind, "detail": failure.detail}
        except (sqlite3.Error, ValueError) as error:  # anything else ends the child: HolderLost
            return {"error": "exception", "type": type(error).__name__, "detail": str(error)}

    def _begin_immediate(self) -> None:
        """Take the write lock, polling every few hundred microseconds.

        SQLite's own busy handler sleeps in steps of up to 100 ms, and a busy writer that
        commits and immediately begins again wins the lock back each time: we measured seconds of
        window lost that way.  Short polls catch the gap between two of its transactions.
        """
        deadline = time.monotonic() + self.lock_timeout
        self.db.execute("PRAGMA busy_timeout = 0")
        try:
            pause = 0.0002
            while True:
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() > deadline:
                        raise _Failure("lock", str(error)) from None
                time.sleep(pause)
                pause = min(pause * 1.5, 0.002)
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")

    def _freeze_wal(self) -> None:
        """Hold the write lock, then checkpoint every committed frame into the main file.

        Checkpointing first and locking second races every busy writer (it slips frames in
        between); a PASSIVE checkpoint from a second connection needs no write lock, so it runs
        while we hold it, and with no new frames possible it reaches the end of the WAL unless a
        reader still sits on an older snapshot, for which we wait briefly.  On failure the lock
        is let go: QUIESCE either succeeds or holds nothing.
        """
        self._begin_immediate()
        deadline = time.monotonic() + self.lock_timeout
        with closing(sqlite3.connect(self.path, timeout=self.lock_timeout)) as helper:
            for _attempt in range(self.attempts):
                # (1, -1, -1) means another connection's checkpoint holds the lock and may still
                # be copying frames into the main file: not done until ours sees them all in.
                busy, frames, done = helper.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy == 0 and frames >= 0 and done == frames:
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        self.db.execute("ROLLBACK")
        raise _Failure("checkpoint")


def _read_commands(stream: IO[bytes], commands: queue.SimpleQueue[str]) -> None:
    try:
        for line in stream:
            commands.put(json.loads(line)["do"])
    finally:
        os._exit(0)  # the session closed the pipe or died: our locks go with us, whatever we were doing


def _say(answer: dict[str, Any]) -> None:
    sys.stdout.buffer.write(json.dumps(answer).encode() + b"\n")
    sys.stdout.buffer.flush()


def main(argv: list[str]) -> None:
    path, lock_timeout, attempts = argv[0], float(argv[1]), int(argv[2])
    commands: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=_read_commands, args=(sys.stdin.buffer, commands), daemon=True).start()
    try:
        quiescer = _Quiescer(path, lock_timeout, attempts)
    except sqlite3.Error as error:
        _say({"error": "exception", "type": type(error).__name__, "detail": str(error)})
        return
    _say({"ready": True})
    while True:
        _say(quiescer.run(commands.get()))


if __name__ == "__main__":
    main(sys.argv[1:])
