"""Is the data directory splitmirror would back up the running server's?

A configuration left pointing at an old directory (a copy, the cluster's previous home, another
cluster) passes every other check: the server answers, the files are readable.  The session
would quiesce the live server, copy the wrong files and fail late, or worse, archive a stale
cluster.  ``pg_control`` says which cluster a directory holds (its system identifier, set by
initdb) and how current it is (the last checkpoint's LSN, rewritten at every checkpoint); the
server reads the same two from its own ``pg_control`` (``pg_control_system()``,
``pg_control_checkpoint()``).  Both must match.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: ``ControlFileData`` begins: uint64 system_identifier, uint32 pg_control_version, uint32
#: catalog_version_no, DBState state (int), padding, pg_time_t time, XLogRecPtr checkPoint.
_SYSTEM_ID = slice(0, 8)
_CHECKPOINT = slice(32, 40)


def on_disk(datadir: Path) -> tuple[int, int]:
    """(system identifier, checkpoint LSN) from ``datadir/global/pg_control``; OSError if unreadable."""
    head = (datadir / "global" / "pg_control").read_bytes()[:40]
    if len(head) < 40:
        raise OSError(f"{datadir}/global/pg_control is too short to be a control file")
    return int.from_bytes(head[_SYSTEM_ID], sys.byteorder), int.from_bytes(head[_CHECKPOINT], sys.byteorder)


def lsn(text: str) -> int:
    """``16/B374D848`` → its 64-bit value."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
