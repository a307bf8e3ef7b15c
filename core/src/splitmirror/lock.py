"""One session per configuration at a time (and, in :mod:`.mirror.ownership`, per mirror).

Each lock is an ``flock`` on a file of its own.  The kernel drops an ``flock`` when its holder
dies, however it dies, so a SIGKILLed session never leaves a lock stuck; the holder's pid, start
time and configuration are written into the file only so a refused session can name it.
"""

from __future__ import annotations

import abc
import datetime as dt
import fcntl
import hashlib
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import CatalogError, SessionBusyError, UserError
from .paths import ensure_private_dir


class HolderLock(abc.ABC):
    """An exclusive, non-blocking ``flock`` on :attr:`path`, naming its holder inside."""

    def __init__(self, path: Path, config: str) -> None:
        self.path = path
        self.config = config
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    @abc.abstractmethod
    def _cannot_create(self, error: OSError) -> UserError:
        """The sentence for a lock file that cannot be created or opened."""

    @abc.abstractmethod
    def _busy(self, holder: dict[str, Any]) -> UserError:
        """The sentence for a lock someone else holds; ``holder`` is what it wrote (or empty)."""

    def _prepare(self) -> None:  # noqa: B027 - optional: only some locks make their directory
        """Make the lock file's directory, where that is the lock's own business."""

    def acquire(self) -> None:
        """Take the lock, or raise :meth:`_busy`'s error; taking a lock already held is a no-op."""
        if self.held:
            return
        try:
            self._prepare()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise self._cannot_create(error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise self._busy(holder) from None
        os.ftruncate(fd, 0)
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        os.pwrite(
            fd, json.dumps({"pid": os.getpid(), "started_at": started, "config": self.config}).encode(), 0
        )
        self._fd = fd

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any]:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (ValueError, OSError):
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def describe(holder: dict[str, Any]) -> str:
        """``pid 42, started 2026-11-24T08:00:00+00:00``, or ``holder unknown``."""
        if "pid" not in holder or "started_at" not in holder:
            return "holder unknown"
        return f"pid {holder['pid']}, started {holder['started_at']}"

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1

    def __enter__(self) -> HolderLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class SessionLock(HolderLock):
    """One session per configuration: a lock file per configuration beside the catalog."""

    def __init__(self, directory: Path, key: str, label: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        super().__init__(directory / f"{label}-{digest}.lock", key)
        self.key = key

    def _prepare(self) -> None:
        ensure_private_dir(self.path.parent)

    def _cannot_create(self, error: OSError) -> UserError:
        return CatalogError(
            f"cannot create the session lock {self.path} ({error.strerror}); point "
            f"[session] catalog or $SPLITMIRROR_CATALOG at a writable directory"
        )

    def _busy(self, holder: dict[str, Any]) -> UserError:
        return SessionBusyError(
            f"another session is already running for {self.key} ({self.describe(holder)}); wait for "
            f"it to finish, or stop it if it hangs"
        )
