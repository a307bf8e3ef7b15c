"""The built-in SQLite engine (standard library only).

FREEZE: ``BEGIN IMMEDIATE`` holds every writer off, then a PASSIVE
checkpoint copies every committed WAL frame into the main file, so the main file alone is the
consistent image and nothing can change it until we let go (every frame is already in it; the
WAL travels too and replays to the same pages).  The reference's order (TRUNCATE checkpoint,
then lock) loses the race to any busy writer: measured, a tight-loop writer held the window
open for seconds.  In rollback-journal mode ``BEGIN IMMEDIATE`` alone holds every writer off.

HOT_BACKUP (5.4): a read transaction pins a snapshot, so writers keep appending to the WAL but
it cannot be restarted, and checkpoints cannot pass our snapshot.  The mirror's final pass copies
the database first, then the WAL (logical order); SQLite's recovery on open replays the copied
WAL, ignoring a torn last frame.  ``-shm`` is only the shared-memory index: it is neither backed
up nor restored (SQLite rebuilds it).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pydantic

from .. import impl
from ..config import Duration
from ..engine import (
    DatabaseEngine,
    DatabaseFile,
    PreflightProblem,
    ServerInfo,
    UnquiesceResult,
)
from ..errors import PreflightError, SplitmirrorError
from ..phases import Mode
from ..restore_steps import RestoreStep

_HEADER = b"SQLite format 3\x00"


class SqliteOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    #: How long QUIESCE waits for another connection's write lock before giving up.
    lock_timeout: Duration = 10.0
    #: FREEZE: how many times to retry emptying the WAL when writers keep adding to it.
    checkpoint_attempts: int = pydantic.Field(default=20, ge=1, le=1000)


class QuiesceFailed(SplitmirrorError):
    """The database could not be brought into the requested mode."""


def sqlite_path(url: str) -> Path:
    """``sqlite:///srv/data/orders.db`` → ``/srv/data/orders.db``."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    if not rest.startswith("/"):
        raise PreflightError(
            f"the SQLite URL {url!r} does not name an absolute path; write it as "
            f"sqlite:///absolute/path/to/file.db"
        )
    return Path(rest.split("?", 1)[0])


class SqliteEngine(DatabaseEngine):
    name = "sqlite"
    url_schemes = ("sqlite",)
    options_model = SqliteOptions

    def __init__(self, url: str, options: pydantic.BaseModel) -> None:
        super().__init__(url, options)
        assert isinstance(options, SqliteOptions)
        self.settings = options
        self.path = sqlite_path(url)
        self._db: sqlite3.Connection | None = None
        self._mode: Mode | None = None
        self.journal_mode = ""

    def _companion(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "connect() first"
        return self._db

    def connect(self) -> ServerInfo:
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(len(_HEADER))
        except FileNotFoundError:
            raise PreflightError(
                f"the SQLite database {self.path} does not exist; check [database] url"
            ) from None
        except OSError as error:
            raise PreflightError(f"cannot read the SQLite database {self.path}: {error.strerror}") from None
        if header and header != _HEADER:
            raise PreflightError(f"{self.path} is not a SQLite database; check [database] url")
        self._db = sqlite3.connect(
            self.path, timeout=self.settings.lock_timeout, isolation_level=None, check_same_thread=False
        )
        self.journal_mode = str(self.db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        return ServerInfo("sqlite", sqlite3.sqlite_version, self.journal_mode)

    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        problems = []
        if mode is Mode.HOT_BACKUP and self.journal_mode != "wal":
            problems.append(
                PreflightProblem(
                    f"{self.path} uses journal_mode={self.journal_mode}, and HOT_BACKUP needs WAL",
                    'run `PRAGMA journal_mode=WAL` on it once, or use mode = "freeze"',
                )
            )
        if not os.access(self.path.parent, os.W_OK):
            problems.append(
                PreflightProblem(
                    f"cannot write in {self.path.parent}, where SQLite keeps its lock files",
                    "run splitmirror as the database's owner",
                )
            )
        return problems

    def layout(self) -> list[Path]:
        return [p for p in (self.path, *self._companions()) if p.exists()]

    def _companions(self) -> tuple[Path, ...]:
        return (self._companion("-wal"), self._companion("-journal"))

    def quiesce(self, mode: Mode) -> None:
        self._mode = mode
        if mode is Mode.HOT_BACKUP:
            self.db.execute("BEGIN")
            self.db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        elif self.journal_mode == "wal":
            self._freeze_wal()
        else:
            self._begin_immediate()

    def _begin_immediate(self) -> None:
        """Take the write lock, polling every few hundred microseconds.

        SQLite's own busy handler sleeps in steps of up to 100 ms, and a busy writer that
        commits and immediately begins again wins the lock back each time: we measured seconds of
        window lost that way.  Short polls catch the gap between two of its transactions.
        """
        deadline = time.monotonic() + self.settings.lock_timeout
        self.db.execute("PRAGMA busy_timeout = 0")
        try:
            pause = 0.0002
            while True:
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() > deadline:
                        raise QuiesceFailed(
                            f"could not take the write lock on {self.path} within lock_timeout "
                            f"({self.settings.lock_timeout:g}s): {error}; find the long transaction "
                            f"holding it, or raise lock_timeout"
                        ) from None
                time.sleep(pause)
                pause = min(pause * 1.5, 0.002)
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {int(self.settings.lock_timeout * 1000)}")

    def _freeze_wal(self) -> None:
        """Hold the write lock, then checkpoint every committed frame into the main file.

        Checkpointing first and locking second races every busy writer (it slips frames in
        between); a PASSIVE checkpoint from a second connection needs no write lock, so it runs
        while we hold it, and with no new frames possible it reaches the end of the WAL unless a
        reader still sits on an older snapshot, for which we wait briefly.
        """
        self._begin_immediate()
        deadline = time.monotonic() + self.settings.lock_timeout
        with closing(sqlite3.connect(self.path, timeout=self.settings.lock_timeout)) as helper:
            for _attempt in range(self.settings.checkpoint_attempts):
                # (1, -1, -1) means another connection's checkpoint holds the lock and may still
                # be copying frames into the main file: not done until ours sees them all in.
                busy, frames, done = helper.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy == 0 and frames >= 0 and done == frames:
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        raise QuiesceFailed(
            f"could not checkpoint the WAL of {self.path}: readers kept old snapshots open; "
            f'retry, raise checkpoint_attempts, or use mode = "hot-backup"'
        )

    def discover(self) -> list[DatabaseFile]:
        files = [DatabaseFile(self.path, (0,), "data")]
        wal, journal = self._companions()
        if wal.exists():
            files.append(DatabaseFile(wal, (1,), "wal"))
        if journal.exists():
            files.append(DatabaseFile(journal, (1,), "journal"))
        return files

    def unquiesce(self) -> UnquiesceResult:
        redo: dict[str, Any] = {}
        wal = self._companion("-wal")
        if self._mode is Mode.HOT_BACKUP and wal.exists():
            # The WAL's name only: its size now is not the archived copy's (writers append until
            # here, after the split); the archived size is the member's, in the file list.
            redo = {"wal": wal.name}
        self.db.execute("ROLLBACK")
        self._mode = None
        mode = "hot-backup" if redo else "freeze"
        return UnquiesceResult(label=f"sqlite {mode} of {self.path.name}", redo_range=redo)

    def abort(self) -> None:
        if self._db is not None and self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._mode = None

    @classmethod
    def prepare_restore(cls, directory: Path, manifest: Mapping[str, Any]) -> list[RestoreStep]:
        """Drop stale wal-index files (the restore never brings one, but the directory may have
        held the database before) and say how to check and put the copy in place."""
        steps = []
        for member in manifest.get("files", []):
            if member.get("role") != "data":
                continue
            restored = directory / member["member"]
            shm = restored.with_name(restored.name + "-shm")
            if shm.exists():
                shm.unlink()
            original = member.get("path") or restored.name
            steps += [
                RestoreStep.run("sqlite3", restored, "PRAGMA integrity_check", comment="prints ok"),
                RestoreStep.manual(
                    f"stop the application, then move {restored} to {original} (and {restored}-wal, "
                    f"if present, to {original}-wal)"
                ),
            ]
        return steps

    def close(self) -> None:
        if self._db is not None:
            try:
                self.abort()
            finally:
                self._db.close()  # closing also releases any lock the rollback could not
                self._db = None


@impl
def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
    register(SqliteEngine)
