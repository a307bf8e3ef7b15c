"""The ``command`` mirror provider: an array, LVM, ZFS or a cloud splits when a command says so.

The SAP BRBACKUP model (``split_cmd``/``resync_cmd``): splitmirror does not copy anything; it
runs the site's programs at the right moments and reads the image they leave.

- SYNC runs ``sync_command`` (optional): bring the mirror in step, or wait until it is, and exit.
- SPLIT, inside the window, freezes the primary (``freeze``, by default: the split is then an
  image of a still filesystem, as the block mirror's is) and runs ``split_command``; a split that
  hangs is ended at ``max_window`` (its process group killed) and the database released.
- BACKUP reads the split image where the configuration says: a mount point the split command
  mounted (``image_mountpoint``, read file by file), or a device or image file read by extent,
  never mounted (``image_device``: CHECK maps the files while the primary is still frozen, as
  for the block mirror).
- CLEANUP runs ``resync_command`` (optional).  Its failure fails CLEANUP, never the archive:
  the archive stays, complete and catalogued.

``[mirror] mirror`` is the provider's own directory (the mirror's lock and owner record beside
it, the session's file list in it), never on the primary.  Each command gets the session in its
environment (:func:`command_environment`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, BinaryIO

import pydantic

from .. import btrfs, impl
from ..config import Duration
from ..engine import PreflightProblem
from ..extents import ExtentMap
from ..filemap import Fingerprint
from ..fsfreeze import mount_point, mounted_from, path_in_filesystem, same_filesystem
from ..placement import containment_problem
from ..progress import Progress
from .base import MirrorProvider, SplitStat, SyncStats
from .block import BlockMirror, BlockOptions
from .blocksync import DirectReader
from .commands import run_command
from .splitread import SplitReader

Argv = Annotated[list[str], pydantic.Field(min_length=1)]
#: How much of the start of image_device is compared with the primary's device after the split.
START = 1 << 20


class CommandOptions(pydantic.BaseModel):
    """``[mirror]`` keys of the command provider."""

    model_config = pydantic.ConfigDict(extra="forbid")

    #: SYNC: bring the mirror in step (or wait until it is); none: the array keeps it in step.
    sync_command: Argv | None = None
    #: SPLIT, inside the window: split the mirror off.
    split_command: Argv
    #: CLEANUP: re-establish the mirror; none: the next sync_command does.
    resync_command: Argv | None = None
    sync_timeout: Duration = 3600.0
    #: Also bounded by ``[session] max_window``, which ends the command first.
    split_timeout: Duration = 30.0
    resync_timeout: Duration = 3600.0
    #: Where the split command mounted the image (read file by file) ...
    image_mountpoint: Path | None = None
    #: ... or the device or image file holding it (read by extent, never mounted).
    image_device: Path | None = None
    #: Freeze the primary around the split command; false for a split that is itself one
    #: instant and cannot run under a freeze (a ZFS snapshot: ZFS does not take FIFREEZE).
    freeze: bool = True

    @pydantic.model_validator(mode="after")
    def _one_image(self) -> CommandOptions:
        if (self.image_mountpoint is None) == (self.image_device is None):
            raise ValueError(
                "set exactly one of image_mountpoint (where the split command mounts the image) and "
                "image_device (the device or image file holding it, read by extent)"
            )
        if self.image_device is not None and not self.freeze:
            raise ValueError(
                "image_device needs freeze = true: BACKUP reads each file at the extents CHECK maps, "
                "which are the split image's only while the primary is frozen; use image_mountpoint"
            )
        return self


def command_environment(mirror: CommandMirror, phase: str, files: Path | None) -> dict[str, str]:
    """What every command finds in its environment."""
    options = mirror.settings
    image = options.image_mountpoint or options.image_device
    env = {
        "SPLITMIRROR_PHASE": phase,
        "SPLITMIRROR_SESSION": str(mirror.session_id or ""),
        "SPLITMIRROR_PRIMARY": str(mirror.primary),
        "SPLITMIRROR_IMAGE": str(image),
    }
    if files is not None:
        env["SPLITMIRROR_FILE_LIST"] = str(files)
    return env


class CommandMirror(MirrorProvider):
    """Split by the site's commands; read the image they leave."""

    name = "command"
    options_model = CommandOptions

    def __init__(self, primary: Path, mirror: Path, options: pydantic.BaseModel | None = None) -> None:
        if not isinstance(options, CommandOptions):
            raise TypeError("the command mirror needs its options (split_command, an image key)")
        super().__init__(primary, mirror, options)
        self.settings = options
        self._files: Path | None = None
        self._resync_due = False
        self._extents: BlockMirror | None = None
        #: The primary's directory in the mounted image (image_mountpoint), found by :meth:`split`.
        self._primary_in_image: Path | None = None
        if not options.freeze:  # the site's split is one instant by itself (a snapshot)
            self.split_instant = "snapshot"  # type: ignore[misc]
        if options.image_device is not None:  # read by extent, as the block mirror does
            self._extents = BlockMirror(primary, mirror, BlockOptions())
            self._extents.image, self._extents.spool_parent = options.image_device, mirror
            self.supports_extent_reads = True  # type: ignore[misc]
            self.read_workers = BlockMirror.read_workers  # type: ignore[misc]

    # -- preflight ------------------------------------------------------------------------

    def preflight(self) -> list[PreflightProblem]:
        problems: list[PreflightProblem] = []
        options, primary = self.settings, self.primary
        if not primary.is_dir():
            state = "is not a directory" if primary.exists() else "does not exist"
            return [PreflightProblem(f"the primary {primary} {state}", "set [mirror] primary")]
        for key in ("sync_command", "split_command", "resync_command"):
            argv = getattr(options, key)
            if argv is not None and shutil.which(argv[0]) is None:
                problems.append(
                    PreflightProblem(
                        f"[mirror] {key}'s program {argv[0]} is not found or not executable", "fix the path"
                    )
                )
        where = self.mirror if self.mirror.is_dir() else self.mirror.parent
        if not where.is_dir() or not os.access(where, os.W_OK | os.X_OK):
            problems.append(
                PreflightProblem(f"{where} is not a writable directory", f"create it (mkdir -p {where})")
            )
        elif options.freeze and same_filesystem(where, primary):
            problems.append(
                PreflightProblem(
                    f"the mirror {self.mirror} is on the primary's filesystem, which SPLIT freezes",
                    "set [mirror] mirror to a directory on another filesystem",
                )
            )
        image = options.image_mountpoint or options.image_device
        assert image is not None
        if options.image_device is not None:
            problems += self._device_problems(options.image_device)
        inside = containment_problem(primary, image)
        if inside:
            problems.append(PreflightProblem(inside, "put the split image outside the primary"))
        if options.freeze and os.geteuid() != 0:
            problems.append(
                PreflightProblem("freezing the primary needs root", "run as root, or set freeze = false")
            )
        return problems

    def _device_problems(self, device: Path) -> list[PreflightProblem]:
        """What makes reading the files' extents from ``device`` wrong, known before anything runs."""
        if btrfs.is_btrfs(self.primary):
            return [
                PreflightProblem(
                    "image_device cannot serve a btrfs primary (its extents are not device offsets)",
                    "use image_mountpoint, or the btrfs provider",
                )
            ]
        own = mounted_from(self.primary)
        if own is None:
            return [
                PreflightProblem(
                    f"the primary {self.primary} is not on a block device, so image_device cannot be "
                    "compared with it or read by its extents",
                    "use image_mountpoint",
                )
            ]
        if os.path.realpath(own) == os.path.realpath(device):
            return [
                PreflightProblem(
                    f"image_device {device} is the primary's own device",
                    "set it to the split copy (the mirror LUN, the snapshot volume, the image file)",
                )
            ]
        return []

    def notes(self) -> list[str]:
        options = self.settings
        how = (
            f"mounted at {options.image_mountpoint}, read file by file"
            if options.image_mountpoint
            else f"on {options.image_device}, read by extent"
        )
        frozen = "with the primary frozen" if options.freeze else "without freezing the primary"
        return [f"command mirror: SPLIT runs {options.split_command[0]} {frozen}; the split image is {how}"]

    # -- the session ----------------------------------------------------------------------

    def freeze_paths(self) -> list[Path]:
        return [self.primary] if self.settings.freeze else []

    def _run(self, what: str, argv: list[str] | None, timeout: float, phase: str) -> None:
        if argv is not None:
            run_command(what, argv, timeout, command_environment(self, phase, self._files))

    def bulk_sync(self, progress: Progress) -> SyncStats:
        self.mirror.mkdir(mode=0o700, exist_ok=True)
        for stale in self.mirror.glob("files-*.txt"):  # a killed session's
            stale.unlink(missing_ok=True)
        self._run("the sync command", self.settings.sync_command, self.settings.sync_timeout, "SYNC")
        progress(0, 0)
        return SyncStats()

    def final_sync(self, first: Sequence[Path], progress: Progress) -> SyncStats:
        """Nothing to copy: the file list the split command gets, in archive order."""
        self._files = self.mirror / f"files-{self.session_id or 0}.txt"
        self._files.write_text("".join(f"{path}\n" for path in first))
        return SyncStats(files_scanned=len(first))

    def split(self) -> None:
        self._resync_due = True  # a split that failed half way still needs its resync
        self._run("the split command", self.settings.split_command, self.settings.split_timeout, "SPLIT")
        mountpoint, device = self.settings.image_mountpoint, self.settings.image_device
        if mountpoint is not None and mount_point(mountpoint) != mountpoint.resolve():
            raise OSError(
                f"the split command exited 0, but nothing is mounted at image_mountpoint {mountpoint}"
            )
        if mountpoint is not None:
            self._primary_in_image = self._find_primary_in(mountpoint)
        if device is not None:
            self._check_image(device)

    def _check_image(self, device: Path) -> None:
        """The image read by extent must be a copy of the primary's device: the extents are its
        offsets.  Its first MiB (superblock, group descriptors) is compared with the frozen
        primary's, so a whole LUN named for a partition, or another volume, fails here instead
        of archiving the wrong bytes under checksums made from them."""
        primary = mounted_from(self.primary)
        assert primary is not None, "preflight refuses a primary that is not on a device"
        try:
            with contextlib.ExitStack() as stack:
                starts = []
                for path in (primary, device):
                    reader = DirectReader(path, START)
                    stack.callback(reader.close)
                    starts.append(reader.read(0, START))
        except OSError as error:
            raise OSError(
                f"the split command exited 0, but image_device {device} cannot be read ({error.strerror})"
            ) from None
        if len(starts[1]) < len(starts[0]):
            raise OSError(f"image_device {device} is smaller than the primary's device {primary}")
        if starts[0] != starts[1]:
            raise OSError(
                f"image_device {device} does not hold a copy of the primary's device {primary} (their "
                "first MiB differ); set image_device to the split copy of exactly that device (not the "
                "whole disk of a partition)"
            )

    def reestablish(self) -> None:
        """Let go of the image, then resynchronize (once, even when asked again on a failure path)."""
        if self._extents is not None:
            self._extents.reestablish()
        if self._resync_due:
            self._resync_due = False
            self._run(
                "the resync command", self.settings.resync_command, self.settings.resync_timeout, "CLEANUP"
            )
        if self._files is not None:  # after the resync, which gets it too
            self._files.unlink(missing_ok=True)

    def close(self) -> None:
        if self._extents is not None:
            self._extents.reestablish()

    # -- reading the image ------------------------------------------------------------------

    def _image_path(self, primary_path: Path) -> Path:
        assert self._primary_in_image is not None, "the image is found by split()"
        return self._primary_in_image / self.relative(primary_path)

    def _find_primary_in(self, image: Path) -> Path:
        """Where the primary is in the mounted image.  Mounted whole (a LUN, a logical volume),
        the image shows the filesystem from its root, and the primary is where the mount table
        says it is in its filesystem (a bind or ``subvol=`` mount of a subdirectory included);
        mounted as the primary's mount shows it (a snapshot of the primary's own subvolume, a
        ZFS clone of its dataset), the primary is where it is below its mount point."""
        candidates = [
            path_in_filesystem(self.primary),
            os.path.relpath(self.primary.resolve(), mount_point(self.primary)),
        ]
        for candidate in dict.fromkeys(candidates):
            if (image / candidate).is_dir():
                return image / candidate
        places = " or ".join(dict.fromkeys(candidates))
        raise OSError(
            f"the split image mounted at {image} holds no {places}, where the primary {self.primary} "
            "would be; mount the primary's filesystem (or the same subvolume) there"
        )

    def checked(self, maps: Mapping[Path, ExtentMap], fingerprints: Mapping[Path, Fingerprint]) -> None:
        if self._extents is not None:
            self._extents.checked(maps, fingerprints)

    def will_read(self, primary_paths: Sequence[Path]) -> None:
        if self._extents is not None:
            self._extents.will_read(primary_paths)

    def open_split_copy(self, primary_path: Path) -> BinaryIO:
        if self._extents is not None:
            return self._extents.open_split_copy(primary_path)
        return open(self._image_path(primary_path), "rb")

    def split_reader(self, primary_path: Path) -> SplitReader:
        if self._extents is not None:
            return self._extents.split_reader(primary_path)
        return super().split_reader(primary_path)

    def split_stat(self, primary_path: Path) -> SplitStat:
        if self._extents is not None:
            return self._extents.split_stat(primary_path)
        return super().split_stat(primary_path)

    def read_method(self, primary_path: Path) -> str:
        return "file" if self._extents is None else self._extents.read_method(primary_path)

    def extents_of(self, primary_path: Path) -> list[list[int]]:
        return [] if self._extents is None else self._extents.extents_of(primary_path)

    def data_ranges(self, primary_path: Path) -> list[tuple[int, int]] | None:
        if self._extents is not None:
            return self._extents.data_ranges(primary_path)
        return super().data_ranges(primary_path)

    def exists_in_split(self, primary_path: Path) -> bool:
        if self._extents is not None:
            return self._extents.exists_in_split(primary_path)
        return self._image_path(primary_path).is_file()


@impl
def splitmirror_register_mirrors(register: Callable[[type[MirrorProvider]], None]) -> None:
    register(CommandMirror)
