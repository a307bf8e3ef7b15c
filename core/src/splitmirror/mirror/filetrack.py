"""Change tracking for the directory mirror: written device sectors back to file byte ranges.

The write tracker (:mod:`splitmirror.tracking`) reports device sectors; a file-level mirror needs
file byte ranges.  :class:`TrackedFiles` keeps a reverse index — every file's extents as FIEMAP
last placed them — and, for one pass, tells the synchronizer:

* which files it must visit although their fingerprint is unchanged (:meth:`must_visit`): one of
  their extents was written (dirty pages flushed after the previous pass examined the file), or
  their placement was not settled when last mapped (delayed allocation, inline or shared data),
  or their writes may not reach their own sectors when the tracker expects them: data
  journaled by ext4 (``chattr +j``: the journal is written first, the file's sectors when ext4
  says, before Linux 6.5 only at a journal checkpoint), and files on another filesystem mounted
  below the primary (another device, which the tracker does not watch);
* which byte ranges of a visited file to copy (:meth:`ranges`): the written sectors that fall in
  its extents *as they are now* (mapped again, so blocks allocated since count), and the whole of
  each extent not yet placed (delayed allocation: the pages a database appends wait in the page
  cache, unseen by the tracker, until written back), or None when the file cannot be mapped
  exactly (inline, tail-packed or encoded data, shared extents, data journaled, another
  device), or the path now names another inode (a file renamed over it: its data was written,
  and taken, under its old name) — then the whole file is compared.  A table a database appends
  to is nearly always mid-allocation at its end; comparing it whole for that (measured: a
  257 MiB pgbench table in every final pass, inside the window) cost more than its changes.

Unwritten (preallocated) extents count like any other: a write into one stays unwritten in
FIEMAP until its writeback completes, so a pass may see the extent unwritten while the page is
dirty; the writeback, later, lands in its sectors and must bring the file back.

A range is only ever reported once the page cache wrote it back, which is why SPLIT writes the
tracked directory mirror's primary back before its final pass (syncfs, or the engine's FIFREEZE,
which writes everything back first): the final take then holds everything written before the
quiesce.  Holes are not writes: a hole
punched leaves no bio, so the synchronizer also clears the mirror wherever the file now reads as
a hole (SEEK_HOLE, which knows of dirty pages in unwritten extents; FIEMAP's flags do not).
A copy by ranges is only as complete as what was written back, so the synchronizer records no
fingerprint for it: a pass that trusts fingerprints compares that file whole.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import struct

from ..extents import NOT_RAW, Extent, ExtentFlag, ExtentMap, fiemap

#: Unplaced extents (pages waiting in the page cache, unseen by the tracker): the file is
#: visited on every pass until they are placed, and they are copied whole.
_UNPLACED = ExtentFlag.DELALLOC | ExtentFlag.UNKNOWN
#: Extents whose writes do not land on sectors of their own, and shared (reflinked) extents,
#: which stay shared until rewritten (a clone of a database would be copied whole on every
#: pass): the file is compared whole.
_INEXACT = (NOT_RAW & ~_UNPLACED) | ExtentFlag.SHARED
FS_IOC_GETFLAGS = 0x80086601
FS_JOURNAL_DATA_FL = 0x00004000


class TrackedFiles:
    """The reverse index and one pass's dirty byte ranges of the device (``begin``)."""

    def __init__(self, device: int | None = None) -> None:
        #: ``st_dev`` of the primary's filesystem, the one the tracker watches.
        self.device = device
        self.extents: dict[str, ExtentMap] = {}
        self.inodes: dict[str, int] = {}  # the inode each path's map belongs to
        self.unsettled: set[str] = set()
        self._dirty: list[tuple[int, int]] = []  # device byte ranges (start, end), sorted, merged
        self._starts: list[int] = []
        self._visit: set[str] = set()

    def begin(self, dirty: list[tuple[int, int]]) -> None:
        """A new pass over the device byte ranges ``(offset, length)`` written since the last."""
        merged: list[list[int]] = []
        for start, length in sorted(dirty):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], start + length)
            elif length > 0:
                merged.append([start, start + length])
        self._dirty = [(a, b) for a, b in merged]
        self._starts = [a for a, _b in self._dirty]
        self._visit = set(self.unsettled)
        for rel, emap in self.extents.items():
            if rel not in self._visit and any(self._overlaps(e) for e in emap.extents):
                self._visit.add(rel)

    def must_visit(self, rel: str) -> bool:
        return rel in self._visit

    def _overlaps(self, extent: Extent) -> bool:
        """Whether any written range meets the extent (the last range starting before its end
        is the only candidate: the ranges are sorted and disjoint)."""
        i = bisect.bisect_left(self._starts, extent.physical + extent.length) - 1
        return i >= 0 and self._dirty[i][1] > extent.physical

    def _written(self, extent: Extent) -> list[tuple[int, int]]:
        """The parts of ``extent`` that were written, as file byte ranges."""
        found = []
        end = extent.physical + extent.length
        i = max(bisect.bisect_right(self._starts, extent.physical) - 1, 0)
        while i < len(self._dirty) and self._dirty[i][0] < end:
            start, stop = max(self._dirty[i][0], extent.physical), min(self._dirty[i][1], end)
            if stop > start:
                found.append((extent.logical + start - extent.physical, stop - start))
            i += 1
        return found

    def mapped(self, rel: str, fd: int) -> ExtentMap | None:
        """Map the file again and remember it; None when its placement is not exact (the file
        is then compared whole, on every pass).  A file with unplaced extents is visited on
        every pass until they are placed."""
        try:
            emap = ExtentMap(_size(fd), tuple(fiemap(fd, sync=False)))
        except OSError:
            self.forget(rel)
            self.unsettled.add(rel)
            return None
        self.extents[rel] = emap
        st = os.fstat(fd)
        self.inodes[rel] = st.st_ino
        elsewhere = self.device is not None and st.st_dev != self.device
        if elsewhere or _journals_data(fd) or any(e.flags & _INEXACT for e in emap.extents):
            self.unsettled.add(rel)
            return None
        if any(e.flags & _UNPLACED for e in emap.extents):
            self.unsettled.add(rel)
        else:
            self.unsettled.discard(rel)
        return emap

    def ranges(self, rel: str, fd: int) -> list[tuple[int, int]] | None:
        """The byte ranges of the file to copy; None: compare all."""
        before = self.inodes.get(rel)
        emap = self.mapped(rel, fd)
        if emap is None or before != self.inodes[rel]:
            return None
        return [
            r
            for e in emap.extents
            for r in ([(e.logical, e.length)] if e.flags & _UNPLACED else self._written(e))
        ]

    def forget(self, rel: str) -> None:
        self.extents.pop(rel, None)
        self.inodes.pop(rel, None)
        self.unsettled.discard(rel)


def _journals_data(fd: int) -> bool:
    """ext4's per-file data journaling (``chattr +j``); False where the flags cannot be read."""
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4])[0]
    except OSError:
        return False
    return bool(flags & FS_JOURNAL_DATA_FL)


def _size(fd: int) -> int:
    return os.fstat(fd).st_size
