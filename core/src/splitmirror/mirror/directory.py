"""The ``directory`` mirror provider: a file-level mirror of a primary directory tree.

The mirror is a plain directory kept equal to the primary by :class:`DirectorySync`; splitting
it is simply not syncing any more, so the split is recorded in a marker file beside the mirror
for whoever looks later (``check``, a session started after a crash).  Both hidden files live
next to the mirror, not in it, so the mirror holds exactly the primary's tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import pydantic

from .. import impl
from ..config import Size
from ..engine import PreflightProblem
from ..progress import Progress
from .base import MirrorProvider, SyncStats
from .dirsync import DEFAULT_BLOCK_SIZE, DirectorySync, containment_problem


class DirectoryOptions(pydantic.BaseModel):
    """``[mirror]`` keys of the directory provider."""

    model_config = pydantic.ConfigDict(extra="forbid")

    #: Compare-and-write granularity of the synchronizer.
    block_size: Size = DEFAULT_BLOCK_SIZE


class DirectoryMirror(MirrorProvider):
    """Mirror ``primary`` into the directory ``mirror`` on any filesystem."""

    name = "directory"
    supports_extent_reads = False
    options_model = DirectoryOptions

    def __init__(self, primary: Path, mirror: Path, options: pydantic.BaseModel | None = None) -> None:
        settings = options if isinstance(options, DirectoryOptions) else DirectoryOptions()
        super().__init__(primary, mirror, settings)
        self.block_size = settings.block_size
        where = Path(os.path.abspath(mirror))
        self.state_path = where.parent / f".{where.name}.splitmirror-sync.json"
        self.split_marker = where.parent / f".{where.name}.splitmirror-split.json"

    def preflight(self) -> list[PreflightProblem]:
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

    def bulk_sync(self, progress: Progress) -> SyncStats:
        return self._synchronizer().sync(progress=progress)

    def final_sync(self, first: Sequence[Path], progress: Progress) -> SyncStats:
        return self._synchronizer().sync(first, progress)

    def split(self) -> None:
        self._write_marker("split")

    def open_split_copy(self, primary_path: Path) -> BinaryIO:
        return open(self.mirror / self.relative(primary_path), "rb")

    def reestablish(self) -> None:
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
        tmp = self.split_marker.with_name(self.split_marker.name + ".tmp")
        with open(tmp, "w", encoding="ascii") as out:
            json.dump({"state": state}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.split_marker)
        fd = os.open(self.split_marker.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@impl
def splitmirror_register_mirrors(register: Callable[[type[MirrorProvider]], None]) -> None:
    register(DirectoryMirror)
