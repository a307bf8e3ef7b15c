"""The interface of a sequential archive target, and the record blocking every target shares.

Tape drives want every write to be exactly one record (``block_size`` bytes, 64-256 KiB), so all
output goes through :class:`Target.write`, which cuts it into records and pads the last one with
zeros, as ``tar -b`` does.  It hands whole records to the medium about :data:`WRITE_BATCH` bytes at
a time (the tape target writes them one record a call): a system call per 10 KiB record cost more
than the copy it saves (an archive of 10,000 small members made 17,500 writes).  A seekable
target (a plain file) can also :meth:`Target.patch` bytes already written: the archive writer
uses that to fill in a member's checksum record once its data has streamed; on the others the
checksum is the manifest's to carry (docs/archive.md).
"""

from __future__ import annotations

import abc
import errno
from collections.abc import Callable
from typing import Any, ClassVar, Self

from ..config import TargetConfig, expand_target_path
from ..engine import PreflightProblem
from ..errors import UserError

#: Whole records are gathered up to this many bytes (rounded down to a whole record, at least
#: one) before they are emitted; whole records making half of it or more go out as they are.
WRITE_BATCH = 1 << 20


class TargetError(UserError):
    """The target could not be written (a tape error, an I/O error on the disk)."""

    exit_code = 1


class TargetFull(TargetError):
    """The target ran out of space."""

    exit_code = 1


class Target(abc.ABC):
    """A place an archive stream goes.  Subclasses register via ``splitmirror_register_targets``."""

    name: ClassVar[str]
    #: True when bytes already written can be rewritten in place (see :meth:`patch`).
    seekable: ClassVar[bool] = False

    def __init__(self, path: str, block_size: int) -> None:
        self.path = path
        self.block_size = block_size
        self._buffer = bytearray()  # always shorter than _batch
        self._batch = max(1, WRITE_BATCH // block_size) * block_size
        self._emitted = 0  # bytes handed to _emit so far

    @classmethod
    @abc.abstractmethod
    def accepts(cls, path: str) -> bool:
        """True when this target handles ``path`` without ``[target] kind`` being set."""

    @classmethod
    def for_session(cls, config: TargetConfig, *, session: int, name: str, timestamp: str) -> Self:
        """The target of one session: ``[target]`` with its fields filled in
        (:func:`~splitmirror.config.expand_target_path`).  A target with keys of its own
        (``[target] command``) overrides this."""
        path = expand_target_path(config.path, session=session, name=name, timestamp=timestamp)
        return cls(path, config.block_size)

    @property
    def location(self) -> str:
        """Where the archive is, for the catalog and the summary."""
        return self.path

    def preflight(self) -> list[PreflightProblem]:
        """What would stop writing here, checked without creating anything."""
        return []

    def stats(self) -> dict[str, Any]:
        """What the session's catalog row keeps of this target in its ``stats``, beside the
        archive's location: what finds the archive again without the configuration."""
        return {}

    @abc.abstractmethod
    def open(self) -> None:
        """Open the target for writing (BACKUP phase)."""

    @abc.abstractmethod
    def _emit(self, record: bytes | bytearray | memoryview) -> None:
        """Write whole records (a multiple of ``block_size`` bytes) to the medium."""

    def _pwrite(self, offset: int, data: bytes) -> None:
        raise NotImplementedError(f"{self.name} targets cannot be patched")

    @abc.abstractmethod
    def _finish(self) -> None:
        """Make everything written durable (fsync) and final (e.g. rename into place)."""

    def leftovers(self) -> list[str]:
        """Files a session killed before it could :meth:`discard` may leave (the watchdog
        removes them when the session never finished)."""
        return []

    @abc.abstractmethod
    def discard(self) -> None:
        """Failure path: close, and remove what can be removed; never report it as good."""

    def tell(self) -> int:
        """Bytes of archive written so far (the offset the next write lands at)."""
        return self._emitted + len(self._buffer)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` until a batch is gathered; then complete the buffer's last record
        and emit it.  What is left of ``data`` is buffered too, unless its whole records make
        half a batch or more: those go out as they are (a 1 MiB chunk is not copied through the
        buffer), and only the part record after them is kept."""
        view = memoryview(data).cast("B")
        if len(self._buffer) + len(view) < self._batch:
            self._buffer += view
            return
        if self._buffer:  # a batch is reached, so the buffer's last record can be completed
            fill = -len(self._buffer) % self.block_size
            self._buffer += view[:fill]
            view = view[fill:]
            self._emit_buffer()
        whole = len(view) - len(view) % self.block_size
        if whole >= self._batch // 2:
            self._guarded_emit(view[:whole])
            self._emitted += whole
            view = view[whole:]
        self._buffer += view

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite ``data`` at archive ``offset`` (only where :attr:`seekable`)."""
        split = max(0, min(len(data), self._emitted - offset))
        if split:
            self._guarded(self._pwrite, offset, data[:split])
        if split < len(data):
            start = offset + split - self._emitted
            self._buffer[start : start + len(data) - split] = data[split:]

    def commit(self) -> None:
        """Pad the last record with zeros, write it, and make the archive durable."""
        self._buffer += bytes(-len(self._buffer) % self.block_size)
        self._emit_buffer()
        self._finish()

    def _emit_buffer(self) -> None:
        """Emit the buffer (whole records) and empty it."""
        if self._buffer:
            self._guarded_emit(self._buffer)
            self._emitted += len(self._buffer)
            self._buffer.clear()

    def _guarded_emit(self, record: bytes | bytearray | memoryview) -> None:
        self._guarded(self._emit, record)

    def _guarded(self, write: Callable[..., None], *args: Any) -> None:
        """``write(*args)``, its OSError said as the target's (full, or failing), not a read's."""
        try:
            write(*args)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TargetFull(
                    f"the target {self.location} is full; free space there or point "
                    f"[target] path at a larger filesystem"
                ) from error
            raise TargetError(
                f"writing to the target {self.location} failed ({error.strerror or error}); check the "
                "device or filesystem there"
            ) from error
