"""The ``reflink`` mirror provider: the split is a clone (FICLONE) of every database file.

``[mirror] primary`` is the directory holding the database's files on a filesystem that clones
(xfs made with reflink, the default of current xfsprogs; btrfs); ``mirror`` a directory on the
same filesystem, outside the primary.  SPLIT clones each file DISCOVER listed, in the engine's
logical order, into ``splitmirror-split-<UTC time>-<pid>`` there: a clone shares the file's
extents, so the window costs metadata, not data, whatever the database's size.  BACKUP reads the
clones; CLEANUP deletes them (and the next session's SYNC what a killed session left).

Each clone is atomic, but the set is not: the files are cloned one after another while the
database is quiesced, and none can be cloned on a frozen filesystem (FICLONE waits for the
thaw).  So this provider serves the modes that repair a copy made file by file
(:attr:`split_instant` ``"per-file"``): SQLite in both modes (its own locks hold every file
still), PostgreSQL HOT_BACKUP (WAL replay from the start LSN).  A mode that needs the primary
frozen for an atomic image (PostgreSQL FREEZE, MariaDB and MySQL in both modes: InnoDB writes
in the background) is refused in preflight, pointing at the btrfs provider.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import pydantic

from .. import btrfs, impl
from ..engine import PreflightProblem
from ..fsfreeze import filesystem_type_of, same_filesystem
from ..placement import containment_problem
from ..progress import Progress
from .base import MirrorProvider, SplitStat, SyncStats, split_leftovers

log = logging.getLogger("splitmirror.mirror.reflink")

#: _IOW(0x94, 9, int): make the destination share the source's extents (linux/fs.h).
FICLONE = 0x40049409
#: The names of this provider's split directories in the mirror directory.
SPLIT_PREFIX = "splitmirror-split-"


def clone(source_fd: int, destination_fd: int) -> None:
    """Make ``destination_fd``'s file a clone of ``source_fd``'s (same filesystem only)."""
    fcntl.ioctl(destination_fd, FICLONE, source_fd)


class ReflinkMirror(MirrorProvider):
    """Split by cloning every database file into a directory beside the primary."""

    name = "reflink"
    split_instant = "per-file"

    def __init__(self, primary: Path, mirror: Path, options: pydantic.BaseModel | None = None) -> None:
        super().__init__(primary, mirror, options or self.options_model())
        #: This session's split directory, from the final pass until CLEANUP deletes it.
        self.split_dir: Path | None = None
        self._skip: tuple[str, ...] = ()
        #: Each clone's size, mode, mtime and owner as the primary's file had them when cloned.
        self._stats: dict[str, SplitStat] = {}

    # -- preflight ------------------------------------------------------------------------

    def preflight(self) -> list[PreflightProblem]:
        primary, mirror = self.primary, self.mirror
        if not primary.is_dir():
            state = "is not a directory" if primary.exists() else "does not exist"
            return [
                PreflightProblem(f"the primary {primary} {state}", "set [mirror] primary to its directory")
            ]
        nested = containment_problem(primary, mirror)
        if nested:
            return [PreflightProblem(nested, "set [mirror] mirror to a directory outside the primary")]
        where = mirror if mirror.is_dir() else mirror.parent
        if mirror.exists() and not mirror.is_dir():
            return [PreflightProblem(f"the mirror {mirror} is not a directory", "set it to a directory")]
        if not where.is_dir() or not os.access(where, os.W_OK | os.X_OK):
            return [PreflightProblem(f"{where} is not a writable directory", f"create it (mkdir -p {where})")]
        if not same_filesystem(where, primary):
            return [
                PreflightProblem(
                    f"the mirror {mirror} is on another filesystem than the primary {primary}, and a "
                    "clone stays on its filesystem",
                    "set [mirror] mirror to a directory on the primary's filesystem, outside the primary",
                )
            ]
        inner = next(btrfs.nested(primary), None)
        if inner is not None:
            return [
                PreflightProblem(
                    f"the primary {primary} holds {inner}, another filesystem or subvolume, whose files "
                    "cannot be cloned into the mirror",
                    "move what is there into the primary's filesystem, or set [mirror] primary below it",
                )
            ]
        if not _clones(where):
            kind = filesystem_type_of(primary)
            return [
                PreflightProblem(
                    f"the primary's filesystem ({kind}, holding {primary}) cannot clone files",
                    'use xfs made with reflink (mkfs.xfs -m reflink=1) or btrfs, or provider = "directory"',
                )
            ]
        return []

    def notes(self) -> list[str]:
        return [
            f"reflink clones: SPLIT clones every database file of {self.primary} into {self.mirror}, "
            "BACKUP reads the clones and CLEANUP deletes them; no sync pass is needed",
            *(f"clones a killed session left, deleted by the next session: {p}" for p in self.leftovers()),
        ]

    # -- the session ----------------------------------------------------------------------

    def leftovers(self) -> list[Path]:
        """Split directories of this provider that no session holds."""
        return split_leftovers(self.mirror, SPLIT_PREFIX, self.split_dir)

    def bulk_sync(self, progress: Progress) -> SyncStats:
        """Nothing to copy; the mirror directory made ready and a killed session's clones deleted."""
        self.mirror.mkdir(mode=0o700, exist_ok=True)
        for path in self.leftovers():
            shutil.rmtree(path)
            log.info("deleted %s, clones an earlier session left", path)
        progress(0, 0)
        return SyncStats()

    def skip_in_final_pass(self, paths: Sequence[Path]) -> None:
        """What the engine collects from the primary after the window is not cloned."""
        self._skip = tuple(str(self.relative(p)) for p in paths if self._inside(p))

    def final_sync(self, first: Sequence[Path], progress: Progress) -> SyncStats:
        """Clone each file, in the engine's order (SQLite's database before its WAL)."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        split_dir = self.mirror / f"{SPLIT_PREFIX}{stamp}-{os.getpid()}"
        split_dir.mkdir(mode=0o700)
        self.split_dir = split_dir
        stats = SyncStats()
        made: set[Path] = {split_dir}
        for done, path in enumerate(first, 1):
            relative = str(self.relative(path))
            if any(relative == s or relative.startswith(s + os.sep) for s in self._skip):
                continue
            destination = split_dir / relative
            if destination.parent not in made:
                destination.parent.mkdir(parents=True, exist_ok=True)
                made.add(destination.parent)
            if self._clone(path, destination, relative):
                stats.files_created += 1
            progress(done, len(first))
        stats.files_scanned = len(first)
        return stats

    def _clone(self, path: Path, destination: Path, relative: str) -> bool:
        try:
            source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # gone since DISCOVER: CHECK and BACKUP decide whether it may be
        try:
            target = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                clone(source, target)
                size = os.fstat(target).st_size  # the clone's: the source may have grown since
            except OSError as error:
                said = f"could not clone {path} into {destination} ({error.strerror})"
                raise OSError(error.errno, said) from None
            finally:
                os.close(target)
            info = os.fstat(source)  # mode, owner and mtime: the clone's are its own
        finally:
            os.close(source)
        self._stats[relative] = SplitStat(size, info.st_mode, info.st_mtime, info.st_uid, info.st_gid)
        return True

    def split(self) -> None:
        """The clones are the split image: nothing more to do."""

    def open_split_copy(self, primary_path: Path) -> BinaryIO:
        if self.split_dir is None:
            raise RuntimeError("the reflink mirror has no clones before SPLIT")
        return open(self.split_dir / self.relative(primary_path), "rb")

    def split_stat(self, primary_path: Path) -> SplitStat:
        known = self._stats.get(str(self.relative(primary_path)))
        return known if known is not None else super().split_stat(primary_path)

    def exists_in_split(self, primary_path: Path) -> bool:
        return self.split_dir is not None and (self.split_dir / self.relative(primary_path)).is_file()

    def reestablish(self) -> None:
        """Delete this session's clones (what was shared stays with the primary)."""
        split_dir, self.split_dir = self.split_dir, None
        self._stats = {}
        if split_dir is not None:
            shutil.rmtree(split_dir, ignore_errors=True)

    def close(self) -> None:
        """A session that ends without CLEANUP still deletes its clones."""
        with contextlib.suppress(OSError):
            self.reestablish()


def _clones(directory: Path) -> bool:
    """Whether ``directory``'s filesystem clones: FICLONE between two unnamed files there
    (``O_TMPFILE``: nothing appears, nothing is left)."""
    flags = os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_TMPFILE", 0)
    try:
        source = os.open(directory, flags, 0o600)
    except OSError:
        return True  # cannot probe here (no O_TMPFILE): the first clone will say
    try:
        target = os.open(directory, flags, 0o600)
        try:
            clone(source, target)
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV):
                return False
            raise
        finally:
            os.close(target)
    finally:
        os.close(source)
    return True


@impl
def splitmirror_register_mirrors(register: Callable[[type[MirrorProvider]], None]) -> None:
    register(ReflinkMirror)
