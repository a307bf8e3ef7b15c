"""BACKUP's archive, member by member: what goes in, in which order, read from where.

The order is the design's (docs/archive.md, "Order"): the database's files in the engine's logical order (read
from the split mirror, by extent where it can), then the redo/WAL of the window (from the split
mirror too), then what the engine collected from the primary after the window, then the
members it generated (labels), and last the manifest (:data:`MANIFEST_FORMAT`), which lists
every member before it.  Each member becomes a :class:`~splitmirror.catalog.FileRecord`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..catalog.base import FileRecord, utc_now
from ..config import Config, redact_url
from ..engine import DatabaseFile, UnquiesceResult
from ..errors import SplitmirrorError
from ..mirror.base import SplitStat
from ..mirror.splitread import SplitReader, reader_for
from ..progress import Progress
from . import sparse
from .pax import ArchiveWriter, MemberRecord
from .readahead import ReadAhead
from .sparse import Segment

if TYPE_CHECKING:
    from ..budget import Budget
    from ..mirror.base import MirrorProvider
    from ..opening import Parts
    from ..targets.base import Target

#: 2: file members of a stream archive carry their checksum in the manifest only.
MANIFEST_FORMAT = 2


def logical_order(key: tuple[int | str, ...]) -> tuple[tuple[int, int | str], ...]:
    """Sort key for plugin keys that mix numbers and names without comparing int to str."""
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in key)


def _stat(path: Path) -> SplitStat:
    info = os.stat(path)
    return SplitStat(info.st_size, info.st_mode, info.st_mtime, info.st_uid, info.st_gid)


@dataclasses.dataclass(frozen=True)
class _Planned:
    """One file as BACKUP will archive it (:meth:`ArchiveAssembly._plan`)."""

    file: DatabaseFile
    mirrored: bool  # read from the split mirror, else collected from the primary
    name: str
    info: SplitStat
    segments: list[Segment] | None  # its data ranges when it has holes (a sparse member)
    opener: Callable[[], SplitReader]


def manifest_header(parts: Parts, config: Config) -> dict[str, Any]:
    """The manifest's part that names the session and its database: the same whichever host
    writes the archive (an off-host backup records it with the split)."""
    return {
        "session": {"id": parts.id, "name": config.session.name},
        "database": {
            "engine": parts.engine.name,
            "url": redact_url(config.database.url),
            "version": parts.server.version,
            "flavour": parts.server.flavour,
        },
        "mode": config.database.mode.value,
    }


class ArchiveAssembly:
    """Writes a session's archive to ``target``, from ``mirror``; :attr:`members` grows as it
    goes.  ``header`` is the manifest's part naming the session (:func:`manifest_header`).

    ``stats`` is the session's: the extents each member was read by go into its ``extents``.
    """

    def __init__(
        self,
        target: Target,
        mirror: MirrorProvider,
        header: Mapping[str, Any],
        progress: Progress,
        stats: dict[str, Any],
    ) -> None:
        self.target, self.mirror, self.header = target, mirror, header
        self.progress, self.stats = progress, stats
        self.members: list[FileRecord] = []
        #: Called with each read's length before it is issued: a bandwidth budget sleeps there.
        self.before_read: Callable[[int], None] | None = None
        #: Whether the files the engine collected from the primary are read from ``mirror``
        #: too: a backup host has them from the database host, never from the primary.
        self.collected_in_mirror = False

    def write(
        self,
        files: Sequence[DatabaseFile],
        unquiesced: UnquiesceResult,
        *,
        window_ms: float | None,
        metadata: Mapping[str, Any],
        blocked_ms: float | None = None,
    ) -> None:
        """``files`` (already in logical order), what ``unquiesced`` adds, then the manifest."""
        window_files = sorted(unquiesced.window_files, key=lambda f: logical_order(f.logical_key))
        collected = sorted(unquiesced.collected_files, key=lambda f: logical_order(f.logical_key))
        sources = [(f, True) for f in [*files, *window_files]] + [(f, False) for f in collected]
        planned = [self._plan(f, mirrored) for f, mirrored in sources]
        total, done = sum(p.info.size for p in planned), 0
        self.mirror.will_read([p.file.path for p in planned if p.mirrored])
        writer = ArchiveWriter(self.target, uid=os.getuid(), gid=os.getgid())
        self.stats.update(self.target.stats())  # e.g. the commands that read it back
        self.target.open()
        ahead = ReadAhead(
            [p.opener for p in planned],
            [p.segments if p.segments is not None else [(0, p.info.size)] for p in planned],
            workers=self.mirror.read_workers,
            before_read=self.before_read,
        )
        with ahead:
            for index, plan in enumerate(planned):
                member = self._add_file(writer, ahead, index, plan, done, total)
                done += member.size
        for extra in unquiesced.extra_members:
            name = str(self.mirror.relative(extra.path)) if extra.path is not None else extra.name
            member = writer.add_bytes(name, extra.data, mtime=time.time())
            self._add("", extra.logical_key, extra.role, member, "generated")
        manifest = self._manifest(unquiesced, window_ms, blocked_ms, metadata, writer.member_checksums)
        record = writer.add_manifest(manifest, mtime=time.time())
        writer.close()
        self._add("", ("manifest",), "manifest", record, "generated")

    def write_under(
        self,
        budget: Budget,
        files: Sequence[DatabaseFile],
        unquiesced: UnquiesceResult,
        window: Mapping[str, Any],
        *,
        before_read: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """:meth:`write` under the session's budget (its reads paced, its priorities set);
        returns the summary the catalog records.  ``window``: ``window_ms``, ``blocked_ms``,
        ``metadata`` (:func:`splitmirror.handover.hand_over` records the same).  ``before_read``
        is asked before every read too (an off-host worker's lease: it raises once lost)."""
        consume = budget.throttle.consume
        if before_read is None:
            self.before_read = consume
        else:
            check = before_read

            def paced_and_checked(length: int) -> None:
                check(length)
                consume(length)

            self.before_read = paced_and_checked
        budget.run(
            self.write,
            files,
            unquiesced,
            window_ms=window["window_ms"],
            blocked_ms=window["blocked_ms"],
            metadata=window["metadata"],
        )
        data = [m for m in self.members if m.role != "manifest"]
        return {
            "files": len(data),
            "bytes": sum(m.size for m in data),
            "archive": self.target.location,
            "window_ms": window["window_ms"],
            "blocked_ms": window["blocked_ms"],
            "label": unquiesced.label,
            "redo_range": dict(unquiesced.redo_range),
            "stats": self.stats,
        }

    def _manifest(
        self,
        unquiesced: UnquiesceResult,
        window_ms: float | None,
        blocked_ms: float | None,
        metadata: Mapping[str, Any],
        member_checksums: str,
    ) -> dict[str, Any]:
        header = self.header
        return {
            "format": MANIFEST_FORMAT,
            "splitmirror": __version__,
            "session": header["session"],
            "database": header["database"],
            "mode": header["mode"],
            "created_at": utc_now(),
            "window_ms": window_ms,
            "blocked_ms": blocked_ms,
            "label": unquiesced.label,
            "redo_range": dict(unquiesced.redo_range),
            "metadata": metadata,
            "member_checksums": member_checksums,
            "files": [m.to_json() for m in self.members],
        }

    def _plan(self, f: DatabaseFile, mirrored: bool) -> _Planned:
        """What BACKUP needs to know of one file before any of it is read: its name, its
        attributes in the split image (or on the primary, for a collected file), its data
        ranges, and how to open it."""
        mirror = self.mirror
        name = str(mirror.relative(f.path))
        split = mirrored or self.collected_in_mirror
        try:
            info = mirror.split_stat(f.path) if split else _stat(f.path)
            ranges = mirror.data_ranges(f.path) if split else None
        except (FileNotFoundError, KeyError):
            where = "the split mirror" if mirrored else "the primary, where it was to be collected"
            raise FileNotFoundError(f"{f.path} is missing from {where}") from None
        except OSError as error:
            raise self._unreadable(name, mirrored, error) from error
        path = f.path

        def opener() -> SplitReader:
            return mirror.split_reader(path) if split else reader_for(open(path, "rb"))

        return _Planned(f, mirrored, name, info, sparse.data_segments(ranges, info.size), opener)

    def _add_file(
        self, writer: ArchiveWriter, ahead: ReadAhead, index: int, plan: _Planned, base: int, total: int
    ) -> MemberRecord:
        """One file, from the split mirror (``mirrored``) or collected from the primary."""
        f, info, mirror = plan.file, plan.info, self.mirror
        try:
            member = writer.add_chunks(
                plan.name,
                ahead.member(index),
                info.size,
                mode=info.mode,
                mtime=info.mtime,
                owner=(info.uid, info.gid),
                progress=lambda n, _t: self.progress(base + n, total),
                segments=plan.segments,
                release=ahead.release,
            )
        except OSError as error:  # the target's own errors (full) are UserErrors, not OSErrors
            raise self._unreadable(plan.name, plan.mirrored, error) from error
        method = mirror.read_method(f.path) if plan.mirrored else "collected"
        self._add(str(f.path), f.logical_key, f.role, member, method)
        if plan.mirrored and mirror.supports_extent_reads:
            self.stats.setdefault("extents", {})[plan.name] = mirror.extents_of(f.path)
        return member

    @staticmethod
    def _unreadable(name: str, mirrored: bool, error: OSError) -> SplitmirrorError:
        where = "the split mirror" if mirrored else "the primary"
        return SplitmirrorError(
            f"reading {name} from {where} failed ({error.strerror or error}); the archive "
            "would be incomplete, so it was removed"
        )

    def _add(
        self, path: str, key: tuple[int | str, ...], role: str, member: MemberRecord, method: str
    ) -> None:
        seq = len(self.members) + 1
        self.members.append(
            FileRecord(seq, member.name, path, key, role, member.size, member.sha256, member.offset, method)
        )
