"""Writing members inside DIR, never following a symlink on the way.

Every path is walked from a descriptor of DIR one component at a time with ``O_NOFOLLOW``, so
even a symlink that appears after the safety scan (or one that ``--force`` left in DIR) cannot
redirect a write outside it.  Files are written under a temporary name, checked against their
checksum and only then renamed into place: a damaged member never sits in DIR looking good.
All-zero 4 KiB blocks are skipped (``cp --sparse=always``), so sparse files come back sparse.
"""

from __future__ import annotations

import contextlib
import decimal
import errno
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from ..archive.reader import ChecksumMismatch
from .plan import Entry, RestoreRefused

SPARSE_BLOCK = 4096
_ZERO = bytes(SPARSE_BLOCK)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Permissions and the sticky bit, never setuid/setgid: database files have no use for them, and
#: a restore as root must not plant a setuid program from an archive it cannot vouch for.
_FILE_MODE_BITS = 0o1777


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def write_sparse(fd: int, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Write ``chunks`` from offset 0, seeking over all-zero blocks; truncate to the full length
    so trailing holes count.  Returns the SHA-256 of all the data and its length."""
    digest = hashlib.sha256()
    offset = 0
    for chunk in chunks:
        digest.update(chunk)
        view = memoryview(chunk)
        start: int | None = None  # where the current run of data blocks began in this chunk
        for at in range(0, len(chunk), SPARSE_BLOCK):
            block = chunk[at : at + SPARSE_BLOCK]
            if block == _ZERO[: len(block)]:
                if start is not None:
                    _pwrite_all(fd, view[start:at], offset + start)
                    start = None
            elif start is None:
                start = at
        if start is not None:
            _pwrite_all(fd, view[start:], offset + start)
        offset += len(chunk)
    os.ftruncate(fd, offset)
    return digest.hexdigest(), offset


def _mtime_ns(entry: Entry) -> int:
    """Nanoseconds, exactly: from the pax record's decimal text when there is one (a float
    multiplied by 1e9 would be off by a few hundred nanoseconds)."""
    text = entry.info.pax_headers.get("mtime") or repr(entry.info.mtime)
    try:
        return int(decimal.Decimal(text) * 1_000_000_000)
    except decimal.InvalidOperation:
        return round(float(entry.info.mtime) * 1e9)


class Tree:
    """DIR, opened once; ``owners`` restores uid/gid (only root may)."""

    def __init__(self, root: Path, *, owners: bool) -> None:
        self.root = root
        self.owners = owners
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._directories: list[Entry] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        os.close(self._root_fd)

    @contextlib.contextmanager
    def parent(self, name: str) -> Iterator[tuple[int, str]]:
        """The descriptor of the directory that holds ``name`` (missing ones created 0700) and
        the last component."""
        *directories, base = name.split("/")
        opened: list[int] = []
        current = self._root_fd
        try:
            for part in directories:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=current)
                current = self._open_directory(current, part, name)
                opened.append(current)
            yield current, base
        finally:
            for fd in reversed(opened):
                os.close(fd)

    def _open_directory(self, parent: int, part: str, name: str) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=parent)
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise RestoreRefused(
                f"member {name} goes through {part}, which is not a directory in {self.root}; "
                f"nothing is written through symlinks"
            ) from None

    def file(self, entry: Entry, chunks: Iterable[bytes]) -> None:
        """Write, check, then rename into place; a mismatch leaves nothing behind."""
        with self.parent(entry.name) as (directory, base):
            temporary = f".splitmirror-{secrets.token_hex(6)}.partial"
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=directory,
            )
            try:
                digest, _size = write_sparse(fd, chunks)
                if digest != entry.sha256:
                    raise ChecksumMismatch(
                        f"member {entry.name} does not match its checksum (the archive is damaged); "
                        f"the restore stopped and {self.root} is incomplete",
                        entry.name,
                    )
                if self.owners:
                    os.fchown(fd, entry.info.uid, entry.info.gid)
                os.fchmod(fd, entry.info.mode & _FILE_MODE_BITS)
                os.utime(fd, ns=(_mtime_ns(entry), _mtime_ns(entry)))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(temporary, dir_fd=directory)
                raise
            os.close(fd)
            os.rename(temporary, base, src_dir_fd=directory, dst_dir_fd=directory)
            os.fsync(directory)

    def directory(self, entry: Entry) -> None:
        """Create now; mode, owner and time are set by :meth:`finish`, after what goes inside."""
        with self.parent(entry.name) as (directory, base):
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700, dir_fd=directory)
            os.close(self._open_directory(directory, base, entry.name))  # a directory, not a symlink
        self._directories.append(entry)

    def symlink(self, entry: Entry) -> None:
        with self.parent(entry.name) as (directory, base):
            self._clear(directory, base)
            os.symlink(entry.link, base, dir_fd=directory)
            if self.owners:
                os.chown(base, entry.info.uid, entry.info.gid, dir_fd=directory, follow_symlinks=False)
            mtime = _mtime_ns(entry)
            os.utime(base, ns=(mtime, mtime), dir_fd=directory, follow_symlinks=False)

    def hard_link(self, entry: Entry) -> None:
        with self.parent(entry.link) as (source_dir, source), self.parent(entry.name) as (directory, base):
            self._clear(directory, base)
            os.link(source, base, src_dir_fd=source_dir, dst_dir_fd=directory, follow_symlinks=False)

    @staticmethod
    def _clear(directory: int, base: str) -> None:
        """Make room for a link where ``--force`` found a file (the scan refused directories)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base, dir_fd=directory)

    def finish(self) -> None:
        """Directories' owners, modes and times, deepest first (writing inside changes a
        directory's mtime, and a read-only mode would have stopped the writes)."""
        for entry in sorted(self._directories, key=lambda e: e.name.count("/"), reverse=True):
            with self.parent(entry.name) as (directory, base):
                fd = self._open_directory(directory, base, entry.name)
                try:
                    if self.owners:
                        os.fchown(fd, entry.info.uid, entry.info.gid)
                    os.fchmod(fd, entry.info.mode & 0o7777)
                    os.utime(fd, ns=(_mtime_ns(entry), _mtime_ns(entry)))
                finally:
                    os.close(fd)
        os.fsync(self._root_fd)
