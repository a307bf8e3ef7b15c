"""Off-host backup at the command line: what ``backup --split-only`` says once the split is
handed over, and ``splitmirror archive``, a backup host's worker (docs/fleet.md)."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.markup import escape

from .catalog import open_catalog
from .catalog.base import Handover
from .cli_common import _emit_json, _says_catalog, handled, json_option, out
from .errors import CatalogError, SessionInterrupted
from .session import Session
from .units import format_size
from .worker import Outcome, Worker
from .workerconfig import load_worker_config


def handed_over(session: Session, report: Console, data: dict[str, object], as_json: bool) -> None:
    """What ``backup --split-only`` says once the split is in the catalog."""
    catalog = session.catalog
    assert catalog is not None and session.id is not None
    (split,) = catalog.handovers(session_id=session.id)
    data["handover"] = split.to_json()
    if as_json:
        _emit_json(data, report)
        return
    report.print(
        f"session {split.session_id}: split handed over (the disk {escape(split.identity)}); a backup "
        "host archives it with `splitmirror archive`",
        soft_wrap=True,
    )


def print_handover(console: Console, split: Handover) -> None:
    """``show``'s line on an off-host session: whose split, on which disk, where it is now."""
    by = f", by {escape(split.worker)}" if split.worker else ""
    console.print(
        f"off-host: split by {escape(split.host)} at {split.handed_at} on the disk {escape(split.identity)}; "
        f"{split.state.lower()}{by} (attempts: {split.attempts})",
        soft_wrap=True,
    )


def _said(outcome: Outcome) -> str:
    took = f"{outcome.duration_s:.1f} s"
    if outcome.status == "DONE":
        return (
            f"session {outcome.session_id} ({escape(outcome.name)}): [green]DONE[/green] {outcome.files} "
            f"files, {format_size(outcome.bytes)} in {took} → {escape(outcome.archive or '')}"
        )
    colour = "red" if outcome.status == "FAILED" else "yellow"
    return (
        f"session {outcome.session_id} ({escape(outcome.name)}): [{colour}]{outcome.status}[/{colour}] "
        f"after {took}: {escape(outcome.error or '')}"
    )


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the worker as Ctrl-C does: the split it holds goes back at once."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SessionInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command(name="archive")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--session", "session_id", type=int, metavar="ID", help="Archive this session's split only.")
@click.option("--wait", is_flag=True, help="Keep going: ask the catalog for new splits every [archive] poll.")
@json_option
@handled
def archive_(config: Path, session_id: int | None, wait: bool, as_json: bool) -> None:
    """Archive the splits database hosts handed over (a backup host's worker).

    CONFIG names the catalog, this host's mirror disks ([archive] devices) and where archives
    go ([target]).  Takes one split at a time, oldest first, from a disk of this host's, reads
    it by extent from that disk (checked to be the one the split was taken on) and records the
    archive; the database host's next session may then synchronise the mirror again.  Workers
    on several hosts share the splits; one that dies leaves its split to the next after
    [archive] lease.  Without --wait, it stops when no split is waiting.  Exit code 1 when a
    split failed.
    """
    cfg = load_worker_config(config)
    worker = Worker(cfg)
    outcomes: list[Outcome] = []
    with _stoppable(), contextlib.closing(open_catalog(worker.address, create=False)) as catalog:
        if not as_json:
            _says_catalog(worker.address)
        while True:
            outcome = worker.take(catalog, session_id)
            if outcome is not None:
                outcomes.append(outcome)
                if not as_json:
                    out.print(_said(outcome), soft_wrap=True)
            if session_id is not None:
                if outcome is None:
                    raise CatalogError(
                        f"session {session_id}'s split is not waiting: archived already, or another worker "
                        "has it"
                    )
                break
            if outcome is None and not wait:
                break
            if outcome is None:
                time.sleep(cfg.archive.poll)
    if as_json:
        _emit_json([o.to_json() for o in outcomes])
    elif not outcomes:
        out.print("no split waits on this host's disks")
    if any(o.status == "FAILED" for o in outcomes):
        sys.exit(1)
