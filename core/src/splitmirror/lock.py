"""One session per configuration at a time.

The lock is an ``flock`` on a file beside the catalog.  The kernel drops an ``flock`` when its
holder dies, however it dies, so a SIGKILLed session never leaves the lock stuck; the holder's
pid and start time are written into the file only so a refused session can name it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from pathlib import Path
from types import TracebackType

from .errors import CatalogError, SessionBusyError
from .paths import ensure_private_dir


class SessionLock:
    def __init__(self, directory: Path, key: str, label: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.path = directory / f"{label}-{digest}.lock"
        self.key = key
        self._fd = -1

    def acquire(self) -> None:
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise CatalogError(
                f"cannot create the session lock {self.path} ({error.strerror}); point "
                f"[session] catalog or $SPLITMIRROR_CATALOG at a writable directory"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise SessionBusyError(
                f"another session is already running for {self.key} ({holder}); wait for it to "
                f"finish, or stop it if it hangs"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {"pid": os.getpid(), "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            ).encode(),
            0,
        )
        self._fd = fd

    @staticmethod
    def _read_holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {info['pid']}, started {info['started_at']}"
        except (ValueError, KeyError, OSError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1

    def __enter__(self) -> SessionLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
