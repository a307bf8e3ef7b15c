"""The ``btrfs`` mirror provider: the split is a read-only snapshot of the primary subvolume.

``[mirror] primary`` is a btrfs subvolume holding every database file; ``mirror`` a directory
on the same btrfs, outside the primary, where SPLIT puts the snapshot
(``splitmirror-split-<UTC time>-<pid>``) that BACKUP reads and CLEANUP deletes.  There is no
sync pass: the snapshot shares the primary's extents, so the window costs one transaction
commit (with the subvolume's dirty pages written back first), not a copy of the data.

The snapshot is itself the instant: btrfs takes it atomically for the whole subvolume, so SPLIT
freezes nothing under the primary (:attr:`split_instant`); a freeze would not help anyway, since
the snapshot must write and would wait for the thaw.  The image is what a crash at that instant
would leave, as a frozen filesystem's is.

A snapshot a killed session left behind is recognised by its name in the mirror directory
(which the mirror claim gives to this primary alone) and deleted by the next session's SYNC.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import pydantic

from .. import btrfs, impl
from ..engine import PreflightProblem
from ..fsfreeze import same_filesystem
from ..placement import containment_problem
from ..progress import Progress
from .base import MirrorProvider, SyncStats, split_leftovers

log = logging.getLogger("splitmirror.mirror.btrfs")

#: The names of this provider's snapshots in the mirror directory.
SNAPSHOT_PREFIX = "splitmirror-split-"


class BtrfsMirror(MirrorProvider):
    """Split by a read-only btrfs snapshot of the primary subvolume."""

    name = "btrfs"
    split_instant = "snapshot"

    def __init__(self, primary: Path, mirror: Path, options: pydantic.BaseModel | None = None) -> None:
        super().__init__(primary, mirror, options or self.options_model())
        #: The snapshot of this session, from :meth:`split` until CLEANUP deletes it.
        self.snapshot: Path | None = None

    # -- preflight ------------------------------------------------------------------------

    def preflight(self) -> list[PreflightProblem]:
        problems = self._primary_problems() + self._mirror_problems()
        if os.geteuid() != 0:
            problems.append(
                PreflightProblem(
                    "creating and deleting btrfs snapshots needs root (without it, one could be made "
                    "and never deleted)",
                    "run as root",
                )
            )
        return problems

    def _primary_problems(self) -> list[PreflightProblem]:
        primary = self.primary.resolve()
        if not primary.is_dir():
            state = "is not a directory" if primary.exists() else "does not exist"
            return [
                PreflightProblem(
                    f"the primary {primary} {state}", "set [mirror] primary to a btrfs subvolume"
                )
            ]
        if not btrfs.is_btrfs(primary):
            return [
                PreflightProblem(
                    f"the primary {primary} is not on btrfs",
                    'use provider = "directory" or "block", or move the database to a btrfs subvolume',
                )
            ]
        if not btrfs.is_subvolume(primary):
            holder = btrfs.containing_subvolume(primary)
            return [
                PreflightProblem(
                    f"the primary {primary} is a directory inside the subvolume {holder}, not a subvolume "
                    "(a snapshot takes a whole subvolume)",
                    f"make the database's directory a subvolume of its own (btrfs subvolume create), or set "
                    f"[mirror] primary = {holder}",
                )
            ]
        inner = next(btrfs.nested(primary), None)
        if inner is not None:
            return [
                PreflightProblem(
                    f"the primary {primary} holds {inner}, a subvolume or filesystem of its own, which a "
                    "snapshot of the primary leaves out (an empty directory in the image)",
                    "move what is there into the primary subvolume, or out of it",
                )
            ]
        return []

    def _mirror_problems(self) -> list[PreflightProblem]:
        mirror, primary = self.mirror, self.primary
        nested = containment_problem(primary, mirror)
        if nested:
            return [PreflightProblem(nested, "set [mirror] mirror to a directory outside the primary")]
        where = mirror if mirror.is_dir() else mirror.parent
        if mirror.exists() and not mirror.is_dir():
            return [
                PreflightProblem(
                    f"the mirror {mirror} is not a directory", "set [mirror] mirror to a directory"
                )
            ]
        if not where.is_dir():
            return [
                PreflightProblem(
                    f"the mirror's parent {where} does not exist", f"create it (mkdir -p {where})"
                )
            ]
        if not os.access(where, os.W_OK | os.X_OK):
            return [PreflightProblem(f"{where} is not writable", "make it writable or run as its owner")]
        if primary.is_dir() and not same_filesystem(where, primary):
            return [
                PreflightProblem(
                    f"the mirror {mirror} is not on the primary's btrfs (a snapshot stays on its filesystem)",
                    "set [mirror] mirror to a directory on the same btrfs, outside the primary",
                )
            ]
        return []

    def notes(self) -> list[str]:
        return [
            f"btrfs snapshots: SPLIT takes a read-only snapshot of {self.primary} in {self.mirror}, "
            "BACKUP reads it and CLEANUP deletes it; no sync pass is needed (the snapshot shares the "
            "primary's extents)",
            *(
                f"a snapshot a killed session left, deleted by the next session: {p}"
                for p in self.leftovers()
            ),
        ]

    # -- the session ----------------------------------------------------------------------

    def leftovers(self) -> list[Path]:
        """Snapshots of this provider in the mirror directory that no session holds."""
        return split_leftovers(self.mirror, SNAPSHOT_PREFIX, self.snapshot)

    def bulk_sync(self, progress: Progress) -> SyncStats:
        """Nothing to copy; the mirror directory made ready and what a killed session left deleted
        (outside the window: deleting a snapshot commits a transaction)."""
        self.mirror.mkdir(mode=0o700, exist_ok=True)
        for path in self.leftovers():
            try:
                btrfs.delete_subvolume(path)
            except OSError as error:
                raise OSError(
                    error.errno,
                    f"cannot delete {path}, a snapshot an earlier session left ({error.strerror}); delete "
                    f"it (btrfs subvolume delete {path}) and run the backup again",
                ) from None
            log.info("deleted %s, a snapshot an earlier session left", path)
        progress(0, 0)
        return SyncStats()

    def final_sync(self, first: Sequence[Path], progress: Progress) -> SyncStats:
        """Nothing to copy: :meth:`split` takes the image."""
        return SyncStats()

    def split(self) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        snapshot = self.mirror / f"{SNAPSHOT_PREFIX}{stamp}-{os.getpid()}"
        self.snapshot = snapshot  # before the ioctl: a signal as it returns must not lose it
        try:
            btrfs.snapshot(self.primary, snapshot, readonly=True)
        except OSError as error:
            self.snapshot = None
            raise OSError(
                error.errno,
                f"could not snapshot {self.primary} into {self.mirror} ({error.strerror}); the database "
                "was released and nothing was kept: check that directory (free space, attributes: lsattr -d)",
            ) from None

    def open_split_copy(self, primary_path: Path) -> BinaryIO:
        if self.snapshot is None:
            raise RuntimeError("the btrfs mirror has no snapshot before SPLIT")
        return open(self.snapshot / self.relative(primary_path), "rb")

    def exists_in_split(self, primary_path: Path) -> bool:
        return self.snapshot is not None and (self.snapshot / self.relative(primary_path)).is_file()

    def reestablish(self) -> None:
        """Delete this session's snapshot.  One that cannot be deleted now (in use, made
        immutable) does not cost the archive: it is logged, and the next session deletes it
        or says why it cannot."""
        snapshot, self.snapshot = self.snapshot, None
        if snapshot is None:
            return
        try:
            btrfs.delete_subvolume(snapshot)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning(
                "could not delete the snapshot %s (%s); the next session deletes it, or says why not",
                snapshot,
                error.strerror,
            )

    def close(self) -> None:
        """A session that ends without CLEANUP (a failure before it) still deletes its snapshot."""
        with contextlib.suppress(OSError):
            self.reestablish()


@impl
def splitmirror_register_mirrors(register: Callable[[type[MirrorProvider]], None]) -> None:
    register(BtrfsMirror)
