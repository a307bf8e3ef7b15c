"""MySQL's and MariaDB's files as a backup sees them: which to leave out, the logical order.

Logical order: InnoDB tablespaces (``.ibd``) by space id, as the server reports it (page 0 of a
new table may not be flushed yet, so the file alone is the fallback); then the other table
files (``.frm``, Aria, MyISAM, options, and MySQL's ``auto.cnf`` and ``*.pem``) by name; then
the system tablespace, undo tablespaces (MySQL's ``undo_001``, MariaDB's ``undo001``, ``*.ibu``),
the redo log (MariaDB's ``ib_logfile0``; MySQL 8.0.30+'s ``#innodb_redo/#ib_redoN``, in log
sequence: N grows with the log) and doublewrite files (``#ib_16384_0.dblwr``); then the binary
logs and their index.

Left out: what the server recreates or what only describes the running process: the global
temporary tablespace (``ibtmp1``) and MySQL's session temporary tablespaces (``#innodb_temp/``),
both recreated empty at every start and holding nothing a restart keeps; MySQL's spare redo
files (``#innodb_redo/#ib_redoN_tmp``: preallocated, never written, holding no log until InnoDB
renames one into use, and created again at start when missing, crash recovery included); pid
and socket files; ``#sql`` intermediate files of interrupted ALTERs.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

#: Offset of FIL_PAGE_ARCH_LOG_NO_OR_SPACE_ID in an InnoDB page header: the space id.
_SPACE_ID_OFFSET = 34
_EXCLUDED_DIRS = frozenset({"#innodb_temp"})
_EXCLUDED = re.compile(r"^(ibtmp\d*|#ib_redo\d+_tmp|.*\.pid|.*\.sock(\.lock)?|#sql.*)$")
_REDO = 2
_SYSTEM = (
    (re.compile(r"^ibdata\d+$"), 0),
    (re.compile(r"^(undo_?\d+|.*\.ibu)$"), 1),
    (re.compile(r"^(ib_logfile|#ib_redo)(\d+)$"), _REDO),
    (re.compile(r"^.*\.dblwr$"), 3),
)


def walk(roots: Iterable[Path], binlog_basename: str | None) -> Iterator[tuple[Path, Path]]:
    """``(root, file)`` for every file under the roots a backup needs; a file under two roots
    (``innodb_log_group_home_dir = ./``) comes once."""
    seen: set[Path] = set()
    for root in roots:
        for top, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _EXCLUDED_DIRS and not d.startswith("#sql")]
            for name in files:
                path = Path(top) / name
                if _EXCLUDED.match(name) or path in seen or not path.is_file():
                    continue
                seen.add(path)
                yield root, path


def space_id(path: Path) -> int | None:
    """The InnoDB space id in page 0 of ``path``; None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            header = f.read(_SPACE_ID_OFFSET + 4)
    except OSError:
        return None
    if len(header) < _SPACE_ID_OFFSET + 4:
        return None
    return int(struct.unpack_from(">I", header, _SPACE_ID_OFFSET)[0])


def is_binlog(path: Path, binlog_basename: str | None) -> bool:
    if not binlog_basename:
        return False
    base = Path(binlog_basename)
    return path.parent == base.parent and (
        path.name == base.name + ".index"
        or re.fullmatch(re.escape(base.name) + r"\.\d{6,}", path.name) is not None
    )


def logical_key(
    root: Path, path: Path, binlog_basename: str | None, space_ids: Mapping[Path, int] | None = None
) -> tuple[int | str, ...]:
    """``space_ids`` is the server's own map (``.ibd`` path → space id); a file it does not
    know is identified by page 0, which holds the id once InnoDB has flushed it."""
    relative = str(path.relative_to(root))
    if is_binlog(path, binlog_basename):
        return (3, path.name)
    for pattern, rank in _SYSTEM:
        match = pattern.match(path.name)
        if match and rank == _REDO:  # by number: #ib_redo10 follows #ib_redo9
            return (2, rank, int(match[2]), relative)
        if match:
            return (2, rank, relative)
    if path.suffix == ".ibd":
        sid = (space_ids or {}).get(path) or space_id(path)
        return (0, sid or 0xFFFFFFFF, relative)
    return (1, relative)


def role(key: tuple[int | str, ...]) -> str:
    return {0: "data", 1: "table", 2: "log" if key[1] == 2 else "system", 3: "binlog"}.get(
        int(key[0]), "data"
    )
