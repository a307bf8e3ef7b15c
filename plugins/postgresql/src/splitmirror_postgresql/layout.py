"""PostgreSQL's data directory as a backup sees it: what to leave out, the logical order, WAL names.

Exclusions follow pg_basebackup's (``excludeDirContents`` and ``excludeFiles`` in
src/backend/backup/basebackup.c, read in 18.4's; tests/test_versions.py holds a restore against
pg_basebackup's output on 15, 17 and 18): files the server recreates or that are meaningless
in a copy.  The logical key puts relation files first by (tablespace,
database, relfilenode, fork, segment), then the cluster's other files by path, then WAL by
segment name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

DEFAULT_TABLESPACE, GLOBAL_TABLESPACE = 1663, 1664
#: The control file: a restore cannot start without it, so it may never vanish from a backup.
PG_CONTROL = Path("global/pg_control")

#: Files never copied, in any directory, as pg_basebackup's ``excludeFiles``: they describe the
#: running server, are half-written temporaries, or belong to another backup.  A
#: ``backup_manifest`` is the one pg_basebackup (or pg_combinebackup, 17+) wrote for the backup
#: this server was started from: it does not describe this copy, and 17's ``pg_basebackup
#: --incremental=`` or pg_verifybackup given it would take the copy for that older backup.
EXCLUDED_FILES = frozenset({
    "postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest",
    "postgresql.auto.conf.tmp", "current_logfiles.tmp",
})  # fmt: skip
#: The relation cache's init file and its temporaries (``pg_internal.init.<pid>``): rebuilt on start.
RELCACHE_INIT = "pg_internal.init"
#: Directories whose contents are never copied; the directories themselves are recreated.
EMPTIED_DIRS = (
    "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans",
)  # fmt: skip
#: Directories a started cluster needs even when empty (an archive holds only files).
REQUIRED_DIRS = (
    *EMPTIED_DIRS, "pg_wal", "pg_wal/archive_status", "pg_commit_ts", "pg_logical", "pg_logical/mappings",
    "pg_logical/snapshots", "pg_multixact/members", "pg_multixact/offsets", "pg_stat", "pg_tblspc",
    "pg_twophase", "pg_xact", "global", "base",
)  # fmt: skip
#: PostgreSQL 17 keeps WAL summaries (``summarize_wal``, for incremental backups) in
#: ``pg_wal/summaries``; a base backup carries it empty, as it carries ``archive_status``.
#: Without it a restored 17+ copy starts, but only after logging that it created it.
WAL_SUMMARIES_DIR, WAL_SUMMARIES_SINCE = "pg_wal/summaries", 170000


def required_dirs(server_version_num: int) -> tuple[str, ...]:
    """The directories a restored cluster of this server version must have, as pg_basebackup
    of that version makes them."""
    summaries = (WAL_SUMMARIES_DIR,) if server_version_num >= WAL_SUMMARIES_SINCE else ()
    return (*REQUIRED_DIRS, *summaries)


def excluded(name: str) -> bool:
    """A file a base backup leaves out wherever it is (pg_basebackup's ``excludeFiles``, and
    its ``pgsql_tmp`` prefix for temporary files)."""
    return name in EXCLUDED_FILES or name.startswith((RELCACHE_INIT, "pgsql_tmp"))


_RELATION = re.compile(r"^(\d+)(?:_(fsm|vm|init))?(?:\.(\d+))?$")
_FORKS = {None: 0, "fsm": 1, "vm": 2, "init": 3}


def walk(
    datadir: Path, *, with_wal: bool, link_target: Callable[[Path], Path] | None = None
) -> Iterator[tuple[Path, Path]]:
    """Every file of the cluster a backup needs, as (where it is on this host, its name relative
    to the data directory), tablespaces reached through ``pg_tblspc`` (and a linked ``pg_wal``).

    ``link_target`` says where a link in the data directory leads on this host.  A server in a
    container wrote its links with the paths it sees (``/var/lib/postgresql/tablespaces/x``),
    which do not exist here: followed as they are, a tablespace's files were silently left out.

    DISCOVER runs it inside the window, so it asks the directory entries' types (``scandir``)
    instead of a ``stat`` or two per file; a directory gone since its parent was listed (a
    database dropped meanwhile) is skipped, as ``os.walk`` skipped it."""
    follow = link_target or (lambda link: link.resolve())

    def skipped_at_root(name: str) -> bool:
        return name in EMPTIED_DIRS or (name == "pg_wal" and not with_wal)

    def below(directory: str, rel: str) -> Iterator[tuple[Path, Path]]:
        """Relative names are strings until a file is yielded: a ``Path`` costs more than the
        ``scandir`` entry it names."""
        at_root = not rel
        for entry in _entries(directory):
            name = entry.name
            inner = os.path.join(rel, name)
            if entry.is_symlink():
                if excluded(name) or (at_root and skipped_at_root(name)):
                    continue
                target = follow(Path(entry.path))
                if target.is_dir():
                    yield from ((host, inner / inside) for host, inside in _walk_plain(target))
                elif target.is_file():
                    yield target, Path(inner)
            elif entry.is_dir():
                if not (name.startswith("pgsql_tmp") or (at_root and skipped_at_root(name))):
                    yield from below(entry.path, inner)
            elif entry.is_file() and not excluded(name):
                yield Path(entry.path), Path(inner)

    return below(str(datadir), "")


def _entries(directory: Path | str) -> list[os.DirEntry[str]]:
    """The entries of ``directory``; none when it is gone or unreadable (as ``os.walk``)."""
    try:
        with os.scandir(directory) as listing:
            return list(listing)
    except OSError:
        return []


def _walk_plain(directory: Path, rel: Path = Path(".")) -> Iterator[tuple[Path, Path]]:
    """The files below a tablespace or a linked ``pg_wal`` (no links of their own)."""
    for entry in _entries(directory):
        if entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("pgsql_tmp"):
                yield from _walk_plain(Path(entry.path), rel / entry.name)
        elif not excluded(entry.name) and entry.is_file():
            yield Path(entry.path), rel / entry.name


def logical_key(relative: Path) -> tuple[int | str, ...]:
    """The archive order of a file given relative to the data directory."""
    parts = relative.parts
    match = _RELATION.match(parts[-1])
    if match and len(parts) >= 2:
        relfilenode, fork, segment = int(match[1]), _FORKS[match[2]], int(match[3] or 0)
        if parts[0] == "base" and len(parts) == 3 and parts[1].isdigit():
            return (0, DEFAULT_TABLESPACE, int(parts[1]), relfilenode, fork, segment)
        if parts[0] == "global" and len(parts) == 2:
            return (0, GLOBAL_TABLESPACE, 0, relfilenode, fork, segment)
        if parts[0] == "pg_tblspc" and len(parts) == 5 and parts[1].isdigit() and parts[3].isdigit():
            return (0, int(parts[1]), int(parts[3]), relfilenode, fork, segment)
    if parts[0] == "pg_wal" and len(parts) == 2:
        return (2, parts[1])
    return (1, str(relative))


def lsn_to_int(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def wal_file_name(timeline: int, segment: int, segment_size: int) -> str:
    """XLogFileName: timeline, then the segment number split in 4 GiB 'log ids'."""
    per_id = 0x1_0000_0000 // segment_size
    return f"{timeline:08X}{segment // per_id:08X}{segment % per_id:08X}"


def wal_segments(start_wal: str, stop_lsn: str, segment_size: int) -> list[str]:
    """Segments from the backup's first (named in backup_label) to the one holding the stop LSN
    (the byte just before it, as pg_walfile_name counts)."""
    timeline = int(start_wal[:8], 16)
    per_id = 0x1_0000_0000 // segment_size
    first = int(start_wal[8:16], 16) * per_id + int(start_wal[16:24], 16)
    last = (lsn_to_int(stop_lsn) - 1) // segment_size
    return [wal_file_name(timeline, segment, segment_size) for segment in range(first, last + 1)]
