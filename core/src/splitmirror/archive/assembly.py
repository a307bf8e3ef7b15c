"""BACKUP's archive, member by member: what goes in, in which order, read from where.

The order is the design's (docs/archive.md, "Order"): the database's files in the engine's logical order (read
from the split mirror, by extent where it can), then the redo/WAL of the window (from the split
mirror too), then what the engine collected from the primary after the window, then the
members it generated (labels), and last the manifest (:data:`MANIFEST_FORMAT`), which lists
every member before it.  Each member becomes a :class:`~splitmirror.catalog.FileRecord`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..catalog.base import FileRecord, utc_now
from ..config import Config, redact_url
from ..engine import DatabaseFile, UnquiesceResult
from ..errors import SplitmirrorError
from ..mirror.base import SplitStat
from ..progress import Progress
from .pax import ArchiveWriter, MemberRecord

if TYPE_CHECKING:
    from ..opening import Parts

MANIFEST_FORMAT = 1


def logical_order(key: tuple[int | str, ...]) -> tuple[tuple[int, int | str], ...]:
    """Sort key for plugin keys that mix numbers and names without comparing int to str."""
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in key)


def _stat(path: Path) -> SplitStat:
    info = os.stat(path)
    return SplitStat(info.st_size, info.st_mode, info.st_mtime, info.st_uid, info.st_gid)


class ArchiveAssembly:
    """Writes the archive of the session of ``parts`` to its target, from its mirror;
    :attr:`members` grows as it goes.

    ``stats`` is the session's: the extents each member was read by go into its ``extents``.
    """

    def __init__(self, parts: Parts, config: Config, progress: Progress, stats: dict[str, Any]) -> None:
        self.parts, self.config, self.progress, self.stats = parts, config, progress, stats
        self.target, self.mirror = parts.target, parts.mirror
        self.members: list[FileRecord] = []

    def write(
        self,
        files: Sequence[DatabaseFile],
        unquiesced: UnquiesceResult,
        *,
        window_ms: float | None,
        metadata: Mapping[str, Any],
    ) -> None:
        """``files`` (already in logical order), what ``unquiesced`` adds, then the manifest."""
        window_files = sorted(unquiesced.window_files, key=lambda f: logical_order(f.logical_key))
        collected = sorted(unquiesced.collected_files, key=lambda f: logical_order(f.logical_key))
        sources = [(f, True) for f in [*files, *window_files]] + [(f, False) for f in collected]
        sizes = {f.path: self._source_size(f, mirrored) for f, mirrored in sources}
        total, done = sum(sizes.values()), 0
        writer = ArchiveWriter(self.target, uid=os.getuid(), gid=os.getgid())
        self.target.open()
        for f, mirrored in sources:
            member = self._add_file(writer, f, mirrored, sizes[f.path], done, total)
            done += member.size
        for extra in unquiesced.extra_members:
            name = str(self.mirror.relative(extra.path)) if extra.path is not None else extra.name
            member = writer.add_bytes(name, extra.data, mtime=time.time())
            self._add("", extra.logical_key, extra.role, member, "generated")
        manifest = self._manifest(unquiesced, window_ms, metadata)
        record = writer.add_manifest(manifest, mtime=time.time())
        writer.close()
        self._add("", ("manifest",), "manifest", record, "generated")

    def _manifest(
        self, unquiesced: UnquiesceResult, window_ms: float | None, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        parts, config = self.parts, self.config
        return {
            "format": MANIFEST_FORMAT,
            "splitmirror": __version__,
            "session": {"id": parts.id, "name": config.session.name},
            "database": {
                "engine": parts.engine.name,
                "url": redact_url(config.database.url),
                "version": parts.server.version,
                "flavour": parts.server.flavour,
            },
            "mode": config.database.mode.value,
            "created_at": utc_now(),
            "window_ms": window_ms,
            "label": unquiesced.label,
            "redo_range": dict(unquiesced.redo_range),
            "metadata": metadata,
            "files": [m.to_json() for m in self.members],
        }

    def _add_file(
        self, writer: ArchiveWriter, f: DatabaseFile, mirrored: bool, size: int, base: int, total: int
    ) -> MemberRecord:
        """One file, from the split mirror (``mirrored``) or collected from the primary."""
        mirror = self.mirror
        name = str(mirror.relative(f.path))
        try:
            info = mirror.split_stat(f.path) if mirrored else _stat(f.path)
            with mirror.open_split_copy(f.path) if mirrored else open(f.path, "rb") as source:
                member = writer.add_file(
                    name,
                    source,
                    size,
                    mode=info.mode,
                    mtime=info.mtime,
                    owner=(info.uid, info.gid),
                    progress=lambda n, _t: self.progress(base + n, total),
                    data=mirror.data_ranges(f.path) if mirrored else None,
                )
        except OSError as error:  # the target's own errors (full) are UserErrors, not OSErrors
            where = "the split mirror" if mirrored else "the primary"
            raise SplitmirrorError(
                f"reading {name} from {where} failed ({error.strerror or error}); the archive "
                "would be incomplete, so it was removed"
            ) from error
        method = mirror.read_method(f.path) if mirrored else "collected"
        self._add(str(f.path), f.logical_key, f.role, member, method)
        if mirrored and mirror.supports_extent_reads:
            self.stats.setdefault("extents", {})[name] = mirror.extents_of(f.path)
        return member

    def _source_size(self, f: DatabaseFile, mirrored: bool) -> int:
        try:
            return self.mirror.split_stat(f.path).size if mirrored else os.stat(f.path).st_size
        except (FileNotFoundError, KeyError):
            where = "the split mirror" if mirrored else "the primary, where it was to be collected"
            raise FileNotFoundError(f"{f.path} is missing from {where}") from None

    def _add(
        self, path: str, key: tuple[int | str, ...], role: str, member: MemberRecord, method: str
    ) -> None:
        seq = len(self.members) + 1
        self.members.append(
            FileRecord(seq, member.name, path, key, role, member.size, member.sha256, member.offset, method)
        )
