"""MAP and CHECK: what each file looked like before the split, and what changed by the split.

A :class:`Fingerprint` (device, inode, size, mtime, ctime) says whether a file changed.  MAP
records one per candidate file before quiescing; CHECK, while the primary is still quiesced
(and frozen where frozen), compares the discovered files against MAP and remaps only the files
that changed or appeared, so CHECK's cost in the window grows with the change, not the database.
Mirror providers that read by physical extent attach extents to the map (the ``block``
provider); for a file-level mirror the fingerprint is the whole map.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from .extents import ExtentMap, map_file


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int = 0
    uid: int = 0
    gid: int = 0

    @classmethod
    def of(cls, path: Path) -> Fingerprint:
        info = os.stat(path)
        return cls(
            info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
            info.st_mode, info.st_uid, info.st_gid,
        )  # fmt: skip


@dataclasses.dataclass
class CheckResult:
    """CHECK's verdict, stored in the session's stats."""

    unchanged: int = 0
    remapped: int = 0
    new: int = 0
    gone_since_map: int = 0


class FileMap:
    """Fingerprints (and, with ``with_extents``, extent maps) by resolved path.

    ``remap_at_check`` exists for one test: with it off, CHECK keeps MAP's extent maps for
    changed files, which shows what CHECK is for (the archive is then wrong)."""

    def __init__(self, *, with_extents: bool = False) -> None:
        self.entries: dict[Path, Fingerprint] = {}
        self.extents: dict[Path, ExtentMap] = {}
        self.with_extents = with_extents
        self.remap_at_check = True

    def _record(self, path: Path, fingerprint: Fingerprint) -> None:
        self.entries[path] = fingerprint
        if self.with_extents:
            self.extents[path] = map_file(path)

    def map(self, paths: Iterable[Path]) -> int:
        """MAP: fingerprint (and map) every candidate that exists; returns how many."""
        for path in paths:
            try:
                resolved = path.resolve()
                self._record(resolved, Fingerprint.of(resolved))
            except FileNotFoundError:
                continue
        return len(self.entries)

    def check(self, paths: Iterable[Path]) -> CheckResult:
        """CHECK: remap changed files, map new ones, forget files the database no longer uses."""
        result = CheckResult()
        wanted = {path.resolve() for path in paths}
        for path in wanted:
            now = Fingerprint.of(path)
            before = self.entries.get(path)
            if before is None:
                result.new += 1
                self._record(path, now)
            elif before != now:
                result.remapped += 1
                if self.remap_at_check:
                    self._record(path, now)
                else:
                    self.entries[path] = now  # the size and identity move on, the extents do not
            else:
                result.unchanged += 1
        for path in set(self.entries) - wanted:
            del self.entries[path]
            self.extents.pop(path, None)
            result.gone_since_map += 1
        return result
