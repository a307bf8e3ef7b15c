"""Where a file's bytes are on its block device: FIEMAP extent maps (the "map" of MAP and CHECK).

``FS_IOC_FIEMAP`` fills an array of ``struct fiemap_extent`` after a ``struct fiemap`` header::

    struct fiemap {                      struct fiemap_extent {
        __u64 fm_start;                      __u64 fe_logical;     /* byte offset in the file */
        __u64 fm_length;                     __u64 fe_physical;    /* byte offset on the device */
        __u32 fm_flags;                      __u64 fe_length;
        __u32 fm_mapped_extents;             __u64 fe_reserved64[2];
        __u32 fm_extent_count;               __u32 fe_flags;
        __u32 fm_reserved;                   __u32 fe_reserved[3];
        struct fiemap_extent fm_extents[];   };  /* 56 bytes */
    };  /* 32 bytes */

A file with more extents than one call returns is mapped in batches, each starting where the
previous one's last extent ended, until an extent carries ``FIEMAP_EXTENT_LAST``.

An extent can be read straight off the device only when its bytes are really there, at that
offset, unencoded: :meth:`Extent.readable_raw` says so.  Delayed allocation, unknown location,
inline or tail-packed data, encoded or encrypted data and unaligned extents are not; a backup
must capture such files another way (through the filesystem while it is frozen).  Unwritten
(preallocated) extents read as zeros whatever the device holds; holes are the gaps between
extents.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import fcntl
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

#: _IOWR('f', 11, struct fiemap)
FS_IOC_FIEMAP = 0xC020660B
#: Flush the file's dirty pages first, so delayed allocations get their blocks.
FIEMAP_FLAG_SYNC = 0x00000001
_HEADER = struct.Struct("=QQLLLL")
_EXTENT = struct.Struct("=QQQQQLLLL")
#: Extents asked for per call: large files are mapped in batches of this many.
BATCH = 512
#: The first call asks for this many: most files have a few extents, and a small request is
#: cheaper to build and read (CHECK maps every file inside the window).
FIRST_BATCH = 16


class ExtentFlag(enum.IntFlag):
    """``fe_flags`` (linux/fiemap.h), every one of them."""

    LAST = 0x00000001  # the file's last extent
    UNKNOWN = 0x00000002  # data location unknown
    DELALLOC = 0x00000004  # location still pending (sets UNKNOWN)
    ENCODED = 0x00000008  # data cannot be read while the filesystem is unmounted
    DATA_ENCRYPTED = 0x00000080  # data is encrypted by the filesystem (sets ENCODED)
    NOT_ALIGNED = 0x00000100  # extent offsets may not be block aligned
    DATA_INLINE = 0x00000200  # data mixed with metadata (sets NOT_ALIGNED)
    DATA_TAIL = 0x00000400  # several files in one block (sets NOT_ALIGNED)
    UNWRITTEN = 0x00000800  # space allocated, data not written: reads as zeros
    MERGED = 0x00001000  # the filesystem merged extents for the report
    SHARED = 0x00002000  # space shared with other files (reflinks, snapshots)


#: Flags under which the device does not hold the file's bytes at ``physical`` as they are.
NOT_RAW = (
    ExtentFlag.UNKNOWN
    | ExtentFlag.DELALLOC
    | ExtentFlag.ENCODED
    | ExtentFlag.DATA_ENCRYPTED
    | ExtentFlag.NOT_ALIGNED
    | ExtentFlag.DATA_INLINE
    | ExtentFlag.DATA_TAIL
)


@dataclasses.dataclass(frozen=True)
class Extent:
    logical: int
    physical: int
    length: int
    flags: ExtentFlag

    @property
    def end(self) -> int:
        return self.logical + self.length

    @property
    def readable_raw(self) -> bool:
        """True when reading ``length`` bytes at ``physical`` on the device gives the file's
        bytes (or, for an unwritten extent, when zeros are the answer without reading)."""
        return not self.flags & NOT_RAW

    @property
    def zeros(self) -> bool:
        return bool(self.flags & ExtentFlag.UNWRITTEN)

    def to_json(self) -> list[int]:
        return [self.logical, self.physical, self.length, int(self.flags)]


@dataclasses.dataclass(frozen=True)
class ExtentMap:
    """One file's extents, in file order, and the size they describe."""

    size: int
    extents: tuple[Extent, ...]

    @property
    def readable_raw(self) -> bool:
        return all(e.readable_raw for e in self.extents)

    def holes(self) -> list[tuple[int, int]]:
        """``(offset, length)`` of every range below ``size`` that no extent covers."""
        gaps, at = [], 0
        for extent in self.extents:
            if extent.logical > at:
                gaps.append((at, min(extent.logical, self.size) - at))
            at = max(at, extent.end)
            if at >= self.size:
                break
        if at < self.size:
            gaps.append((at, self.size - at))
        return [(offset, length) for offset, length in gaps if length > 0]

    def pieces(self) -> Iterator[tuple[int, int, Extent | None]]:
        """``(offset, length, extent)`` covering ``[0, size)`` in order: an extent's part below
        the size, or None for a hole.  The tail of the last block past the size is trimmed."""
        at = 0
        for extent in self.extents:
            if at >= self.size:
                return
            if extent.logical > at:
                yield at, min(extent.logical, self.size) - at, None
                at = min(extent.logical, self.size)
            start, stop = max(extent.logical, at), min(extent.end, self.size)
            if stop > start:
                yield start, stop - start, extent
                at = stop
        if at < self.size:
            yield at, self.size - at, None


def fiemap(fd: int, *, sync: bool = True, batch: int | None = None) -> list[Extent]:
    """Every extent of the open file ``fd`` (``sync``: flush dirty pages first, so delayed
    allocations are placed).  Raises OSError (EOPNOTSUPP on filesystems without FIEMAP).

    ``batch`` fixes the extents asked for per call; by default the first call asks for
    :data:`FIRST_BATCH` and later ones for :data:`BATCH`."""
    extents: list[Extent] = []
    start = 0
    flags = FIEMAP_FLAG_SYNC if sync else 0
    size = batch or FIRST_BATCH
    while True:
        request = bytearray(_HEADER.size + size * _EXTENT.size)
        _HEADER.pack_into(request, 0, start, 0xFFFF_FFFF_FFFF_FFFF - start, flags, 0, size, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, request, True)
        mapped = _HEADER.unpack_from(request, 0)[3]
        if mapped == 0:
            return extents
        for i in range(mapped):
            logical, physical, length, _r1, _r2, fe_flags, *_ = _EXTENT.unpack_from(
                request, _HEADER.size + i * _EXTENT.size
            )
            extents.append(Extent(logical, physical, length, ExtentFlag(fe_flags)))
        last = extents[-1]
        if last.flags & ExtentFlag.LAST:
            return extents
        start = last.end
        flags = 0  # synced once is enough
        size = batch or BATCH


def map_file(path: Path | str, *, sync: bool = True) -> ExtentMap:
    """The extent map of ``path`` (not following a final symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return ExtentMap(os.fstat(fd).st_size, tuple(fiemap(fd, sync=sync)))
    finally:
        os.close(fd)


def coalesce(extents: Iterable[Extent]) -> list[Extent]:
    """Adjacent extents contiguous both in the file and on the device, with the same flags
    (LAST aside), as one: fewer, larger reads."""
    merged: list[Extent] = []
    for extent in extents:
        if merged:
            prev = merged[-1]
            same = (prev.flags & ~ExtentFlag.LAST) == (extent.flags & ~ExtentFlag.LAST)
            if same and prev.end == extent.logical and prev.physical + prev.length == extent.physical:
                merged[-1] = Extent(prev.logical, prev.physical, prev.length + extent.length, extent.flags)
                continue
        merged.append(extent)
    return merged


def data_ranges(fd: int) -> list[tuple[int, int]] | None:
    """``(offset, length)`` of the ranges of the open file ``fd`` that hold data, by
    ``SEEK_DATA``/``SEEK_HOLE``; None where the filesystem cannot tell (then assume no holes).

    Filesystems without hole support report one range, the whole file, which is still right."""
    size = os.fstat(fd).st_size
    ranges: list[tuple[int, int]] = []
    at = 0
    try:
        while at < size:
            try:
                start = os.lseek(fd, at, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            stop = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            ranges.append((start, stop - start))
            at = stop
    except OSError:
        return None
    return ranges
