"""``splitmirror catalog copy``: a catalog's sessions, files and drills into another catalog,
each under the id it had (archives are named by session id, ``orders-41.tar``).  Splits still
waiting for a backup host are not copied: the copy refuses until they are archived or released.

The move from a host's SQLite file to a fleet's PostgreSQL catalog.  Each session is copied in
one transaction of the destination, so an interrupted copy leaves whole sessions; running it
again skips those already there (the same id, name and start) and refuses before copying
anything when an id there belongs to another session.
"""

from __future__ import annotations

import dataclasses

from ..errors import CatalogError
from .base import Catalog, SessionSummary


@dataclasses.dataclass
class CopyReport:
    copied: list[int] = dataclasses.field(default_factory=list)
    skipped: list[int] = dataclasses.field(default_factory=list)  # there already, from a copy before
    files: int = 0
    drills: int = 0

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _same(a: SessionSummary, b: SessionSummary) -> bool:
    return (a.name, a.started_at, a.database_url) == (b.name, b.started_at, b.database_url)


def copy_catalog(source: Catalog, destination: Catalog) -> CopyReport:
    """Copy every session of ``source`` that ``destination`` lacks."""
    waiting = source.handovers(outstanding=True)
    if waiting:  # the split and its parcels stay behind: the row would be taken for abandoned
        raise CatalogError(
            f"session {waiting[0].session_id}'s split in {source.address.shown} waits for a backup host "
            f"({len(waiting)} split(s) in all); archive them (`splitmirror archive`) or release them "
            "(`splitmirror catalog release ID`) first, then copy"
        )
    there = {s.id: s for s in destination.sessions()}
    sessions = source.sessions()
    drills_there = {d.id: d for d in destination.drills()}
    for drill in source.drills():
        held = drills_there.get(drill.id)
        if held is not None and (held.session_id, held.started_at) != (drill.session_id, drill.started_at):
            raise CatalogError(
                f"drill {drill.id} of {destination.address.shown} is another drill than "
                f"{source.address.shown}'s (drills keep their ids too); copy into a new, empty catalog"
            )
    for session in sessions:
        other = there.get(session.id)
        if other is not None and not _same(session, other):
            raise CatalogError(
                f"session {session.id} of {destination.address.shown} is another session "
                f"({other.name}, started {other.started_at}) than {source.address.shown}'s "
                f"({session.name}, started {session.started_at}); copy into a new, empty catalog"
            )
    report = CopyReport()
    for session in sessions:
        if session.id in there:
            report.skipped.append(session.id)
            continue
        files, drills = source.files(session.id), source.drills(session_id=session.id)
        destination.copy_in(session, files, drills)
        report.copied.append(session.id)
        report.files += len(files)
        report.drills += len(drills)
    return report
