"""The built-in targets: a plain file, a tape device, standard output (and, from
:mod:`.command`, a program's standard input)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
from collections.abc import Callable

from .. import impl
from ..engine import PreflightProblem
from .base import Target

PARTIAL_SUFFIX = ".partial"


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _fsync_tolerant(fd: int) -> None:
    """fsync, ignoring the errors of media that have nothing to sync (pipes, ttys, tapes)."""
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):
            raise


class FileTarget(Target):
    """An archive file.  Written as ``NAME.partial`` and renamed into place only when complete,
    so a failed session never leaves a file that looks like a good archive."""

    name = "file"
    seekable = True

    def __init__(self, path: str, block_size: int) -> None:
        # Absolute, as the catalog records it: prune and verify run from other directories.
        path = os.path.abspath(path)
        super().__init__(path, block_size)
        self._fd = -1
        self._partial = path + PARTIAL_SUFFIX
        self._committed = False
        self._written: tuple[int, int] | None = None

    @classmethod
    def accepts(cls, path: str) -> bool:
        return path != "-" and not _is_char_device(path)

    def preflight(self) -> list[PreflightProblem]:
        parent = os.path.dirname(os.path.abspath(self.path))
        if os.path.exists(self.path):
            return [
                PreflightProblem(
                    f"the archive {self.path} already exists",
                    "move it away or put {session} in [target] path so each session gets its own",
                )
            ]
        if not os.path.isdir(parent):
            return [
                PreflightProblem(
                    f"the archive directory {parent} does not exist",
                    "create it or change [target] path",
                )
            ]
        if not os.access(parent, os.W_OK | os.X_OK):
            return [
                PreflightProblem(
                    f"the archive directory {parent} is not writable",
                    "fix its permissions or change [target] path",
                )
            ]
        return []

    def open(self) -> None:
        self._fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def _emit(self, record: bytes | bytearray | memoryview) -> None:
        view = memoryview(record)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _pwrite(self, offset: int, data: bytes) -> None:
        os.pwrite(self._fd, data, offset)

    def _finish(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self._partial, self.path)
        self._committed = True
        info = os.stat(self.path)
        self._written = (info.st_dev, info.st_ino)
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def leftovers(self) -> list[str]:
        return [self._partial, self.path]

    def discard(self) -> None:
        """Remove what this session wrote, even a committed archive whose session then failed
        (say, recording it in the catalog): only a ``DONE`` session leaves an archive behind, and
        one that failed in CLEANUP, whose archive was complete (the session does not call this)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for path in (self._partial, self.path if self._committed and self._still_ours() else None):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def _still_ours(self) -> bool:
        """The file at the archive's path is the one this target committed (an off-host worker
        whose lease ran out must not remove the archive the next worker wrote there)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (info.st_dev, info.st_ino) == self._written

    def write_aside(self, tag: str) -> None:
        """Write to ``PATH.partial-TAG`` instead of ``PATH.partial``: two writers of one archive
        (a worker fenced off by its lease, and the one that took the split over) never share
        the file they write before renaming it into place."""
        self._partial = f"{self.path}{PARTIAL_SUFFIX}-{tag}"


class TapeTarget(Target):
    """A tape (any character device): every write is exactly one ``block_size`` record."""

    name = "tape"

    def __init__(self, path: str, block_size: int) -> None:
        super().__init__(path, block_size)
        self._fd = -1

    @classmethod
    def accepts(cls, path: str) -> bool:
        return _is_char_device(path)

    def preflight(self) -> list[PreflightProblem]:
        if not os.access(self.path, os.W_OK):
            return [
                PreflightProblem(
                    f"the tape device {self.path} is not writable",
                    "check the cartridge's write protection and the device permissions",
                )
            ]
        return []

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)

    def _emit(self, record: bytes | bytearray | memoryview) -> None:
        view = memoryview(record)
        for start in range(0, len(view), self.block_size):
            written = os.write(self._fd, view[start : start + self.block_size])
            if written != self.block_size:
                raise OSError(errno.EIO, f"short write to tape ({written} of {self.block_size})")

    def _finish(self) -> None:
        _fsync_tolerant(self._fd)
        os.close(self._fd)  # closing a no-rewind tape device writes the filemark
        self._fd = -1

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


#: Linux's F_SETPIPE_SZ (fcntl.h); Python's fcntl module names it from 3.10 on some builds only.
F_SETPIPE_SZ = 1031
#: The pipe buffer asked for: a few records, so the writer and the reader on the other end do
#: not take turns every 64 KiB (the default), each waking the other.
PIPE_BUFFER = 1 << 20


def _widen_pipe(fd: int, block_size: int) -> None:
    """Enlarge ``fd``'s pipe buffer when it is a pipe; where the kernel refuses (above
    /proc/sys/fs/pipe-max-size for a user without CAP_SYS_RESOURCE) the default stays."""
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, max(PIPE_BUFFER, block_size))


#: What the catalog records as the archive of a session written to standard output.
STDOUT_LABEL = "<stdout>"


class StdoutTarget(Target):
    """Standard output (``path = "-"``), for piping into ssh, mbuffer or a tape library tool."""

    name = "stdout"

    @classmethod
    def accepts(cls, path: str) -> bool:
        return path == "-"

    @property
    def location(self) -> str:
        return STDOUT_LABEL

    def open(self) -> None:
        sys.stdout.flush()
        _widen_pipe(sys.stdout.fileno(), self.block_size)

    def _emit(self, record: bytes | bytearray | memoryview) -> None:
        view = memoryview(record)
        while view:
            view = view[os.write(sys.stdout.fileno(), view) :]

    def _finish(self) -> None:
        _fsync_tolerant(sys.stdout.fileno())

    def discard(self) -> None:
        """Nothing to remove: the reader sees a stream without a manifest and rejects it."""


@impl
def splitmirror_register_targets(register: Callable[[type[Target]], None]) -> None:
    from .command import CommandTarget  # it imports this module (the pipe widening)

    register(StdoutTarget)
    register(TapeTarget)
    register(FileTarget)
    register(CommandTarget)  # never by its path: [target] command sets kind = "command"
