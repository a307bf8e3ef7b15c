"""``splitmirror catalog ...``: commands about the catalog itself (docs/fleet.md)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click
from rich.markup import escape

from .catalog import catalog_address, open_catalog
from .catalog.base import utc_now
from .catalog.copy import copy_catalog
from .cli_common import _catalog_for, _emit_json, catalog_option, config_option, handled, json_option, out
from .errors import CatalogError, SessionBusyError
from .hostname import host


@click.group(name="catalog")
def catalog_() -> None:
    """The catalog itself: copy one into another (a host's SQLite file into a fleet's
    PostgreSQL catalog); release a handed-over split no backup host can archive."""


@catalog_.command(name="copy")
@click.argument("source", metavar="SOURCE")
@click.argument("destination", metavar="DESTINATION")
@json_option
@handled
def copy_(source: str, destination: str, as_json: bool) -> None:
    """Copy every session, its files and drills, from catalog SOURCE into DESTINATION, each
    under the id it has (archives are named by it).

    Each is a SQLite file or a URL (postgresql://backup@catalog-db/splitmirror; the password in
    $SPLITMIRROR_CATALOG_PASSWORD or a pgpass file).  DESTINATION is created when new.  Sessions
    already copied are skipped, so an interrupted copy is finished by running it again; an id
    DESTINATION uses for another session stops the copy before it writes anything.  Stop the
    schedules that write SOURCE first, and point each configuration's [session] catalog at
    DESTINATION after.
    """
    src, dst = catalog_address(source), catalog_address(destination)
    reading = contextlib.closing(open_catalog(src, create=False))  # no source: nothing is created
    with reading as opened, contextlib.closing(open_catalog(dst, create=True)) as writing:
        report = copy_catalog(opened, writing)
    if as_json:
        _emit_json(report.to_json())
        return
    out.print(
        f"copied {len(report.copied)} session(s), {report.files} file record(s) and {report.drills} "
        f"drill(s) from {escape(src.shown)} to {escape(dst.shown)}"
        + (f"; {len(report.skipped)} were there already" if report.skipped else ""),
        soft_wrap=True,
    )


@catalog_.command(name="release")
@click.argument("session_id", type=int, metavar="ID")
@config_option
@catalog_option
@handled
def release_(session_id: int, config_file: Path | None, catalog_path: str | None) -> None:
    """Give up session ID's split without archiving it: the session is recorded FAILED and the
    mirror is free for the database host's next session, which synchronises it again.

    For a split no backup host can archive (the host is gone, the disk was replaced).  A split a
    live worker holds is refused: stop that worker first (it gives the split back at once).
    """
    address = _catalog_for(catalog_path, config_file)
    with contextlib.closing(open_catalog(address, create=False)) as catalog:
        worker = f"release:{host()}:{os.getpid()}"
        split = catalog.claim_split(worker=worker, identities=[], lease_s=60, session_id=session_id)
        if split is None:
            held = next(iter(catalog.handovers(outstanding=True, session_id=session_id)), None)
            if held is None:
                raise CatalogError(
                    f"session {session_id} has no split waiting for a backup host in {address.shown}"
                )
            raise SessionBusyError(
                f"session {session_id}'s split is being archived by {held.worker}; stop that worker (it "
                "gives the split back at once), or wait for its lease to run out, then release it"
            )
        why = f"released by hand on {host()} (`splitmirror catalog release`): not archived"
        catalog.finish_handover(
            session_id, worker=worker, archived=False, files=[], fields={}, finished_at=utc_now(),
            failed_phase="BACKUP", error=why,
        )  # fmt: skip
    out.print(
        f"session {session_id}: split released (not archived); the mirror {escape(split.identity)} is free "
        "for the next session",
        soft_wrap=True,
    )
