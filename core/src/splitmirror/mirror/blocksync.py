"""Keeping a block mirror equal to its primary: copy only the chunks that differ.

Primary and mirror are block devices or image files; the mirror must be at least as large as the
primary (a new image file is created at the primary's size).  A pass reads both in aligned
chunks (1 MiB by default), compares, and writes the chunks that differ, then fsyncs the mirror.

**Checksum map.**  After a pass, a map of the mirror (a SHA-256 digest per chunk, cut to 128 bits) is saved
beside it.  The next pass, when the map belongs to this pair and chunk size and the mirror has
the same size, compares the primary's chunks with the map and does not read the mirror at all:
half the reads.  The map is deleted when a pass starts and written only when it ends, so a pass
that dies halfway leaves no map, and the next pass compares against the mirror itself.  Nothing
but this synchronizer may write the mirror between passes (remove the map if something did).

**Parallel.**  A pass cuts the device into one contiguous stripe per worker thread
(``workers``, 4 by default); each reads its stripe in order, so the device sees a few sequential
streams and the hashing and comparing of one overlaps the reads of the others.

**Reads of the primary wait for the session's ``io_limit``** in the passes that run under it
(SYNC's, not the final one in the window: :mod:`splitmirror.budget`); every worker shares one rate.

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
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..budget import current as current_budget
from ..engine import PreflightProblem
from ..errors import UserError
from ..throttle import Throttle
from .ownership import claim_of

DEFAULT_CHUNK = 1 << 20
#: Threads per pass, each comparing one contiguous stripe of the device: enough to keep a
#: device's queue busy while another thread hashes or compares.
DEFAULT_WORKERS = 4
#: A tracked pass reads across gaps up to this long between written ranges: one large read
#: costs less than two small ones (a system call and a device request each), and the gap's
#: bytes are equal on both sides already, so copying them again changes nothing.
COALESCE_GAP = 64 << 10
MAP_VERSION = 3  # 1: BLAKE2b (half SHA-256's speed with SHA instructions); 2: no image identity
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


#: Where the checksum maps of device mirrors live when ``map_dir`` is not given (/dev is no
#: place for them: it is rebuilt at every boot).
DEVICE_MAP_DIR = Path("/var/lib/splitmirror/block-maps")


def map_path(mirror: Path, map_dir: Path | None = None) -> Path:
    """The checksum map's file: beside an image file, in :data:`DEVICE_MAP_DIR` for a device
    (named after the path as configured, so a stable ``/dev/disk/by-id`` name keeps its map),
    or in ``map_dir`` when given."""
    where = Path(os.path.abspath(mirror))
    on_dev = where.parts[:2] == ("/", "dev") or is_block_device(where)
    if map_dir is None and not on_dev:
        return where.parent / f".{where.name}.splitmirror-blocks.json"
    name = "_".join(where.parts[1:]) if on_dev else where.name
    return (map_dir or DEVICE_MAP_DIR) / f"{name}.splitmirror-blocks.json"


def in_use(path: Path) -> str | None:
    """Why something else may be using the device or image file ``path`` (mounted, held by
    LVM/RAID/a partition in use, attached to a loop device), or None.

    A block device is opened with ``O_EXCL``: the kernel refuses (EBUSY) when the device is
    mounted or claimed, which is the one answer that covers every way of holding it."""
    real = os.path.realpath(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target, *_ = line.split()
        if source == real:
            return f"mounted at {target.replace(chr(92) + '040', ' ')}"
    if is_block_device(path):
        try:
            os.close(os.open(real, os.O_RDONLY | os.O_EXCL))
        except OSError as error:
            if error.errno == errno.EBUSY:
                return "held by the kernel: mounted, or part of LVM, RAID or a mapped device"
            raise
        return None
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if os.path.realpath(backing.read_text().strip()) == real:
                return f"attached to /dev/{backing.parent.parent.name}"
    return None


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

    def __init__(
        self,
        primary: Path,
        mirror: Path,
        *,
        chunk: int = DEFAULT_CHUNK,
        workers: int = DEFAULT_WORKERS,
        map_dir: Path | None = None,
    ) -> None:
        if chunk <= 0 or chunk % 4096:
            raise UserError(f"the block mirror's chunk size {chunk} is not a positive multiple of 4096")
        if workers < 1:
            raise UserError(f"the block mirror's workers ({workers}) must be at least 1")
        self.primary, self.mirror, self.chunk, self.workers = primary, mirror, chunk, workers
        self.map_path = map_path(mirror, map_dir)
        #: After a full pass: the mirror's chunk digests, and the chunks copied since.
        self.digests: list[str] | None = None
        self.stale: set[int] = set()

    # -- checks -----------------------------------------------------------------------------

    def problems(self) -> list[PreflightProblem]:
        """Why a pass cannot run, each with its fix (nothing is changed to find out)."""
        bigger = "choose a mirror device or image file at least as large"
        if not self.primary.exists():
            return [
                PreflightProblem(f"the primary device {self.primary} does not exist", "check [mirror] device")
            ]
        size = device_size(self.primary)
        if self.mirror.exists():
            if not (is_block_device(self.mirror) or self.mirror.is_file()):
                return [
                    PreflightProblem(
                        f"the mirror {self.mirror} is neither a block device nor an image file", bigger
                    )
                ]
            if os.path.realpath(self.mirror) == os.path.realpath(self.primary):
                return [PreflightProblem(f"the mirror {self.mirror} is the primary itself", bigger)]
            busy = in_use(self.mirror)
            if busy:
                return [
                    PreflightProblem(
                        f"the mirror {self.mirror} is in use ({busy})",
                        "unmount or release it first: splitmirror overwrites the whole mirror",
                    )
                ]
            mirror_size = device_size(self.mirror)
            if mirror_size < size:
                what = (
                    f"the mirror {self.mirror} ({mirror_size} bytes) is smaller than the primary "
                    f"{self.primary} ({size} bytes)"
                )
                return [PreflightProblem(what, bigger)]
        elif Path(os.path.realpath(self.mirror)).parent == Path("/dev"):
            return [
                PreflightProblem(f"the mirror device {self.mirror} does not exist", "check [mirror] mirror")
            ]
        elif not self.mirror.parent.is_dir():
            what = f"the mirror's directory {self.mirror.parent} does not exist"
            return [PreflightProblem(what, "create it, or point [mirror] mirror elsewhere")]
        return []

    # -- the map ----------------------------------------------------------------------------

    def _identity(self, size: int) -> dict[str, object]:
        """What the map vouches for.  An image file's inode, size and mtime are in it too: an
        image replaced, truncated or written by anything else since the pass no longer matches
        (a device's mtime does not move on writes, so for devices the rule above stands)."""
        identity: dict[str, object] = {
            "version": MAP_VERSION,
            "primary": os.path.realpath(self.primary),
            "mirror": os.path.realpath(self.mirror),
            "chunk": self.chunk,
            "size": size,
            "claim": claim_of(self.mirror),  # a mirror handed over and back is compared in full
        }
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(self.mirror)
            if stat.S_ISREG(info.st_mode):
                identity["image"] = [info.st_ino, info.st_size, info.st_mtime_ns]
        return identity

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
        self.map_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.map_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"identity": self._identity(size), "digests": digests}))
        os.replace(temporary, self.map_path)

    # -- a pass -----------------------------------------------------------------------------

    def sync(self, report: Report | None = None) -> BlockSyncStats:
        """One pass; the mirror equals the primary, durably, when it returns."""
        problems = self.problems()
        if problems:
            raise UserError(problems[0].what + "; the mirror was not touched")
        size = device_size(self.primary)
        if not self.mirror.exists():  # an image of the database: private, like the archives
            fd = os.open(self.mirror, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size)  # sparse: unwritten chunks cost nothing
            finally:
                os.close(fd)
        known = self.load_map(size)
        self.map_path.unlink(missing_ok=True)  # a pass that dies leaves no map behind
        chunks = -(-size // self.chunk)
        digests: list[str] = [""] * chunks
        progress = _Progress(size, report)
        stripes = _stripes(chunks, self.workers)
        throttle = current_budget().throttle  # the workers' threads do not inherit it
        with ThreadPoolExecutor(len(stripes), thread_name_prefix="blocksync") as pool:
            parts = list(
                pool.map(lambda s: self._stripe(s, size, known, digests, progress, throttle), stripes)
            )
        stats = BlockSyncStats(size=size, used_map=known is not None, chunks=chunks)
        for part in parts:
            stats.chunks_written += part.chunks_written
            stats.bytes_read_primary += part.bytes_read_primary
            stats.bytes_read_mirror += part.bytes_read_mirror
            stats.bytes_written += part.bytes_written
        self.flush()
        self._save_map(size, digests)
        self.digests, self.stale = digests, set()
        return stats

    def copy(self, ranges: list[tuple[int, int]], report: Report | None = None) -> BlockSyncStats:
        """Copy the byte ranges ``(offset, length)`` of the primary to the mirror, widened to
        4 KiB and coalesced across gaps up to :data:`COALESCE_GAP`, without comparing or reading
        anything else: the pass of a change-tracked mirror.  The checksum map no longer vouches
        for the mirror until :meth:`refresh_map` (its identity moved with the image's mtime
        anyway).  Not durable until :meth:`flush`: the final pass runs inside the window, and
        reading the split image back (``O_DIRECT``) writes its cached pages back first, so
        flushing it can wait until the window has closed."""
        size = device_size(self.primary)
        pieces = _pieces(ranges, size, self.chunk, gap=COALESCE_GAP)
        total = sum(length for _offset, length in pieces)
        stats = BlockSyncStats(size=size, chunks=len(pieces))
        progress = _Progress(total, report)
        self.map_path.unlink(missing_ok=True)
        for offset, length in pieces:  # before copying: a copy that fails midway left them changed
            self.stale.update(range(offset // self.chunk, (offset + length - 1) // self.chunk + 1))
        shares = [pieces[i :: self.workers] for i in range(min(self.workers, len(pieces)))]
        throttle = current_budget().throttle
        with ThreadPoolExecutor(max(1, len(shares)), thread_name_prefix="blockcopy") as pool:
            for part in pool.map(lambda share: self._copy_pieces(share, progress, throttle), shares):
                stats.bytes_read_primary += part.bytes_read_primary
                stats.bytes_written += part.bytes_written
                stats.chunks_written += part.chunks_written
        return stats

    def _copy_pieces(
        self, pieces: list[tuple[int, int]], progress: _Progress, throttle: Throttle
    ) -> BlockSyncStats:
        stats = BlockSyncStats()
        with self._open() as (primary, _mirror_reader, mirror_fd), progress.stops_all():
            for offset, length in pieces:
                if progress.stopped:
                    break
                throttle.consume(length)
                data = primary.read(offset, length)
                os.pwrite(mirror_fd, data, offset)
                stats.bytes_read_primary += len(data)
                stats.bytes_written += len(data)
                stats.chunks_written += 1
                progress.add(length)
        return stats

    def refresh_map(self) -> bool:
        """After :meth:`copy` passes: digest the chunks they touched, from the mirror, and save
        the map again, so the next full pass reads only the primary.  False (and no map) when
        there is no full pass's map to refresh."""
        if self.digests is None:
            return False
        size = device_size(self.primary)
        reader = DirectReader(self.mirror, self.chunk)
        try:
            for index in sorted(self.stale):
                offset = index * self.chunk
                data = reader.read(offset, min(self.chunk, size - offset))
                self.digests[index] = hashlib.sha256(data).hexdigest()[:32]
        finally:
            reader.close()
        self._save_map(size, self.digests)
        self.stale.clear()
        return True

    def flush(self) -> None:
        """What the passes wrote, on the mirror's disk."""
        mirror_fd = os.open(self.mirror, os.O_WRONLY)
        try:
            os.fsync(mirror_fd)
        finally:
            os.close(mirror_fd)

    def _stripe(
        self,
        chunks: range,
        size: int,
        known: list[str] | None,
        digests: list[str],
        progress: _Progress,
        throttle: Throttle,
    ) -> BlockSyncStats:
        """Compare and copy one contiguous run of chunks (one worker's share, read in order)."""
        stats = BlockSyncStats()
        with self._open() as (primary, mirror_reader, mirror_fd), progress.stops_all():
            for index in chunks:
                if progress.stopped:
                    break  # another stripe failed: the pass fails, no point going on
                offset = index * self.chunk
                length = min(self.chunk, size - offset)
                throttle.consume(length)
                data = primary.read(offset, length)
                stats.bytes_read_primary += len(data)
                digest = hashlib.sha256(data).hexdigest()[:32]
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
                digests[index] = digest
                progress.add(length)
        return stats

    @contextlib.contextmanager
    def _open(self) -> Iterator[tuple[DirectReader, DirectReader, int]]:
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


def _pieces(ranges: list[tuple[int, int]], size: int, largest: int, gap: int = 0) -> list[tuple[int, int]]:
    """Byte ranges widened to 4 KiB (O_DIRECT's alignment), clipped to ``size``, merged when
    they overlap or are at most ``gap`` bytes apart, and cut to at most ``largest`` bytes each."""
    block = 4096
    widened = sorted(
        (offset - offset % block, min(-(-(offset + length) // block) * block, size))
        for offset, length in ranges
        if length > 0 and offset < size
    )
    merged: list[list[int]] = []
    for start, stop in widened:
        if merged and start <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(at, min(largest, stop - at)) for start, stop in merged for at in range(start, stop, largest)]


def _stripes(chunks: int, workers: int) -> list[range]:
    """``chunks`` cut into at most ``workers`` contiguous runs of nearly equal length."""
    count = max(1, min(workers, chunks))
    bounds = [chunks * i // count for i in range(count + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(count)]


class _Progress:
    """Bytes done across workers, reported in order of completion; and whether one failed."""

    def __init__(self, size: int, report: Report | None) -> None:
        self.size, self.report, self.done = size, report, 0
        self.stopped = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stops_all(self) -> Iterator[None]:
        """A worker failing in here tells the others to stop."""
        try:
            yield
        except BaseException:
            self.stopped = True
            raise

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            if self.report is not None:
                self.report(self.done, self.size)
