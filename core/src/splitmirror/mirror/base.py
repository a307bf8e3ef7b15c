"""The interface a mirror provider implements (docs/mirrors.md)."""

from __future__ import annotations

import abc
import dataclasses
import functools
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, ClassVar, Literal

import pydantic

from .. import extents
from ..engine import NoOptions, PreflightProblem
from ..extents import ExtentMap
from ..filemap import Fingerprint
from ..fsfreeze import same_filesystem
from ..progress import Progress
from .splitread import SplitReader, reader_for


@dataclasses.dataclass
class SyncStats:
    """What one synchronizer pass did; shown in the summary and stored in the catalog."""

    files_scanned: int = 0
    files_unchanged: int = 0
    files_created: int = 0
    files_updated: int = 0
    files_deleted: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    #: Change-tracked mirrors: the bytes each pass copied, in order (the bulk pass first).
    passes: list[int] = dataclasses.field(default_factory=list)
    #: Change-tracked mirrors: how the pass knew what to copy ("tracked", or why it compared all).
    tracking: str = ""

    def add(self, other: SyncStats) -> None:
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if isinstance(mine, str):
                setattr(self, field.name, mine or theirs)
            else:
                setattr(self, field.name, mine + theirs)


@dataclasses.dataclass(frozen=True)
class SplitStat:
    """A file as it is in the split image: what its archive member records."""

    size: int
    mode: int
    mtime: float
    uid: int
    gid: int


def split_leftovers(directory: Path, prefix: str, holding: Path | None) -> list[Path]:
    """The entries of ``directory`` named ``prefix...`` other than ``holding``: the splits
    (snapshots, clone directories) killed sessions left in a provider's own directory."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(prefix) and p != holding)


class MirrorProvider(abc.ABC):
    """A primary and its mirror.  Subclasses are registered through ``splitmirror_register_mirrors``.

    The provider never writes the primary.  Between :meth:`split` and :meth:`reestablish` the
    mirror is a point-in-time image that :meth:`open_split_copy` reads.
    """

    name: ClassVar[str]
    options_model: ClassVar[type[pydantic.BaseModel]] = NoOptions
    #: True when files can be read by physical extent (block mirrors); False for file mirrors.
    supports_extent_reads: ClassVar[bool] = False
    #: How many reads BACKUP keeps in flight on the split image (:mod:`..archive.readahead`).
    read_workers: ClassVar[int] = 2
    #: How the split becomes one instant for every file.  ``"frozen"``: the final pass copies
    #: while SPLIT holds frozen what the engine's mode and :meth:`freeze_paths` name.
    #: ``"snapshot"``: :meth:`split` takes one atomic image of everything under the primary (a
    #: btrfs snapshot), so SPLIT freezes nothing there: a freeze would hold the snapshot itself,
    #: which must write.  ``"per-file"``: each file's copy is atomic but the set is not, and none
    #: can be taken on a frozen filesystem (reflink clones).  With either of the last two, a
    #: freeze left on the primary's filesystem is refused in preflight (:meth:`freeze_problems`).
    split_instant: ClassVar[Literal["frozen", "snapshot", "per-file"]] = "frozen"

    def __init__(self, primary: Path, mirror: Path, options: pydantic.BaseModel) -> None:
        self.primary = primary
        self.mirror = mirror
        self.options = options
        #: splitmirror's own directories (the catalog's, the archives'), set by preflight before
        #: it asks anything: the directory mirror does not track where one of them is on the
        #: primary's filesystem (a mode that freezes the primary would block the session).
        self.own_paths: list[Path] = []
        #: The session's catalog id, set by INIT once its row exists (the command mirror hands
        #: it to the site's programs); None in ``check``.
        self.session_id: int | None = None

    @abc.abstractmethod
    def preflight(self) -> list[PreflightProblem]:
        """What would stop a sync or split, checked without changing anything."""

    @abc.abstractmethod
    def bulk_sync(self, progress: Progress) -> SyncStats:
        """SYNC phase: bring the mirror close to the primary while the database runs."""

    @abc.abstractmethod
    def final_sync(self, first: Sequence[Path], progress: Progress) -> SyncStats:
        """SPLIT phase, inside the window: make the mirror equal to the primary.

        ``first`` lists primary files in the engine's logical order; they are synchronized
        first and in that order (SQLite HOT_BACKUP needs the database before its WAL).
        """

    def skip_in_final_pass(self, paths: Sequence[Path]) -> None:  # noqa: B027 - optional
        """SPLIT, before :meth:`final_sync`: primary paths (directories or files) the archive
        does not read from the split image (the engine collects them from the primary after the
        window), so the final pass may leave them as they were.  A provider that cannot tell
        files apart (a block mirror) ignores it."""

    def catch_up(self, progress: Progress) -> SyncStats | None:
        """One more pre-copy pass at the end of SYNC, after the engine's ``before_window``
        (which may have written much: a checkpoint), so the final pass in the window has less
        to copy; None where the mirror has no pass cheaper than the final one (untracked)."""
        return None

    @abc.abstractmethod
    def split(self) -> None:
        """Stop synchronizing: the mirror is now the point-in-time image."""

    @abc.abstractmethod
    def open_split_copy(self, primary_path: Path) -> BinaryIO:
        """Open the split image of ``primary_path`` for reading (BACKUP phase)."""

    @abc.abstractmethod
    def reestablish(self) -> None:
        """CLEANUP: resume mirroring (or release the mirror); also called on failure paths."""

    # -- optional: what block-level providers need; file-level providers keep the defaults ------

    def notes(self) -> list[str]:
        """Lines ``splitmirror check`` prints about this mirror (not problems: facts a DBA wants,
        such as whether change tracking will be used)."""
        return []

    def close(self) -> None:  # noqa: B027 - optional: most providers hold nothing between phases
        """Called last in every session, pass or fail: release what the provider holds (a
        tracing instance, open devices)."""

    def freeze_paths(self) -> list[Path]:
        """Filesystems SPLIT must freeze for the final pass, whatever the mode (a block mirror's
        primary); frozen with the engine's and thawed after CHECK."""
        return []

    def freezes_for(self, engine_freezes: Sequence[Path]) -> list[Path]:
        """What SPLIT freezes: the engine's paths for its mode, less those a ``"snapshot"``
        split covers (under the primary), and :meth:`freeze_paths`."""
        kept = [p for p in engine_freezes if self.split_instant != "snapshot" or not self._inside(p)]
        return [*kept, *self.freeze_paths()]

    def freeze_problems(self, engine_freezes: Sequence[Path]) -> list[PreflightProblem]:
        """Freezes that would hold this provider's split itself: with a ``"snapshot"`` or
        ``"per-file"`` split, any freeze left on the primary's filesystem (the snapshot or the
        clones would wait for the thaw, which waits for them)."""
        if self.split_instant == "frozen" or not self.primary.is_dir():
            return []
        for path in self.freezes_for(engine_freezes):
            if path.exists() and same_filesystem(path, self.primary):
                if self.split_instant == "snapshot":
                    why, fix = "one snapshot of the primary", f"put {path} inside [mirror] primary"
                else:
                    why = "clones, one file at a time, and a frozen filesystem cannot clone"
                    fix = (
                        'use mode = "hot-backup" where the engine repairs a copy made file by file, '
                        "or the btrfs provider"
                    )
                return [
                    PreflightProblem(
                        f"the database's mode needs {path} frozen at the split, and the {self.name} "
                        f"mirror splits by {why} (the split would wait for the thaw)",
                        fix,
                    )
                ]
        return []

    def _inside(self, path: Path) -> bool:
        try:
            self.relative(path)
        except ValueError:
            return False
        return True

    def write_back_paths(self) -> list[Path]:
        """Filesystems whose dirty pages must be on the disk before the final pass, though the
        mode lets the database write on (a tracked directory mirror's primary: its tracker sees
        a write only once the page cache writes it back).  SPLIT writes them back (syncfs(2))
        after the freezes, without holding a writer: what the database writes after its quiesce
        is the mode's to repair (WAL, redo), as in an untracked final pass.  A filesystem the
        engine's mode freezes needs nothing more: the freeze wrote it back."""
        return []

    def checked(  # noqa: B027 - optional: only extent-reading providers need the maps
        self, maps: Mapping[Path, ExtentMap], fingerprints: Mapping[Path, Fingerprint]
    ) -> None:
        """CHECK, primary still frozen: each file's extent map and identity at the split
        (resolved paths); only called when :attr:`supports_extent_reads`."""

    def will_read(self, primary_paths: Sequence[Path]) -> None:  # noqa: B027 - optional
        """BACKUP, before its first read: the files it reads from the split image, in the order
        it reads them, so that a provider can plan its reads (the block mirror reads the
        extents of neighbouring small files as one)."""

    def split_stat(self, primary_path: Path) -> SplitStat:
        """Size, mode, mtime and owner of the file in the split image."""
        with self.open_split_copy(primary_path) as source:
            info = os.fstat(source.fileno())
        return SplitStat(info.st_size, info.st_mode, info.st_mtime, info.st_uid, info.st_gid)

    def split_reader(self, primary_path: Path) -> SplitReader:
        """The split copy of ``primary_path`` for BACKUP's read-ahead, which reads it from
        several threads at once (:mod:`.splitread`); by default :meth:`open_split_copy`'s
        file, by ``pread`` when it is a real file."""
        return reader_for(self.open_split_copy(primary_path))

    def read_method(self, primary_path: Path) -> str:
        """How BACKUP reads the file, for the catalog: ``file``, ``extent``, ``frozen-copy``."""
        return "file"

    def extents_of(self, primary_path: Path) -> list[list[int]]:
        """The extents BACKUP reads (``[logical, physical, length, flags]``), for the catalog."""
        return []

    def data_ranges(self, primary_path: Path) -> list[tuple[int, int]] | None:
        """``(offset, length)`` of the split copy's ranges that hold data; the rest are holes,
        archived as a sparse member without being read.  None: no holes known.  By default the
        split copy's own holes (``SEEK_DATA``) when it is a real file."""
        with self.open_split_copy(primary_path) as source:
            try:
                fd = source.fileno()
            except (OSError, io.UnsupportedOperation):
                return None
            return extents.data_ranges(fd)

    def exists_in_split(self, primary_path: Path) -> bool:
        """Whether the split image holds ``primary_path`` (providers may answer faster)."""
        try:
            self.open_split_copy(primary_path).close()
        except FileNotFoundError:
            return False
        return True

    def relative(self, primary_path: Path) -> Path:
        """``primary_path`` relative to the primary root; a :class:`ValueError` if outside it.

        Asked for every file in DISCOVER (inside the window) and again in BACKUP, so each
        directory's resolution is remembered for the session: resolving walks every component
        of the path, an ``lstat`` each, and a database's thousand files share a few directories.
        A file that is itself a link is resolved in full, every time."""
        path = os.fspath(primary_path)
        directory, name = os.path.split(path)
        directories = self._resolved_directories
        parent = directories.get(directory)
        if parent is None:
            parent = directories[directory] = str(Path(directory).resolve())
        if name in ("", ".", "..") or os.path.islink(path):
            resolved = str(primary_path.resolve())
        else:
            resolved = os.path.join(parent, name)
        root = self._resolved_primary
        if resolved == root:
            return Path(".")
        inside = root.rstrip(os.sep) + os.sep
        if not resolved.startswith(inside):
            raise ValueError(f"{resolved} is not inside the primary {root}")
        return Path(resolved[len(inside) :])

    def forget_resolutions(self) -> None:
        """Resolve afresh from now on: DISCOVER asks inside the window, and a link in the
        primary may have been re-pointed since INIT's preflight asked."""
        self.__dict__.pop("_resolved_directories", None)
        self.__dict__.pop("_resolved_primary", None)

    @functools.cached_property
    def _resolved_primary(self) -> str:
        return str(self.primary.resolve())

    @functools.cached_property
    def _resolved_directories(self) -> dict[str, str]:
        """Each directory asked about, as given, and where it really is."""
        return {}
