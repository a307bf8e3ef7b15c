"""The commands for running splitmirror every night: ``prune`` and ``drill`` (and the halves
``backup --prune`` and ``[drill] every`` run after a session).

:mod:`splitmirror.cli` adds them to the ``splitmirror`` group; they live apart so the session's
own commands stay readable in one file.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import metrics
from .catalog import Catalog, CatalogAddress, catalog_address, open_catalog
from .catalog.base import DONE
from .catalog.locks import PRUNE_WAIT_S
from .cli_common import (
    _catalog_for,
    _emit_json,
    _says_catalog,
    catalog_option,
    config_option,
    handled,
    json_option,
    out,
)
from .config import Config, load_config
from .drill import run_drill
from .errors import CatalogError, ConfigError
from .hooks import Hooks
from .prune import Outcome, elsewhere, policy_of, prune
from .retention import has_archive, of_configuration
from .units import format_size


def run_prune(
    config: Config,
    console: Console,
    *,
    dry_run: bool = False,
    as_json: bool = False,
    into: dict[str, Any] | None = None,
) -> bool:
    """Prune ``config``'s archives and report (with ``as_json``, as ``into["prune"]`` when given:
    ``backup --json`` prints one object); False when an archive could not be deleted."""
    policy_of(config)  # no [retention]: said before any catalog is looked for
    catalog = open_catalog(config.session.catalog, create=False)
    try:
        with contextlib.nullcontext() if dry_run else catalog.one_prune_at_a_time(PRUNE_WAIT_S):
            outcomes = prune(config, catalog, dry_run=dry_run)
            others = elsewhere(config, catalog)
        if not dry_run:
            metrics.write_quietly(config, catalog)  # the archives it counts changed
    finally:
        catalog.close()
    if as_json:
        _json_out([outcome.to_json() for outcome in outcomes], console, into, "prune")
    else:
        print_outcomes(console, outcomes, dry_run=dry_run)
        if others:
            urls = ", ".join(sorted({s.database_url for s in others}))
            console.print(
                f"note: {len(others)} archive(s) named {config.session.name!r} back up another database "
                f"({escape(urls)}), so this configuration leaves them; prune them with a configuration "
                "of that URL, or by hand",
                soft_wrap=True,
            )
    return all(outcome.result != "failed" for outcome in outcomes)


def _json_out(data: Any, console: Console, into: dict[str, Any] | None, key: str) -> None:
    if into is None:
        _emit_json(data, console)
    else:
        into[key] = data


def print_outcomes(console: Console, outcomes: list[Outcome], *, dry_run: bool) -> None:
    table = Table(
        title="retention" + (" (dry run: nothing deleted)" if dry_run else ""), title_justify="left"
    )
    for column in ("id", "started", "archive", "size", "decision", "why"):
        table.add_column(column)
    for outcome in outcomes:
        summary, decision = outcome.decision.session, outcome.decision
        result = {"kept": "keep", "deleted": "[red]deleted[/red]", "would delete": "[red]would delete[/red]"}
        shown = result.get(outcome.result, f"[yellow]{outcome.result}[/yellow]")
        why = "; ".join(decision.reasons) + (f" ({outcome.detail})" if outcome.detail else "")
        table.add_row(
            str(summary.id), summary.started_at, escape(summary.archive or ""), format_size(summary.bytes),
            shown, escape(why),
        )  # fmt: skip
    console.print(table)
    gone = [o for o in outcomes if o.result in ("deleted", "would delete")]
    verb = "would delete" if dry_run else "deleted"
    freed = format_size(sum(o.decision.session.bytes for o in gone))
    kept = sum(o.result == "kept" for o in outcomes)
    console.print(f"{verb} {len(gone)} archive(s) ({freed}), kept {kept}")
    for outcome in outcomes:
        if outcome.result == "failed":
            console.print(
                f"[red]could not delete session {outcome.decision.session.id}'s archive: "
                f"{escape(outcome.detail)}[/red]",
                soft_wrap=True,
            )


@click.command(name="prune")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="List what would be deleted and why; delete nothing.")
@json_option
@handled
def prune_(config: Path, dry_run: bool, as_json: bool) -> None:
    """Delete the archives CONFIG's [retention] no longer keeps.

    The newest DONE archive always stays, and a session still running, a tape, and a copy sent
    to standard output are never touched.  Catalog rows stay (`list --all` shows them).
    """
    cfg = load_config(config)
    if not as_json:
        _says_catalog(catalog_address(cfg.session.catalog))
    if not run_prune(cfg, out, dry_run=dry_run, as_json=as_json):
        sys.exit(1)


def _drill_config(
    session_id: int | None, config_file: Path | None, catalog_path: str | None
) -> tuple[Config, CatalogAddress]:
    """The configuration a drill runs by, and its catalog: ``--config``, else the file the
    session's catalog row names (its database URL and ``[drill]`` are needed)."""
    if config_file is not None:
        path = _catalog_for(catalog_path, config_file)
        return load_config(config_file), path
    if session_id is None:
        raise click.UsageError("give a session ID, or --config CONFIG to drill its newest archive")
    path = _catalog_for(catalog_path, None)
    catalog = open_catalog(path, create=False)
    try:
        recorded = catalog.get(session_id).config
    finally:
        catalog.close()
    if not Path(recorded).is_file():
        raise ConfigError(
            f"session {session_id}'s configuration {recorded} is not there; pass the configuration "
            "with --config CONFIG"
        )
    return load_config(recorded), path


def newest_archive(catalog: Catalog, config: Config) -> int:
    """The newest kept DONE archive of ``config`` (its name and database, as retention counts)."""
    sessions = of_configuration(catalog.sessions(status=DONE), config)
    kept = [s for s in sessions if has_archive(s) and s.pruned is None]
    if not kept:
        raise CatalogError(
            f"the catalog holds no kept DONE archive of {config.session.name!r} to drill; run a backup first"
        )
    return kept[-1].id


def run_drill_and_report(
    config: Config,
    address: CatalogAddress,
    session_id: int | None,
    console: Console,
    *,
    keep: bool,
    as_json: bool,
    into: dict[str, Any] | None = None,
) -> bool:
    """Drill, record, write the metrics, report (with ``as_json``, as ``into["drill"]`` when
    given); True when the drill passed."""
    catalog = open_catalog(address, create=False)
    try:
        chosen = session_id if session_id is not None else newest_archive(catalog, config)
        if not as_json:
            console.print(f"drilling session {chosen}: restore, start, check …")
        result = run_drill(catalog, chosen, config, Hooks(), keep=keep)
        metrics.write_quietly(config, catalog)
    finally:
        catalog.close()
    if as_json:
        _json_out(result.to_json(), console, into, "drill")
        return result.passed
    record = result.record
    for check in record.checks:
        console.print(f"[green]✓[/green] {escape(check)}", soft_wrap=True)
    route = {"host": "on this host", "container": "in a container", "": "in place"}[record.route]
    said = f"drill {record.id} of session {record.session_id}"
    how = f"({route}, {(record.duration_ms or 0) / 1000:.1f} s)"
    if result.passed:
        console.print(f"{said}: [green]PASSED[/green] {how}")
    else:
        console.print(f"{said}: [red]FAILED[/red] {how}: {escape(record.error or '')}", soft_wrap=True)
    if keep:
        console.print(f"the restored copy stays in {escape(str(result.directory))} (--keep)", soft_wrap=True)
    return result.passed


def drill_due(config: Config, address: CatalogAddress) -> bool:
    """``[drill] every = N``: whether the DONE session just recorded is the Nth."""
    every = config.drill.every if config.drill is not None else None
    if every is None:
        return False
    catalog = open_catalog(address, create=False)
    try:
        done = of_configuration(catalog.sessions(status=DONE), config)
    finally:
        catalog.close()
    return len(done) % every == 0


@click.command(name="drill")
@click.argument("session_id", type=int, metavar="[ID]", required=False)
@click.option("--keep", is_flag=True, help="Leave the restored copy in the scratch directory, for a look.")
@config_option
@catalog_option
@json_option
@handled
def drill_(
    session_id: int | None, keep: bool, config_file: Path | None, catalog_path: str | None, as_json: bool
) -> None:
    """Restore session ID's archive into a scratch directory, start the database there as the
    restore steps say, run its integrity check and [drill] query, and clean up.

    Without ID, the newest archive of --config CONFIG.  The outcome is recorded in the catalog
    (`list` shows each configuration's last drill); exit code 1 when the drill fails.
    """
    config, path = _drill_config(session_id, config_file, catalog_path)
    if not as_json:
        _says_catalog(path)
    if not run_drill_and_report(config, path, session_id, out, keep=keep, as_json=as_json):
        sys.exit(1)
