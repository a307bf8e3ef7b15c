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

The connection that holds either lives in a child process (:mod:`.sqlite_holder`), started at
:meth:`SqliteEngine.connect`, never in the session's: SQLite's locks are POSIX ``fcntl`` locks,
which a process loses all of on an inode when it closes *any* descriptor of it, and the mirror's
final pass opens and closes every file of the primary inside the window (``-shm``, where WAL
mode locks; the database, where rollback-journal mode does).  In the session's process that
silently let the writers in mid-window.  The child dies with the session's process.
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
from ..drillcopy import DrillCopy, DrillFailed, answer
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
from .sqlite_holder import HolderLost, LockHolder

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
        self._holder: LockHolder | None = None
        self._mode: Mode | None = None
        self.journal_mode = ""

    def _companion(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

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
        with closing(sqlite3.connect(self.path, timeout=self.settings.lock_timeout)) as db:
            self.journal_mode = str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        self._start_holder()  # now, outside the window: QUIESCE only has to ask it
        return ServerInfo("sqlite", sqlite3.sqlite_version, self.journal_mode)

    def _start_holder(self) -> LockHolder:
        if self._holder is not None and self._holder.alive:
            return self._holder
        if self._holder is not None:
            self._holder.kill()
        # Ours before it starts: a signal mid-start leaves abort() something to end.
        holder = self._holder = LockHolder(
            self.path, self.settings.lock_timeout, self.settings.checkpoint_attempts
        )
        try:
            holder.start()
        except (OSError, HolderLost) as error:
            self._holder = None
            raise PreflightError(
                f"could not start the process that holds the lock on {self.path}: {error}"
            ) from None
        return holder

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
            command = "hot-backup"
        else:
            command = "freeze-wal" if self.journal_mode == "wal" else "freeze"
        try:
            answer = self._start_holder().ask(command)
        except HolderLost as lost:
            raise QuiesceFailed(self._lost(lost)) from None
        self._raise_for(answer)

    def _raise_for(self, answer: Mapping[str, Any]) -> None:
        """The child's failure, raised here as the exception the lock taken in-process raised."""
        error = answer.get("error")
        if error is None:
            return
        if error == "lock":
            raise QuiesceFailed(
                f"could not take the write lock on {self.path} within lock_timeout "
                f"({self.settings.lock_timeout:g}s): {answer['detail']}; find the long transaction "
                f"holding it, or raise lock_timeout"
            )
        if error == "checkpoint":
            raise QuiesceFailed(
                f"could not checkpoint the WAL of {self.path}: readers kept old snapshots open; "
                f'retry, raise checkpoint_attempts, or use mode = "hot-backup"'
            )
        kind = getattr(sqlite3, str(answer.get("type")), None)
        if isinstance(kind, type) and issubclass(kind, sqlite3.Error):
            raise kind(answer["detail"])
        raise SplitmirrorError(f"quiescing {self.path} failed: {answer.get('type')}: {answer.get('detail')}")

    def _lost(self, lost: HolderLost) -> str:
        return (
            f"the process holding the lock on {self.path} ended unexpectedly ({lost}); nothing "
            f"is held any more, so no split taken under it can be trusted"
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
        self._mode = None
        try:
            answer = self._holder.ask("release") if self._holder is not None else {}
        except HolderLost as lost:
            raise QuiesceFailed(self._lost(lost)) from None
        if not answer.get("held"):
            raise QuiesceFailed(f"the lock on {self.path} was gone by UNQUIESCE; the split is not trusted")
        mode = "hot-backup" if redo else "freeze"
        return UnquiesceResult(label=f"sqlite {mode} of {self.path.name}", redo_range=redo)

    def abort(self) -> None:
        self._mode = None
        if self._holder is not None:
            self._holder.release()  # ends the child instead when it cannot be asked

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

    @classmethod
    def drill_check(cls, copy: DrillCopy) -> list[str]:
        """Open each restored database (which replays its WAL into the copy), run ``PRAGMA
        integrity_check`` and the DBA's query there."""
        checks = []
        for member in copy.manifest.get("files", []):
            if member.get("role") != "data":
                continue
            name = member["member"]
            try:
                with closing(sqlite3.connect(copy.directory / name)) as db:
                    # [drill] timeout: SQLite checks the handler every 10,000 steps and stops
                    db.set_progress_handler(lambda: time.monotonic() > copy.deadline, 10_000)
                    said = [str(row[0]) for row in db.execute("PRAGMA integrity_check")]
                    if said != ["ok"]:
                        raise DrillFailed(f"PRAGMA integrity_check on {name} says: {'; '.join(said[:3])}")
                    checks.append(f"PRAGMA integrity_check: ok ({name})")
                    if copy.query:
                        try:
                            checks.append(f"query: {answer(db.execute(copy.query).fetchall())} ({name})")
                        except sqlite3.Error as error:
                            raise DrillFailed(
                                f"[drill] query failed on {name}: {_why(error, copy)}"
                            ) from None
            except sqlite3.Error as error:
                raise DrillFailed(f"the restored {name} cannot be checked: {_why(error, copy)}") from None
        return checks

    def close(self) -> None:
        if self._holder is not None:
            try:
                self.abort()
            finally:
                self._holder.stop()  # its exit also releases any lock the rollback could not
                self._holder = None


def _why(error: sqlite3.Error, copy: DrillCopy) -> str:
    return "it did not finish within [drill] timeout" if copy.left() == 0 else str(error)


@impl
def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
    register(SqliteEngine)
