"""Rendering sessions for people (rich tables) and machines (JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .catalog.base import WAITING, DrillRecord, FileRecord, Handover, SessionSummary
from .units import format_size


def summary_json(summary: SessionSummary, files: list[FileRecord] | None = None) -> dict[str, Any]:
    """The ``--json`` shape of a session (docs/cli.md) (``id``, ``status``, ``mode``, ``window_ms``,
    ``blocked_ms``, ``phases``, ``files``, ``bytes``, ``archive`` ...); ``show`` adds the members."""
    data = summary.to_json()
    data["phases"] = [
        {
            "name": p.name,
            "duration_ms": round(p.duration_ms, 3),
            "started_at": p.started_at,
            "error": p.error,
            "host": p.host,
        }
        for p in summary.phases
    ]
    if files is not None:
        data["members"] = [f.to_json() for f in files]
    return data


def milliseconds(value: float | None) -> str:
    """A duration of the summary for people; ``-`` where the session never got there."""
    return "-" if value is None else f"{value:.1f} ms"


def throughput(summary: SessionSummary) -> float | None:
    """BACKUP's MB/s (10^6 bytes per second), or None when it did not run."""
    for phase in summary.phases:
        if phase.name == "BACKUP" and phase.duration_ms > 0 and phase.error is None:
            return summary.bytes / (phase.duration_ms / 1000) / 1e6
    return None


def sync_passes(stats: Mapping[str, Any]) -> str:
    """The bytes each synchronizer pass copied, when the mirror reports them: the bulk pass and
    pre-copy before QUIESCE, the final pass inside the window, and how each knew what to copy."""
    bulk, final = stats.get("bulk_sync") or {}, stats.get("final_sync") or {}
    if not bulk.get("passes") and not final.get("passes"):
        return ""
    parts = [
        f"{', '.join(format_size(n) for n in passes)} {where}"
        for passes, where in ((bulk.get("passes"), "before QUIESCE"), (final.get("passes"), "in the window"))
        if passes  # a session that failed before SPLIT has no final pass: nothing to show, not a blank
    ]
    how = final.get("tracking") or bulk.get("tracking") or ""
    return f"sync passes {', '.join(parts)}" + (f" ({escape(how)})" if how else "")


def positions_text(positions: Mapping[str, Any]) -> str:
    """The database's positions for people: ``exact yes``, a list of WAL files as its first and
    last (once, when they are one), nested values flattened; never Python's reprs."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "yes" if item else "no"
        if isinstance(item, list | tuple):
            unique = list(dict.fromkeys(str(v) for v in item))
            return unique[0] if len(unique) == 1 else f"{unique[0]} to {unique[-1]} ({len(unique)})"
        if isinstance(item, Mapping):
            return ", ".join(f"{k} {value(v)}" for k, v in item.items())
        return "-" if item is None else str(item)

    return ", ".join(f"{key.replace('_', ' ')} {value(item)}" for key, item in positions.items())


def print_summary(console: Console, summary: SessionSummary) -> None:
    # The title on a line of its own: rich wraps a table's title to the table's width.
    console.print(f"session {summary.id} ({escape(summary.name)}): {summary.status}", soft_wrap=True)
    from .timeline import print_timeline

    print_timeline(console, summary)  # the picture first, then the numbers
    table = Table()
    table.add_column("phase")
    table.add_column("duration", justify="right")
    errors = any(phase.error for phase in summary.phases)
    if errors:  # no empty column on success
        table.add_column("error", style="red")
    for phase in summary.phases:
        row = [phase.name, f"{phase.duration_ms:.1f} ms"]
        table.add_row(*row, *([escape(phase.error or "")] if errors else []))
    console.print(table)
    rate = throughput(summary)
    console.print(
        f"mode {summary.mode}  window {milliseconds(summary.window_ms)}  "
        f"blocked {milliseconds(summary.blocked_ms)}  files {summary.files}  "
        f"bytes {format_size(summary.bytes)}" + ("" if rate is None else f"  {rate:.1f} MB/s")
    )
    if summary.archive:
        console.print(f"archive {summary.archive}")
    if summary.label:
        console.print(f"label {escape(summary.label)}")
    if summary.redo_range:
        # The database's own positions: WAL LSNs, binary log file/position and GTIDs.
        console.print(f"positions {escape(positions_text(summary.redo_range))}", soft_wrap=True)
    passes = sync_passes(summary.stats)
    if passes:
        console.print(passes, soft_wrap=True)
    vanished = summary.stats.get("vanished") or []
    if vanished:
        count = len(vanished)
        console.print(f"left out {count} file(s) the database removed during the session (--json lists them)")
    if summary.status == "FAILED":
        console.print(f"[red]failed in {summary.failed_phase}: {escape(summary.error or '')}[/red]")


def print_sessions(
    console: Console, sessions: list[SessionSummary], splits: Mapping[int, Handover] | None = None
) -> None:
    """``splits``: the sessions handed over to a backup host and not archived yet, by id."""
    splits = splits or {}
    table = Table()
    columns = ("id", "name", "database", "mode", "status", "started", "window", "blocked", "files", "bytes")
    for column in columns:
        table.add_column(column)
    for s in sessions:
        table.add_row(
            str(s.id),
            s.name,
            s.database,
            s.mode,
            _status(s, splits.get(s.id)),
            s.started_at,
            milliseconds(s.window_ms),
            milliseconds(s.blocked_ms),
            str(s.files),
            format_size(s.bytes),
        )
    console.print(table)


def _status(session: SessionSummary, split: Handover | None) -> str:
    if split is not None:  # STARTED, and its BACKUP waits for (or runs on) a backup host
        return "HANDED OVER" if split.state == WAITING else f"ARCHIVING ({split.worker})"
    return session.status + {None: "", "PRUNING": " (pruning)", "PRUNED": " (pruned)"}.get(session.pruned, "")


def print_files(console: Console, files: list[FileRecord]) -> None:
    table = Table(title="archive members, in archive order", title_justify="left")
    for column in ("#", "member", "role", "size", "sha256", "offset", "read"):
        table.add_column(column)
    for f in files:
        table.add_row(
            str(f.seq), f.member, f.role, str(f.size), f.sha256[:16] + "…", str(f.offset), f.read_method
        )
    console.print(table)


def print_drills(console: Console, drills: list[DrillRecord], *, last: bool) -> None:
    """Drills, one line each: ``list`` shows each configuration's last, ``show`` the session's."""
    for drill in drills:
        status = {"PASSED": "[green]PASSED[/green]", "FAILED": "[red]FAILED[/red]"}.get(
            drill.status, drill.status
        )
        what = f"last drill of {escape(drill.name)}" if last else f"drill {drill.id}"
        why = f": {escape(drill.error)}" if drill.error else f" ({escape('; '.join(drill.checks))})"
        console.print(
            f"{what}: session {drill.session_id} {status} at {drill.finished_at or drill.started_at}{why}",
            soft_wrap=True,
        )
