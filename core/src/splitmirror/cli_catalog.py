"""``splitmirror catalog ...``: commands about the catalog itself (docs/fleet.md)."""

from __future__ import annotations

import contextlib

import click
from rich.markup import escape

from .catalog import catalog_address, open_catalog
from .catalog.copy import copy_catalog
from .cli_common import _emit_json, handled, json_option, out


@click.group(name="catalog")
def catalog_() -> None:
    """The catalog itself: copy one into another (a host's SQLite file into a fleet's
    PostgreSQL catalog)."""


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
