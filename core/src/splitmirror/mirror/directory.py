"""The ``directory`` mirror provider: a file-level mirror of a primary directory tree.

The mirror is a plain directory kept equal to the primary by :class:`DirectorySync`; splitting
it is simply not syncing any more, so the split is recorded in a marker file beside the mirror
for whoever looks later (``check``, a session started after a crash).  Both hidden files live
next to the mirror, not in it, so the mirror holds exactly the primary's tree.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import pydantic

from .. import impl
from ..config import Size
from ..engine import PreflightProblem
from ..fsfreeze import mount_point, same_filesystem
from ..paths import replace_durably
from ..placement import containment_problem, nearest_existing
from ..progress import Progress
from .base import MirrorProvider, SyncStats
from .dirsync import DEFAULT_BLOCK_SIZE, DirectorySync
from .filetrack import TrackedFiles
from .precopy import TrackedPasses
from .trackchoice import TrackingChoice, TrackingOptions


class DirectoryOptions(TrackingOptions):
    """``[mirror]`` keys of the directory provider."""

    #: Compare-and-write granularity of the synchronizer.
    block_size: Size = DEFAULT_BLOCK_SIZE
    # ``tracking`` is "auto", as for the block mirror: the short window wherever the machine
    # allows it.  Tracked, the final pass writes the primary's filesystem back first
    # (:meth:`DirectoryMirror.write_back_paths`); it is frozen only where the engine's mode
    # needs an atomic image (InnoDB), which the session reports as ``blocked_ms``.


#: Filesystems whose FIEMAP gives real device offsets that written sectors can be matched to.
TRACKABLE_FILESYSTEMS = ("ext4", "xfs")


class _DirectoryPasses:
    """The directory mirror's passes for :class:`~.precopy.TrackedPasses`."""

    def __init__(self, sync: DirectorySync, tracked: TrackedFiles | None) -> None:
        self.sync, self.tracked = sync, tracked
        self.first: Sequence[Path] = ()

    def full(self, report: Progress) -> SyncStats:
        self.sync.tracked, self.sync.map_all = self.tracked, True
        return self.sync.sync(self.first, report)

    def delta(self, ranges: list[tuple[int, int]], report: Progress) -> SyncStats:
        assert self.tracked is not None
        self.tracked.begin(ranges)
        self.sync.tracked, self.sync.map_all = self.tracked, False
        return self.sync.sync(self.first, report)

    def finish(self) -> None:
        self.sync.tracked = None


class DirectoryMirror(MirrorProvider):
    """Mirror ``primary`` into the directory ``mirror`` on any filesystem."""

    name = "directory"
    supports_extent_reads = False
    options_model = DirectoryOptions

    def __init__(self, primary: Path, mirror: Path, options: pydantic.BaseModel | None = None) -> None:
        settings = options if isinstance(options, DirectoryOptions) else DirectoryOptions()
        super().__init__(primary, mirror, settings)
        self.settings = settings
        self.block_size = settings.block_size
        self._passes: TrackedPasses | None = None
        #: What the final pass leaves as it was (:meth:`skip_in_final_pass`), relative paths.
        self._final_skip: frozenset[str] = frozenset()
        where = Path(os.path.abspath(mirror))
        self.state_path = where.parent / f".{where.name}.splitmirror-sync.json"
        self.split_marker = where.parent / f".{where.name}.splitmirror-split.json"

    def _paths_preflight(self) -> list[PreflightProblem]:
        problems: list[PreflightProblem] = []

        def problem(what: str, fix: str) -> None:
            problems.append(PreflightProblem(what, fix))

        primary, mirror = self.primary, self.mirror
        parent = Path(os.path.abspath(mirror)).parent
        set_primary = "set [mirror] primary to the directory that holds the database files"
        if not primary.is_dir():
            state = "is not a directory" if primary.exists() else "does not exist"
            problem(f"the primary {primary} {state}", set_primary)
        elif not os.access(primary, os.R_OK | os.X_OK):
            problem(f"the primary {primary} is not readable", "run as a user that can read it")
        nested = containment_problem(primary, mirror)
        if nested:
            problem(nested, "set [mirror] mirror to a directory outside the primary")
        if mirror.exists() and not mirror.is_dir():
            problem(f"the mirror {mirror} is not a directory", "remove it or choose another path")
        if not parent.is_dir():
            problem(f"the mirror's parent {parent} does not exist", f"create it (mkdir -p {parent})")
        for directory in (parent, mirror):
            if directory.is_dir() and not os.access(directory, os.W_OK | os.X_OK):
                problem(f"{directory} is not writable", "make it writable or run as its owner")
        return problems

    def _device(self) -> tuple[Path | None, str]:
        """The primary filesystem's block device, or None and why tracking cannot use it."""
        mount = mount_point(self.primary) if self.primary.is_dir() else Path("/")
        if mount == Path("/"):
            return None, "the primary is on the root filesystem, whose every write the tracker would trace"
        found = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--mountpoint", str(mount)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        source, fstype, options = [*found.stdout.split(), "", "", ""][:3]
        if not source.startswith("/dev/"):
            return None, "the primary is not on a block device"
        if fstype not in TRACKABLE_FILESYSTEMS:
            return None, f"the primary's filesystem is {fstype or 'unknown'}, not ext4 or xfs"
        if "rtdev=" in options:
            return None, "the primary's xfs has a realtime device, whose writes are not traced"
        if fstype == "ext4" and _journals_data(Path(source), options.split(",")):
            return (
                None,
                "the primary's ext4 journals file data (data=journal), out of the tracker's sight",
            )
        parent = Path(os.path.abspath(self.mirror)).parent
        if parent.exists() and same_filesystem(parent, self.primary):
            return None, "the mirror is on the primary's filesystem, whose writes the tracker would trace"
        for own in self.own_paths:
            if same_filesystem(nearest_existing(own), self.primary):
                return None, f"{own} is on the primary's filesystem, which a mode that freezes it would block"
        return Path(source), ""

    @functools.cached_property
    def _tracking(self) -> TrackingChoice:
        """Decided once per session, so that preflight, ``check``'s notes, SPLIT's write-back
        (inside the window: no ``findmnt`` there) and the passes agree."""
        return self.settings.decide(self._device)

    def notes(self) -> list[str]:
        choice = self._tracking
        if choice.tracked:
            return ["change tracking: on; the final pass copies only the written ranges of changed files"]
        return [f"change tracking: off ({choice.why_not}); the final pass compares every changed file"]

    def write_back_paths(self) -> list[Path]:
        """Tracked, the final pass needs every write made before the quiesce on the device, so
        that the tracker has seen it: syncfs writes the page cache back.  No freeze: a mode that
        lets the database write on repairs what it writes during the pass, exactly as when an
        untracked pass reads a file being written; a mode that cannot freezes the primary
        itself (the engine's ``freeze_paths``)."""
        return [self.primary] if self._tracking.tracked else []

    def preflight(self) -> list[PreflightProblem]:
        return [*self._paths_preflight(), *self._tracking.problems()]

    def bulk_sync(self, progress: Progress) -> SyncStats:
        # Each pass visits every byte of the primary's files (copying or skipping it), so their
        # sum is the progress bars' total and lets them estimate the time left.
        total = _regular_bytes(self.primary)

        def report(done: int, _unknown: int | None) -> None:
            progress(done, total)

        tracked = TrackedFiles(os.stat(self.primary).st_dev) if self._tracking.tracked else None
        self._passes = self.settings.passes(_DirectoryPasses(self._synchronizer(), tracked), self._tracking)
        return self._passes.bulk(report)

    def catch_up(self, progress: Progress) -> SyncStats | None:
        return None if self._passes is None else self._passes.last_precopy(progress)

    def skip_in_final_pass(self, paths: Sequence[Path]) -> None:
        skipped = set()
        for path in paths:
            with contextlib.suppress(ValueError):  # outside the primary: not mirrored anyway
                skipped.add(str(self.relative(path)))
        self._final_skip = frozenset(skipped - {"."})

    def final_sync(self, first: Sequence[Path], progress: Progress) -> SyncStats:
        if self._passes is None:
            sync = self._synchronizer()
            sync.skip = self._final_skip
            return sync.sync(first, progress)
        passes = self._passes.sync
        assert isinstance(passes, _DirectoryPasses)
        passes.first = first
        passes.sync.skip = self._final_skip
        try:
            return self._passes.final(progress)
        finally:
            passes.sync.skip = frozenset()

    def close(self) -> None:
        if self._passes is not None:
            passes, self._passes = self._passes, None
            passes.close()

    def split(self) -> None:
        self._write_marker("split")

    def open_split_copy(self, primary_path: Path) -> BinaryIO:
        return open(self.mirror / self.relative(primary_path), "rb")

    def reestablish(self) -> None:
        self.close()
        self._write_marker("synchronizing")

    @property
    def is_split(self) -> bool:
        """True between :meth:`split` and :meth:`reestablish`, across processes."""
        try:
            return bool(json.loads(self.split_marker.read_text()).get("state") == "split")
        except (FileNotFoundError, ValueError, AttributeError):
            return False

    def _synchronizer(self) -> DirectorySync:
        return DirectorySync(self.primary, self.mirror, self.state_path, self.block_size)

    def _write_marker(self, state: str) -> None:
        """Atomic and durable: a crash right after the split must still find it recorded."""
        replace_durably(self.split_marker, json.dumps({"state": state}))


#: ext4's superblock (at byte 1024): ``s_default_mount_opts`` at 0x100, its journalling mode bits.
_EXT4_DEFAULT_MOUNT_OPTS = 1024 + 0x100
_EXT4_DEFM_JMODE, _EXT4_DEFM_JMODE_DATA = 0x0060, 0x0020


def _journals_data(device: Path, options: list[str]) -> bool:
    """Whether an ext4 journals file data (its files' sectors are written when the journal says,
    before Linux 6.5 only at a checkpoint, which a write-back does not force, so tracking is not
    used there): ``data=journal`` among the mount's options, or no
    ``data=`` there (the kernel lists only what differs from the superblock's defaults) and the
    superblock's default (``tune2fs -o journal_data``).  Unreadable: assumed so."""
    if "data=journal" in options:
        return True
    if any(option.startswith("data=") for option in options):
        return False
    try:
        with open(device, "rb") as f:
            f.seek(_EXT4_DEFAULT_MOUNT_OPTS)
            defaults = int.from_bytes(f.read(4), "little")
    except OSError:
        return True
    return defaults & _EXT4_DEFM_JMODE == _EXT4_DEFM_JMODE_DATA


def _regular_bytes(primary: Path) -> int:
    """The bytes of every regular file under ``primary`` (links are not followed)."""
    total = 0
    for top, _dirs, files in os.walk(primary):
        for name in files:
            with contextlib.suppress(OSError):  # gone since it was listed
                info = os.lstat(os.path.join(top, name))
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


@impl
def splitmirror_register_mirrors(register: Callable[[type[MirrorProvider]], None]) -> None:
    register(DirectoryMirror)
