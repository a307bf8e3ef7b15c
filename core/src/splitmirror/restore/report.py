"""What ``verify`` and ``restore`` print for people (``--json`` prints the objects' ``to_json``)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from ..restore_steps import grouped
from ..units import format_size
from .run import RestoreResult
from .verify import VerifyReport


def print_verify(console: Console, report: VerifyReport) -> None:
    """Every problem on its own line, then the verdict: a DBA reads the last line first."""
    against = f"the catalog (session {report.session_id})" if report.against == "catalog" else "its manifest"
    for problem in report.problems:
        console.print(f"[red]✗[/red] {escape(problem.message)}", soft_wrap=True)
    summary = f"{len(report.members)} members, {format_size(report.bytes)}, read from {report.archive}"
    if report.ok:
        console.print(f"[green]✓[/green] {escape(summary)}: every checksum matches, as does {against}")
        console.print("[green]verification passed[/green]")
    else:
        count = len(report.problems)
        console.print(escape(f"{summary}, checked against {against}"), soft_wrap=True)
        console.print(f"[red]verification FAILED: {count} problem{'s' if count != 1 else ''}[/red]")


def print_restore(console: Console, result: RestoreResult, *, verbose: bool = False) -> None:
    """The count, the members only with ``verbose`` (a cluster has hundreds: the next steps
    would scroll away), notes, then the next steps."""
    count = len(result.restored)
    console.print(
        escape(
            f"restored {count} member{'s' if count != 1 else ''} ({format_size(result.bytes)}) "
            f"from {result.archive} into {result.directory}, every checksum verified"
        ),
        soft_wrap=True,
    )
    if verbose:
        for name in result.restored:
            console.print(f"  {escape(name)}", soft_wrap=True)
    if result.skipped:
        console.print(f"skipped {len(result.skipped)} member(s) not matched by --only")
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
    if result.steps:
        console.print(f"next steps ({escape(result.engine or '')}):")
        for heading, steps in grouped(result.steps):
            indent = "    " if heading else "  "
            if heading:
                console.print(f"  {escape(heading)}:")
            for number, step in enumerate(steps, start=1):
                # As is: no markup, no :emoji: codes, so the line is exactly what a shell takes.
                line = f"{indent}{number}. {step.text()}"
                console.print(line, soft_wrap=True, highlight=False, markup=False, emoji=False)
