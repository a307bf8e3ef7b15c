"""MAP and CHECK: what each file looked like before the split, and what changed by the split.

A :class:`Fingerprint` (device, inode, size, mtime, ctime) says whether a file changed.  MAP
records one per candidate file before quiescing; CHECK, while the primary is still quiesced
(and frozen where frozen), compares the discovered files against MAP and remaps the files that
changed or appeared.  For a file-level mirror the fingerprint is the whole map.

Mirror providers that read by physical extent attach extents to the map (the ``block``
provider).  Their CHECK also asks FIEMAP again for files whose fingerprint did not change,
without a flush (the filesystem is frozen: nothing is dirty), and keeps the new list when it
differs: a defragmenter or a filesystem's own reallocation moves blocks without touching
mtime or ctime.  That costs one ioctl per file inside the window (``benchmarks/block.py``
measures it); reading a moved file from its old blocks would cost a wrong backup.
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
    moved: int = 0  # same fingerprint, different extents (with_extents only)


class FileMap:
    """Fingerprints (and, with ``with_extents``, extent maps) by resolved path.

    ``remap_at_check`` exists for one test: with it off, CHECK keeps MAP's extent maps for
    changed files, which shows what CHECK is for (the archive is then wrong)."""

    def __init__(self, *, with_extents: bool = False) -> None:
        self.entries: dict[Path, Fingerprint] = {}
        self.extents: dict[Path, ExtentMap] = {}
        self.with_extents = with_extents
        self.remap_at_check = True
        self._resolved: dict[Path, Path] = {}  # a path as the engine gave it -> resolved
        #: The paths (as given) that :meth:`check` found gone: the session decides whether
        #: the database may lose them.
        self.vanished: list[Path] = []

    def _record(self, path: Path, fingerprint: Fingerprint) -> None:
        self.entries[path] = fingerprint
        if self.with_extents:
            self.extents[path] = map_file(path)

    def _moved(self, path: Path) -> bool:
        """True (and the map updated) when the file's extents are not where MAP saw them."""
        now = map_file(path, sync=False)
        if now == self.extents.get(path):
            return False
        self.extents[path] = now
        return True

    def map(self, paths: Iterable[Path]) -> int:
        """MAP: fingerprint (and map) every candidate that exists; returns how many."""
        for path in paths:
            try:
                resolved = self._resolved[path] = path.resolve()
                self._record(resolved, Fingerprint.of(resolved))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return len(self.entries)

    def _resolve(self, given: Path, now: Fingerprint) -> Path:
        """``given`` resolved; MAP's answer while the file it names is the one MAP saw.

        Resolving walks every component (measured: 35 µs a file, three quarters of CHECK for
        10,000 files); ``stat`` of the given path follows the same links, so a fingerprint
        equal to MAP's means the path still names that file."""
        known = self._resolved.get(given)
        if known is not None and self.entries.get(known) == now:
            return known
        resolved = self._resolved[given] = given.resolve()
        return resolved

    def check(self, paths: Iterable[Path]) -> CheckResult:
        """CHECK: remap changed files, map new ones, forget files the database no longer uses.
        A file gone by now is left to the caller (:attr:`vanished`): in a mode that lets the
        database write, it can drop a table between DISCOVER and this look."""
        result = CheckResult()
        wanted: set[Path] = set()
        self.vanished = []
        for given in paths:
            try:
                now = Fingerprint.of(given)
            except (FileNotFoundError, NotADirectoryError):  # or a directory on its way went
                self.vanished.append(given)
                continue
            path = self._resolve(given, now)
            if path in wanted:
                continue
            wanted.add(path)
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
            elif self.with_extents and self.remap_at_check and self._moved(path):
                result.moved += 1
            else:
                result.unchanged += 1
        for path in set(self.entries) - wanted:
            del self.entries[path]
            self.extents.pop(path, None)
            result.gone_since_map += 1
        return result
