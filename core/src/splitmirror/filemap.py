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


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> Fingerprint:
        info = os.stat(path)
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@dataclasses.dataclass
class CheckResult:
    """CHECK's verdict, stored in the session's stats."""

    unchanged: int = 0
    remapped: int = 0
    new: int = 0
    gone_since_map: int = 0


class FileMap:
    """Fingerprints by resolved path."""

    def __init__(self) -> None:
        self.entries: dict[Path, Fingerprint] = {}

    def map(self, paths: Iterable[Path]) -> int:
        """MAP: fingerprint every candidate that exists; returns how many were mapped."""
        for path in paths:
            try:
                self.entries[path.resolve()] = Fingerprint.of(path)
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
            elif before != now:
                result.remapped += 1
            else:
                result.unchanged += 1
            self.entries[path] = now
        for path in set(self.entries) - wanted:
            del self.entries[path]
            result.gone_since_map += 1
        return result
