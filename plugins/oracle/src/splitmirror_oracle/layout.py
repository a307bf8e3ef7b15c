"""Which files an Oracle backup holds, in which order, and which archived logs cover it.

The archive holds, in this order (each a ``logical_key``'s first element):

0. the **datafiles**, from the split mirror, by container, tablespace and file number
   (``v$datafile`` joined to ``v$tablespace`` on ``ts#`` *and* ``con_id``: in a container
   database every PDB numbers its tablespaces from 0);
2. the **archived logs** from the backup's begin SCN to its end SCN, collected from the primary
   after the window (the mirror cannot hold the redo written between the split and END BACKUP);
3. the **backup control file** the server wrote after END BACKUP, collected likewise.

Not archived, as Oracle's user-managed backup procedure says: the online redo logs (a restore
would hold two different logs with one sequence number), the current control files (the
backup control file replaces them: a copy of a control file being written is not one), and
the tempfiles (recreated at open).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable

DATAFILE, ARCHIVED_LOG, BACKUP_CONTROLFILE = 0, 2, 3


@dataclasses.dataclass(frozen=True)
class Datafile:
    """One row of ``v$datafile`` with its tablespace."""

    file_no: int
    name: str
    ts_no: int
    tablespace: str
    con_id: int

    @property
    def key(self) -> tuple[int, ...]:
        return (DATAFILE, self.con_id, self.ts_no, self.file_no)


@dataclasses.dataclass(frozen=True)
class ArchivedLog:
    """One row of ``v$archived_log``: a log of ``thread`` with ``sequence``, holding the redo
    from ``first_change`` up to (not including) ``next_change``, at destination ``dest_id``."""

    name: str
    thread: int
    sequence: int
    first_change: int
    next_change: int
    dest_id: int

    @property
    def key(self) -> tuple[int, ...]:
        return (ARCHIVED_LOG, self.thread, self.sequence)


#: ``v$datafile`` in archive order (the server's, for :func:`datafiles`).
DATAFILES_SQL = (
    "SELECT d.file#, d.name, d.ts#, t.name, d.con_id FROM v$datafile d "
    "JOIN v$tablespace t ON t.ts# = d.ts# AND t.con_id = d.con_id "
    "ORDER BY d.con_id, d.ts#, d.file#"
)
#: The archived logs that overlap ``:1`` (begin SCN) .. ``:2`` (end SCN), on local destinations,
#: of the current incarnation (after a RESETLOGS the old branch's logs share SCNs with it).
ARCHIVED_LOGS_SQL = (
    "SELECT name, thread#, sequence#, first_change#, next_change#, dest_id FROM v$archived_log "
    "WHERE next_change# > :1 AND first_change# <= :2 AND name IS NOT NULL "
    "AND deleted = 'NO' AND standby_dest = 'NO' AND status = 'A' "
    "AND resetlogs_change# = (SELECT resetlogs_change# FROM v$database) "
    "ORDER BY dest_id, thread#, sequence#"
)


def datafiles(rows: Iterable[tuple[object, ...]]) -> list[Datafile]:
    """:data:`DATAFILES_SQL`'s rows as :class:`Datafile` objects, in archive order."""
    found = [Datafile(int(str(f)), str(n), int(str(ts)), str(t), int(str(c or 0))) for f, n, ts, t, c in rows]
    return sorted(found, key=lambda d: d.key)


def archived_logs(rows: Iterable[tuple[object, ...]]) -> list[ArchivedLog]:
    """:data:`ARCHIVED_LOGS_SQL`'s rows as :class:`ArchivedLog` objects."""
    return [
        ArchivedLog(str(n), int(str(t)), int(str(s)), int(str(f)), int(str(x)), int(str(d)))
        for n, t, s, f, x, d in rows
    ]


def on_file_system(name: str) -> bool:
    """False for a file in an ASM disk group (``+DATA/...``): splitmirror reads files, not disks."""
    return not name.startswith("+")


class LogsMissing(Exception):
    """No destination holds every archived log the backup needs; the message is one sentence."""


def window_logs(
    logs: Iterable[ArchivedLog], begin_scn: int, end_scn: int, readable: Callable[[str], bool]
) -> list[ArchivedLog]:
    """The archived logs that carry the redo from ``begin_scn`` to ``end_scn``, every thread's
    sequence without a gap, from the first destination (lowest ``dest_id``) whose copies are all
    ``readable`` here.  A database that archives to several places lists each log once per
    place; one place that has them all is what a restore needs."""
    by_destination: dict[int, dict[tuple[int, int], ArchivedLog]] = {}
    for log in logs:  # a log registered twice at one destination is one log
        if log.next_change > begin_scn and log.first_change <= end_scn:
            by_destination.setdefault(log.dest_id, {}).setdefault((log.thread, log.sequence), log)
    if not by_destination:
        raise LogsMissing(
            f"no archived log covers the backup's SCNs {begin_scn} to {end_scn}; check that the "
            "archiver runs (v$archive_dest) and that the logs were not deleted meanwhile"
        )
    reasons = []
    for destination in sorted(by_destination):
        chosen = sorted(by_destination[destination].values(), key=lambda log: (log.thread, log.sequence))
        problem = _gap(chosen, begin_scn, end_scn)
        if problem is None:
            unreadable = [log.name for log in chosen if not readable(log.name)]
            if not unreadable:
                return chosen
            problem = f"{unreadable[0]} is not readable here"
        reasons.append(f"destination {destination}: {problem}")
    raise LogsMissing(
        "the archived logs of the backup are incomplete here (" + "; ".join(reasons) + "); the archive "
        "destination must be under [mirror] primary and readable (path_map for a server in a container)"
    )


def _gap(logs: list[ArchivedLog], begin_scn: int, end_scn: int) -> str | None:
    """What is missing from ``logs`` (one destination's, sorted) for begin..end, or None."""
    threads: dict[int, list[ArchivedLog]] = {}
    for log in logs:
        threads.setdefault(log.thread, []).append(log)
    for thread, own in sorted(threads.items()):
        for before, after in itertools.pairwise(own):
            if after.sequence != before.sequence + 1:
                return f"thread {thread} lacks sequence {before.sequence + 1}"
        if own[0].first_change > begin_scn and own[0].sequence > 1:
            return f"thread {thread} lacks the log before sequence {own[0].sequence} (SCN {begin_scn})"
        if own[-1].next_change <= end_scn:
            return f"thread {thread} has no archived log past SCN {end_scn}"
    return None
