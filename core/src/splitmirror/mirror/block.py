"""The ``block`` mirror provider: a block-level mirror of the primary filesystem's device, read
by extent and never mounted.

``[mirror] primary`` is the mount point of the primary filesystem (where the database's files
are), ``mirror`` the mirror device or image file, ``device`` the primary's block device (found
from the mount when not given).  :class:`~.blocksync.BlockSync` copies the chunks that differ:
a bulk pass in SYNC, the final pass in SPLIT with the primary filesystem frozen (this provider's
:meth:`freeze_paths`, whatever the quiesce mode), so the mirror holds one consistent image of
the filesystem.  CHECK, still frozen, gives the provider each file's extent map as it was at the
split (:meth:`checked`); BACKUP then reads every file's bytes from the mirror at those physical
offsets.  Files with extents that cannot be read raw (inline, encoded, unknown location) are
copied through the still-frozen filesystem into a spool beside the mirror instead, which is as
exact; the catalog records which way each file was read.
"""

from __future__ import annotations

import bisect
import functools
import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import pydantic

from .. import impl
from ..config import Size
from ..engine import PreflightProblem
from ..extents import ExtentMap
from ..filemap import Fingerprint
from ..fsfreeze import same_filesystem
from ..progress import Progress
from .base import MirrorProvider, SplitStat, SyncStats
from .blocksync import DEFAULT_CHUNK, DEFAULT_WORKERS, BlockSync, BlockSyncStats, DirectReader
from .precopy import Report, TrackedPasses
from .splitread import MAX_READ, CoalescedReads, ExtentSplitReader, ReaderPool, SplitReader, reader_for
from .trackchoice import TrackingChoice, TrackingOptions

log = logging.getLogger("splitmirror.mirror.block")


class BlockOptions(TrackingOptions):
    """``[mirror]`` keys of the block provider."""

    #: The primary filesystem's block device; default: the device mounted at ``primary``.
    device: Path | None = None
    #: Compare-and-copy granularity.
    chunk_size: Size = DEFAULT_CHUNK
    #: Where the mirror's checksum map is kept; default: beside an image file, or
    #: /var/lib/splitmirror/block-maps for a device.
    map_dir: Path | None = None
    #: Threads per synchronizer pass, each on its own stripe of the device.
    workers: int = pydantic.Field(default=DEFAULT_WORKERS, ge=1, le=64)


def mounted_device(mount: Path) -> Path | None:
    """The block device mounted at ``mount``, or None when ``mount`` is not a mount point."""
    if not os.path.ismount(mount):
        return None
    found = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    source = found.stdout.strip().splitlines()
    return Path(source[0]) if source and source[0].startswith("/dev/") else None


class BlockPasses:
    """The block mirror's passes for :class:`~.precopy.TrackedPasses`: the whole device
    compared, or byte ranges copied."""

    def __init__(self, sync: BlockSync) -> None:
        self.sync = sync

    def full(self, report: Report) -> SyncStats:
        return _as_sync_stats(self.sync.sync(report))

    def delta(self, ranges: list[tuple[int, int]], report: Report) -> SyncStats:
        return _as_sync_stats(self.sync.copy(ranges, report))

    def finish(self) -> None:
        self.sync.flush()
        self.sync.refresh_map()


def _as_sync_stats(stats: BlockSyncStats) -> SyncStats:
    return SyncStats(
        bytes_read=stats.bytes_read_primary + stats.bytes_read_mirror, bytes_written=stats.bytes_written
    )


class ExtentReader(io.RawIOBase):
    """A file's bytes at the split, read from the mirror device by its extent map: holes and
    unwritten extents as zeros, the last block trimmed to the size.  Seekable, so that a sparse
    member can skip the holes."""

    def __init__(self, reader: DirectReader, emap: ExtentMap) -> None:
        super().__init__()
        self._reader = reader  # the provider's, shared by every file: BACKUP reads one at a time
        self._pieces = list(emap.pieces())
        self._starts = [offset for offset, _length, _extent in self._pieces]
        self._size = emap.size
        self._index, self._into = 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        if self._index >= len(self._pieces):
            return self._size
        return self._starts[self._index] + self._into

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.tell(), os.SEEK_END: self._size}[whence]
        target = max(0, base + offset)
        if target >= self._size:
            self._index, self._into = len(self._pieces), 0
        else:
            self._index = bisect.bisect_right(self._starts, target) - 1
            self._into = target - self._starts[self._index]
        return target

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while self._index < len(self._pieces):
            offset, length, extent = self._pieces[self._index]
            if self._into >= length:
                self._index, self._into = self._index + 1, 0
                continue
            want = min(len(buffer), length - self._into, 1 << 20)
            if extent is None or extent.zeros:
                data = bytes(want)
            else:
                start = extent.physical + (offset - extent.logical) + self._into
                aligned = start - start % 4096
                span = min(-(-(start + want - aligned) // 4096) * 4096, 1 << 20)
                want = min(want, span - (start - aligned))
                data = self._reader.read(aligned, span)[start - aligned : start - aligned + want]
                if len(data) < want:
                    raise OSError(f"the mirror ended at byte {aligned + len(data)} inside an extent")
            buffer[: len(data)] = data
            self._into += len(data)
            return len(data)
        return 0


class BlockMirror(MirrorProvider):
    """Mirror the primary filesystem's device block by block; read files by extent."""

    name = "block"
    supports_extent_reads = True
    options_model = BlockOptions
    read_workers = 4  # O_DIRECT reads: the device serves several at once

    def __init__(self, primary: Path, mirror: Path, options: pydantic.BaseModel | None = None) -> None:
        settings = options if isinstance(options, BlockOptions) else BlockOptions()
        super().__init__(primary, mirror, settings)
        self.settings = settings
        #: Where BACKUP reads the files' extents (the mirror here; the command mirror's split
        #: device there) and where CHECK spools the files that cannot be read raw.
        self.image, self.spool_parent = mirror, mirror.parent
        self.maps: dict[Path, ExtentMap] = {}
        self.fingerprints: dict[Path, Fingerprint] = {}
        self.spooled: dict[Path, Path] = {}
        self._spool: Path | None = None
        self._keys: dict[Path, Path] = {}
        self._reader: DirectReader | None = None
        self._pool: ReaderPool | None = None  # BACKUP's device readers, one per read in flight
        self._pool_lock = threading.Lock()
        self._runs: CoalescedReads | None = None  # BACKUP's plan of neighbouring extents
        self._passes: TrackedPasses | None = None

    def _key(self, primary_path: Path) -> Path:
        """The resolved path the maps are keyed by; BACKUP asks several times per file, and
        resolving walks every component (measured: a third of archiving 5,000 small files)."""
        key = self._keys.get(primary_path)
        if key is None:
            key = self._keys[primary_path] = primary_path.resolve()
        return key

    @functools.cached_property
    def _mounted(self) -> Path | None:
        """The device mounted at the primary, looked up once per session (``findmnt``)."""
        return mounted_device(self.primary)

    @property
    def device(self) -> Path | None:
        return self.settings.device or self._mounted

    @functools.cached_property
    def _tracking(self) -> TrackingChoice:
        """Decided once per session, so that preflight, ``check``'s notes and the passes agree."""
        return self.settings.decide(lambda: (self.device, ""))

    def _sync(self) -> BlockSync:
        device = self.device
        assert device is not None, "preflight() says when there is no device"
        if self._passes is not None and isinstance(self._passes.sync, BlockPasses):
            return self._passes.sync.sync  # the same synchronizer: it keeps the pass's digests
        return BlockSync(
            device,
            self.mirror,
            chunk=self.settings.chunk_size,
            workers=self.settings.workers,
            map_dir=self.settings.map_dir,
        )

    def preflight(self) -> list[PreflightProblem]:
        problems: list[PreflightProblem] = []
        mounted = self._mounted
        if mounted is None:
            problems.append(
                PreflightProblem(
                    f"the primary {self.primary} is not the mount point of a block device",
                    "set [mirror] primary to the mount point of the filesystem holding the database",
                )
            )
            return problems
        named = self.settings.device
        if named is not None and os.path.realpath(named) != os.path.realpath(mounted):
            problems.append(
                PreflightProblem(
                    f"[mirror] device {named} is not what is mounted at {self.primary} ({mounted})",
                    "remove device, or name the device mounted there",
                )
            )
        if os.geteuid() != 0:
            problems.append(
                PreflightProblem("the block mirror reads devices and freezes filesystems", "run as root")
            )
        problems.extend(self._sync().problems())
        problems.extend(self._tracking.problems())
        parent = Path(os.path.abspath(self.mirror)).parent
        if parent.exists() and same_filesystem(parent, self.primary):
            problems.append(
                PreflightProblem(
                    f"the mirror {self.mirror} is on the primary filesystem, which SPLIT freezes",
                    "put the mirror on another device",
                )
            )
        return problems

    def freeze_paths(self) -> list[Path]:
        """The final pass needs the whole filesystem still, in every mode."""
        return [self.primary]

    def notes(self) -> list[str]:
        choice = self._tracking
        if choice.tracked:
            return [f"change tracking: on ({choice.device}); the final pass copies only what was written"]
        return [f"change tracking: off ({choice.why_not}); the final pass compares the whole device"]

    def bulk_sync(self, progress: Progress) -> SyncStats:
        """Start tracking (when it can), then the whole device, then pre-copy."""
        self._passes = self.settings.passes(BlockPasses(self._sync()), self._tracking)
        return self._passes.bulk(progress)

    def catch_up(self, progress: Progress) -> SyncStats | None:
        return None if self._passes is None else self._passes.last_precopy(progress)

    def final_sync(self, first: Sequence[Path], progress: Progress) -> SyncStats:
        if self._passes is None:  # no bulk pass in this session (a provider used on its own)
            self._passes = TrackedPasses(
                BlockPasses(self._sync()), None, passes=0, budget=0, why_untracked="no bulk pass"
            )
        return self._passes.final(progress)

    def split(self) -> None:
        """Nothing to do: the mirror is only ever written by a pass, and none runs until
        :meth:`reestablish`."""

    def checked(self, maps: Mapping[Path, ExtentMap], fingerprints: Mapping[Path, Fingerprint]) -> None:
        """CHECK, primary still frozen: keep the maps; copy files that cannot be read raw."""
        self.maps, self.fingerprints = dict(maps), dict(fingerprints)
        for path, emap in self.maps.items():
            if not emap.readable_raw:
                if self._spool is None:
                    self._spool = Path(tempfile.mkdtemp(prefix=".splitmirror-spool-", dir=self.spool_parent))
                copy = self._spool / str(len(self.spooled))
                shutil.copyfile(path, copy)
                self.spooled[path] = copy

    def read_method(self, primary_path: Path) -> str:
        return "frozen-copy" if self._key(primary_path) in self.spooled else "extent"

    def make_durable(self) -> None:
        """The split image on the mirror's disk itself, not in this host's page cache: another
        host (an off-host backup) reads the disk, and reads nothing this host has not written."""
        fd = os.open(self.mirror, os.O_RDONLY | os.O_CLOEXEC)  # fsync needs no write access
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def map_of(self, primary_path: Path) -> ExtentMap | None:
        """The file's extent map from CHECK (None: not mapped)."""
        return self.maps.get(self._key(primary_path))

    def fingerprint_of(self, primary_path: Path) -> Fingerprint:
        """The file's attributes at the split (CHECK's)."""
        return self.fingerprints[self._key(primary_path)]

    def split_stat(self, primary_path: Path) -> SplitStat:
        fingerprint = self.fingerprints[self._key(primary_path)]
        return SplitStat(
            fingerprint.size, fingerprint.mode, fingerprint.mtime_ns / 1e9, fingerprint.uid, fingerprint.gid
        )

    def open_split_copy(self, primary_path: Path) -> BinaryIO:
        path = self._key(primary_path)
        if path in self.spooled:
            return open(self.spooled[path], "rb")
        if path not in self.maps:
            raise FileNotFoundError(f"{primary_path} has no extent map from CHECK")
        if self._reader is None:
            self._reader = DirectReader(self.image, 1 << 20)
        emap = self.maps[path]
        return io.BufferedReader(ExtentReader(self._reader, emap), max(4096, min(emap.size, 1 << 20)))

    def split_reader(self, primary_path: Path) -> SplitReader:
        path = self._key(primary_path)
        if path in self.spooled:
            return reader_for(open(self.spooled[path], "rb"))
        if path not in self.maps:
            raise FileNotFoundError(f"{primary_path} has no extent map from CHECK")
        with self._pool_lock:  # BACKUP's read-ahead opens files from several threads
            return ExtentSplitReader(self._readers(), self.maps[path], self._runs)

    def _readers(self) -> ReaderPool:
        if self._pool is None:
            self._pool = ReaderPool(lambda: DirectReader(self.image, MAX_READ))
        return self._pool

    def will_read(self, primary_paths: Sequence[Path]) -> None:
        """Plan one device read for each run of small files whose extents lie side by side in
        the order BACKUP reads them (a file up to one read long is read in one piece, so each
        of its extents is asked for whole)."""
        pieces = []
        for primary_path in primary_paths:
            path = self._key(primary_path)
            emap = self.maps.get(path)
            if path in self.spooled or emap is None or emap.size > MAX_READ:
                continue
            pieces += [
                (extent.physical + (offset - extent.logical), length)
                for offset, length, extent in emap.pieces()
                if extent is not None and not extent.zeros
            ]
        with self._pool_lock:
            self._runs = CoalescedReads(self._readers(), pieces)

    def data_ranges(self, primary_path: Path) -> list[tuple[int, int]] | None:
        """Holes and unwritten extents are what the map leaves out; a spooled copy has
        whatever holes the copy kept."""
        path = self._key(primary_path)
        if path in self.spooled or path not in self.maps:
            return super().data_ranges(primary_path)
        return [
            (offset, length)
            for offset, length, extent in self.maps[path].pieces()
            if extent is not None and not extent.zeros
        ]

    def extents_of(self, primary_path: Path) -> list[list[int]]:
        emap = self.maps.get(self._key(primary_path))
        return [e.to_json() for e in emap.extents] if emap else []

    def close(self) -> None:
        """Every session ends here: the tracing instance removed, the checksum map refreshed."""
        if self._passes is not None:
            passes, self._passes = self._passes, None
            passes.close()

    def reestablish(self) -> None:
        self.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._runs = None
        self._keys.clear()
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None
        self.spooled.clear()


@impl
def splitmirror_register_mirrors(register: Callable[[type[MirrorProvider]], None]) -> None:
    register(BlockMirror)
