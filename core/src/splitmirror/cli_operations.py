"""The commands for running splitmirror every night: ``prune`` (and ``backup --prune``'s half).

:mod:`splitmirror.cli` adds them to the ``splitmirror`` group; they live apart so the session's
own commands stay readable in one file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .catalog import default_catalog_path, open_catalog
from .cli_common import _emit_json, _says_catalog, handled, json_option, out
from .config import Config, load_config
from .prune import Outcome, policy_of, prune
from .units import format_size


def run_prune(config: Config, console: Console, *, dry_run: bool = False, as_json: bool = False) -> bool:
    """Prune ``config``'s archives and report; False when an archive could not be deleted."""
    policy_of(config)  # no [retention]: said before any catalog is looked for
    catalog = open_catalog(default_catalog_path(config.session.catalog), create=False)
    try:
        outcomes = prune(config, catalog, dry_run=dry_run)
    finally:
        catalog.close()
    if as_json:
        _emit_json([outcome.to_json() for outcome in outcomes], console)
    else:
        print_outcomes(console, outcomes, dry_run=dry_run)
    return all(outcome.result != "failed" for outcome in outcomes)


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
        _says_catalog(default_catalog_path(cfg.session.catalog))
    if not run_prune(cfg, out, dry_run=dry_run, as_json=as_json):
        sys.exit(1)
