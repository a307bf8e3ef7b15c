"""One file's content into the ``directory`` mirror: bytes and holes, block by block.

:class:`FileCopy` makes a mirror file's content that of a primary file, for one pass of
:class:`~.dirsync.DirectorySync` (which decides which files to visit, and sets their type,
metadata and place in the tree).  The file's data regions and holes are found with
``SEEK_DATA``/``SEEK_HOLE``; data is compared block by block and only the blocks that differ
are written, in place; holes are punched in the mirror (zeros where its filesystem cannot), so
the mirror needs no more space than the primary.  A change-tracked pass copies only the byte
ranges written since the last one (:mod:`.filetrack` finds them).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Iterator

from ..budget import current as current_budget
from .base import SyncStats

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    _fallocate.restype = ctypes.c_int


class FileCopy:
    """The file copies of one pass: bytes read and written are counted in ``stats``, and every
    byte of a primary file visited (copied, found equal, or a hole) is told to ``advance``.
    Reads of the primary wait for the session's ``io_limit`` when the pass runs under it (SYNC's
    passes; not the final one, in the window: :mod:`splitmirror.budget`)."""

    def __init__(self, block_size: int, stats: SyncStats, advance: Callable[[int], None]) -> None:
        self.block_size = block_size
        self.stats = stats
        self.advance = advance
        self.throttle = current_budget().throttle

    def copy(self, src: int, dst: int, size: int, compare: bool) -> bool:
        """Make ``dst``'s bytes and holes those of ``src`` up to ``size``; True if it changed.
        Without ``compare`` (a new mirror file) every data block is written."""
        changed = compare and _cut_to(dst, size)
        for start, end, is_data in _regions(src, size):
            if is_data:
                changed = self._copy_data(src, dst, start, end, compare) or changed
            elif compare:
                changed = self._clear_hole(dst, start, end, tail=end == size) or changed
            if not is_data:
                self.advance(end - start)
        return _extend_to(dst, size) or changed

    def copy_ranges(self, src: int, dst: int, size: int, written: list[tuple[int, int]]) -> bool:
        """A tracked file: copy only its written ranges, and clear the mirror where the file now
        reads as a hole (a punched hole or a zeroed range leaves no write to track)."""
        changed = _cut_to(dst, size)
        for start, end, is_data in _regions(src, size):
            if not is_data:
                changed = self._clear_hole(dst, start, end, tail=end == size) or changed
        for offset, length in written:
            at, end = offset, min(offset + length, size)
            while at < end:
                length = min(end - at, 1 << 20)
                self.throttle.consume(length)
                data = os.pread(src, length, at)
                if not data:
                    break
                _pwrite_all(dst, data, at)
                self.stats.bytes_read += len(data)
                self.stats.bytes_written += len(data)
                at += len(data)
                changed = True
        changed = _extend_to(dst, size) or changed
        self.advance(size)
        return changed

    def _copy_data(self, src: int, dst: int, start: int, end: int, compare: bool) -> bool:
        """Write the blocks of a primary data region that the mirror lacks or holds differently."""
        changed = False
        size = self.block_size
        offset = start
        while offset < end:
            length = min(end, (offset // size + 1) * size) - offset
            self.throttle.consume(length)
            data = os.pread(src, length, offset)
            self.stats.bytes_read += len(data)
            if not data:
                break  # the file shrank while being read: copied as read
            if not compare or self._differs(dst, data, offset):
                _pwrite_all(dst, data, offset)
                self.stats.bytes_written += len(data)
                changed = True
            offset += len(data)
            self.advance(len(data))
        return changed

    def _differs(self, dst: int, data: bytes, offset: int) -> bool:
        """True when the mirror block differs, or is a hole where the primary has data (even
        zeros): allocation is part of exactness, a later write there must not need space."""
        if _seek(dst, offset, os.SEEK_HOLE, default=offset) < offset + len(data):
            return True  # part hole, or past the end of the mirror file
        old = os.pread(dst, len(data), offset)
        self.stats.bytes_read += len(old)
        return old != data

    def _clear_hole(self, dst: int, start: int, end: int, tail: bool) -> bool:
        """Make the mirror a hole where the primary has one; zeros if it cannot punch.

        A hole reaching the end of the file is cut off by truncation instead (the caller then
        extends the file): punching cannot free a partial last block, truncation can.
        """
        data = _seek(dst, start, os.SEEK_DATA, default=end)
        if data >= end:
            return False
        if tail:
            os.ftruncate(dst, data)
            return True
        if _punch(dst, data, end):
            return True
        changed = False
        stop = min(end, os.fstat(dst).st_size)
        for offset in range(data, stop, self.block_size):
            zeros = bytes(min(self.block_size, stop - offset))
            old = os.pread(dst, len(zeros), offset)
            self.stats.bytes_read += len(old)
            if old != zeros:
                _pwrite_all(dst, zeros, offset)
                self.stats.bytes_written += len(zeros)
                changed = True
        return changed


def _cut_to(dst: int, size: int) -> bool:
    """A mirror file longer than the primary's cut to its size first; True if it was."""
    if os.fstat(dst).st_size <= size:
        return False
    os.ftruncate(dst, size)
    return True


def _extend_to(dst: int, size: int) -> bool:
    """The mirror file at the primary's size in the end (a hole at the end was cut off, or the
    primary grew past the last data copied); True if it was not."""
    if os.fstat(dst).st_size == size:
        return False
    os.ftruncate(dst, size)
    return True


def _regions(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """``(start, end, is_data)`` covering ``[0, size)`` in order: the file's data and holes."""
    offset = 0
    while offset < size:
        data = min(_seek(fd, offset, os.SEEK_DATA, default=size), size)
        hole = min(_seek(fd, data, os.SEEK_HOLE, default=size), size) if data < size else size
        if data > offset:
            yield offset, data, False
        if hole > data:
            yield data, hole, True
        offset = hole


def _seek(fd: int, offset: int, whence: int, default: int) -> int:
    """``lseek`` for SEEK_DATA/SEEK_HOLE; ``default`` when there is no such offset (ENXIO)."""
    try:
        return os.lseek(fd, offset, whence)
    except OSError as error:
        if error.errno != errno.ENXIO:
            raise
        return default


def _punch(fd: int, start: int, end: int) -> bool:
    """Deallocate ``[start, end)`` keeping the size; False when the filesystem cannot."""
    if _fallocate is None:
        return False
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, end - start) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
