"""Keeping a block mirror equal to its primary: copy only the chunks that differ.

Primary and mirror are block devices or image files; the mirror must be at least as large as the
primary (a new image file is created at the primary's size).  A pass reads both in aligned
chunks (1 MiB by default), compares, and writes the chunks that differ, then fsyncs the mirror.

**Checksum map.**  After a pass, a map of the mirror (a BLAKE2b-128 digest per chunk) is saved
beside it.  The next pass, when the map belongs to this pair and chunk size and the mirror has
the same size, compares the primary's chunks with the map and does not read the mirror at all:
half the reads.  The map is deleted when a pass starts and written only when it ends, so a pass
that dies halfway leaves no map, and the next pass compares against the mirror itself.  Nothing
but this synchronizer may write the mirror between passes (remove the map if something did).

**Reads of the primary bypass the page cache** (``O_DIRECT``): a mounted filesystem writes to
the device below the device's own cache, so a cached read of the device could be stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import mmap
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import UserError

DEFAULT_CHUNK = 1 << 20
MAP_VERSION = 1
#: Progress callback: (bytes done, total bytes).
Report = Callable[[int, int], None]


@dataclasses.dataclass
class BlockSyncStats:
    """What one pass did."""

    size: int = 0
    chunks: int = 0
    chunks_written: int = 0
    bytes_read_primary: int = 0
    bytes_read_mirror: int = 0
    bytes_written: int = 0
    used_map: bool = False


def device_size(path: Path) -> int:
    """Bytes of a block device or regular file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def is_block_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


class DirectReader:
    """Aligned chunk reads of one device, ``O_DIRECT`` where the device allows it."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.buffer = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT wants
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            self.direct = True
        except OSError as error:
            if error.errno != errno.EINVAL:  # filesystems without O_DIRECT (tmpfs) say EINVAL
                raise
            self.fd = os.open(path, os.O_RDONLY)
            self.direct = False

    def read(self, offset: int, length: int) -> bytes:
        if self.direct and length % 512 == 0:
            view = memoryview(self.buffer)[:length]
            got = os.preadv(self.fd, [view], offset)
            return bytes(view[:got])
        if self.direct:  # an unaligned tail: read it through the cache, after dropping it
            os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        os.close(self.fd)
        self.buffer.close()


class BlockSync:
    """Synchronize ``mirror`` from ``primary`` (devices or image files), chunk by chunk."""

    def __init__(self, primary: Path, mirror: Path, *, chunk: int = DEFAULT_CHUNK) -> None:
        if chunk <= 0 or chunk % 4096:
            raise UserError(f"the block mirror's chunk size {chunk} is not a positive multiple of 4096")
        self.primary, self.mirror, self.chunk = primary, mirror, chunk
        where = Path(os.path.abspath(mirror))
        self.map_path = where.parent / f".{where.name}.splitmirror-blocks.json"

    # -- checks -----------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Sentences saying why a pass cannot run (nothing is changed to find out)."""
        if not self.primary.exists():
            return [f"the primary device {self.primary} does not exist"]
        size = device_size(self.primary)
        if self.mirror.exists():
            if not (is_block_device(self.mirror) or self.mirror.is_file()):
                return [f"the mirror {self.mirror} is neither a block device nor an image file"]
            if os.path.realpath(self.mirror) == os.path.realpath(self.primary):
                return [f"the mirror {self.mirror} is the primary itself"]
            mirror_size = device_size(self.mirror)
            if mirror_size < size:
                return [
                    f"the mirror {self.mirror} ({mirror_size} bytes) is smaller than the primary "
                    f"{self.primary} ({size} bytes)"
                ]
        elif not self.mirror.parent.is_dir():
            return [f"the mirror's directory {self.mirror.parent} does not exist"]
        return []

    # -- the map ----------------------------------------------------------------------------

    def _identity(self, size: int) -> dict[str, object]:
        return {
            "version": MAP_VERSION,
            "primary": os.path.realpath(self.primary),
            "mirror": os.path.realpath(self.mirror),
            "chunk": self.chunk,
            "size": size,
        }

    def load_map(self, size: int) -> list[str] | None:
        """The saved digests, when they describe this mirror as this synchronizer left it."""
        try:
            saved = json.loads(self.map_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        digests = saved.get("digests") if isinstance(saved, dict) else None
        if saved.get("identity") != self._identity(size) or not isinstance(digests, list):
            return None
        return digests if len(digests) == -(-size // self.chunk) else None

    def _save_map(self, size: int, digests: list[str]) -> None:
        temporary = self.map_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"identity": self._identity(size), "digests": digests}))
        os.replace(temporary, self.map_path)

    # -- a pass -----------------------------------------------------------------------------

    def sync(self, report: Report | None = None) -> BlockSyncStats:
        """One pass; the mirror equals the primary, durably, when it returns."""
        problems = self.problems()
        if problems:
            raise UserError(problems[0] + "; the mirror was not touched")
        size = device_size(self.primary)
        if not self.mirror.exists():
            with open(self.mirror, "wb") as f:
                f.truncate(size)  # sparse: unwritten chunks cost nothing
        known = self.load_map(size)
        self.map_path.unlink(missing_ok=True)  # a pass that dies leaves no map behind
        stats = BlockSyncStats(size=size, used_map=known is not None)
        digests: list[str] = []
        with self._open(size) as (primary, mirror_reader, mirror_fd):
            for index, offset in enumerate(range(0, size, self.chunk)):
                length = min(self.chunk, size - offset)
                data = primary.read(offset, length)
                stats.bytes_read_primary += len(data)
                digest = hashlib.blake2b(data, digest_size=16).hexdigest()
                if known is not None:
                    same = known[index] == digest
                else:
                    mirrored = mirror_reader.read(offset, length)
                    stats.bytes_read_mirror += len(mirrored)
                    same = mirrored == data
                if not same:
                    os.pwrite(mirror_fd, data, offset)
                    stats.chunks_written += 1
                    stats.bytes_written += len(data)
                digests.append(digest)
                stats.chunks += 1
                if report is not None:
                    report(offset + length, size)
            os.fsync(mirror_fd)
        self._save_map(size, digests)
        return stats

    @contextlib.contextmanager
    def _open(self, size: int) -> Iterator[tuple[DirectReader, DirectReader, int]]:
        primary = DirectReader(self.primary, self.chunk)
        try:
            mirror_reader = DirectReader(self.mirror, self.chunk)
            try:
                mirror_fd = os.open(self.mirror, os.O_WRONLY)
                try:
                    yield primary, mirror_reader, mirror_fd
                finally:
                    os.close(mirror_fd)
            finally:
                mirror_reader.close()
        finally:
            primary.close()
