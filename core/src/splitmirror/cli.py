"""The ``splitmirror`` command line.

Library code raises; this module alone decides how to exit.  A :class:`UserError` is printed as
its one sentence; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from . import __version__, preflight
from .catalog import catalog_address, open_catalog
from .catalog.base import PRUNED
from .cli_catalog import catalog_
from .cli_common import (
    _catalog_for,
    _emit_json,
    _says_catalog,
    catalog_option,
    config_option,
    err,
    handled,
    json_option,
    out,
    state,
)
from .cli_fleet import archive_, handed_over, print_handover
from .cli_operations import drill_, drill_due, prune_, run_drill_and_report, run_prune
from .config import load_config
from .drill import scratch_of
from .errors import SessionBusyError, SessionFailed
from .hooks import Hooks
from .plugins import PluginRecord
from .progress_bars import ProgressBars
from .prune import policy_of
from .report import print_drills, print_files, print_sessions, print_summary, summary_json
from .restore import from_catalog, locate_archive, restore_archive, verify_archive
from .restore.report import print_restore, print_verify
from .session import Session

EXIT_CODES = """\b
Exit codes:
  0  success
  1  the session ran and failed (the catalog says FAILED, with the phase);
     restore: writing into DIR failed part way (a full disk, permissions);
     prune (and backup --prune): an archive could not be deleted; drill (and
     backup with [drill] every): the drill failed, its session staying DONE
  2  bad configuration (a path inside the primary or the mirror too),
     bad arguments, or an unknown or broken plugin
  3  a preflight check failed (nothing was changed on the database)
  4  another session is running for this configuration or on its mirror;
     prune: another prune of the catalog held it for over ten minutes
  5  the catalog cannot be opened or is not there, the session asked for is
     not in it or not DONE (nor failed in CLEANUP, its archive complete), or
     the archive to verify or restore cannot be found
  6  verification failed: a checksum, size or the manifest does not match,
     or the archive is truncated, damaged or not a tar archive; restore: a
     member does not match its checksum
  7  restore refused: an unsafe member, DIR is not empty or something in it
     is in a member's way, or the archive is not a regular file (nothing
     was written)
  130 interrupted before the session started
"""


class _OneSentence(click.Group):
    """Usage errors as one line, like every other error: click's own print a usage block,
    a hint and the error on three lines."""

    def main(
        self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as shown:  # bare `splitmirror`: the help
            click.echo(shown.format_message())
            sys.exit(0)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "splitmirror"
            click.echo(f"error: {error.format_message().rstrip('.')}; see `{where} --help`", err=True)
            sys.exit(2)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_OneSentence, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="splitmirror")
def main() -> None:
    """Consistent file-level backups of live databases from a split mirror."""


main.add_command(prune_)
main.add_command(drill_)
main.add_command(catalog_)
main.add_command(archive_)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option(
    "--take-over-mirror",
    is_flag=True,
    help="Hand the mirror, which holds another primary's copy, over to CONFIG's primary (once).",
)
@click.option("--prune", "then_prune", is_flag=True, help="After a DONE session, apply CONFIG's [retention].")
@click.option(
    "--split-only",
    is_flag=True,
    help="Stop after the split and hand it over for a backup host to archive (`splitmirror archive`).",
)
@handled
def backup(
    config: Path, as_json: bool, quiet: bool, take_over_mirror: bool, then_prune: bool, split_only: bool
) -> None:
    """Run one backup session for CONFIG (a TOML file).

    With --split-only, or [session] backup = "off-host", the session ends after UNQUIESCE: the
    split is recorded in the catalog for a backup host, whose `splitmirror archive` writes the
    archive from the mirror's disk (docs/fleet.md).
    """
    cfg = load_config(config)
    off_host = split_only or cfg.session.backup == "off-host"
    if then_prune and off_host:
        raise click.UsageError("--prune needs the archive, which a backup host writes off-host; prune there")
    if then_prune:
        policy_of(cfg)  # a --prune without [retention] is said before the session, not after
    if cfg.drill is not None and cfg.drill.every is not None:
        scratch_of(cfg)  # so is a drill that could not restore anywhere
    hooks = Hooks()
    session = Session(cfg, hooks, take_over_mirror=take_over_mirror, split_only=split_only)
    # With the archive on standard output, reports go to standard error.
    state.archive_on_stdout = not off_host and cfg.target is not None and cfg.target.path == "-"
    report = err if state.archive_on_stdout else out
    emit = functools.partial(_emit_json, console=report)
    bars = ProgressBars(err, enabled=not quiet and err.is_terminal)
    unregister = hooks.register(bars, "cli-progress")
    try:
        summary = session.run()
    except SessionFailed:
        failed = session.summary()
        if failed is not None:
            if as_json:
                emit(summary_json(failed))
            else:
                print_summary(report, failed)
        raise
    finally:
        bars.stop()
        unregister()
    data = summary_json(summary)  # with --json, one object: the drill and the prune inside it
    if not as_json:
        print_summary(report, summary)
    if off_host:  # no archive here yet: no drill, no prune
        handed_over(session, report, data, as_json)
        return
    address = catalog_address(cfg.session.catalog)
    drilled = not drill_due(cfg, address) or run_drill_and_report(
        cfg, address, summary.id, report, keep=False, as_json=as_json, into=data
    )
    skipped = ""
    pruned = not then_prune
    if then_prune and not drilled:  # the older archives may be the good ones: keep them all
        skipped = f"session {summary.id}'s drill failed; fix that before retention deletes more"
    elif then_prune:
        try:
            pruned = run_prune(cfg, report, as_json=as_json, into=data)
        except SessionBusyError as busy:  # the session is DONE: say so, whatever prune could do
            skipped = str(busy)
    if skipped:
        data["prune_skipped"] = f"prune skipped: {skipped}"
        if not as_json:
            report.print(f"[yellow]{escape(data['prune_skipped'])}[/yellow]", soft_wrap=True)
    if as_json:
        emit(data)
    if not (drilled and pruned):
        sys.exit(1)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@json_option
@click.option(
    "--take-over-mirror",
    is_flag=True,
    help="Check as `backup --take-over-mirror` would run: a mirror of another primary is no problem.",
)
@handled
def check(config: Path, as_json: bool, take_over_mirror: bool) -> None:
    """Preflight CONFIG: connect, check privileges, mirror and target; change nothing."""
    cfg = load_config(config)
    checked = preflight.check(cfg, Hooks(), take_over_mirror=take_over_mirror)
    server, problems, notes = checked.server, checked.problems, checked.notes
    if as_json:
        _emit_json(
            {
                "ok": not problems,
                "server": dataclasses.asdict(server),
                "problems": [dataclasses.asdict(p) for p in problems],
                "notes": notes,
            }
        )
    else:
        out.print(f"{server.kind} {server.version} {server.flavour}".rstrip())
        for note in notes:
            out.print(f"· {escape(note)}", soft_wrap=True)
        for problem in problems:
            out.print(f"[red]✗[/red] {escape(problem.sentence())}", soft_wrap=True)
        if not problems:
            out.print(f"[green]✓[/green] ready for a {cfg.database.mode.value} session")
    if problems:
        sys.exit(3)


@main.command()
@json_option
@handled
def plugins(as_json: bool) -> None:
    """List plugins: name, distribution, version, what each provides, load errors."""
    hooks = Hooks()
    provides: dict[str, list[str]] = {}
    for family, registry in (
        ("engine", hooks.engines),
        ("mirror", hooks.mirrors),
        ("target", hooks.targets),
    ):
        for name, entry in registry.entries():
            provides.setdefault(entry.plugin, []).append(f"{family}:{name}")
    modes = {name: [m.value for m in entry.cls.modes] for name, entry in hooks.engines.entries()}

    def status(record: PluginRecord) -> str:
        return "blocked" if record.blocked else ("error" if record.error else "loaded")

    records = hooks.plugins.records
    if as_json:
        _emit_json(
            [
                {
                    "name": r.name,
                    "distribution": r.distribution,
                    "version": r.version,
                    "builtin": r.builtin,
                    "status": status(r),
                    "provides": provides.get(r.name, []),
                    "modes": {
                        name: modes[name] for name, entry in hooks.engines.entries() if entry.plugin == r.name
                    },
                    "error": r.error,
                }
                for r in records
            ]
        )
        return
    table = Table()
    for column in ("plugin", "distribution", "version", "status", "provides"):
        table.add_column(column)
    for r in records:
        shown = f"[red]error: {escape(r.error)}[/red]" if r.error else status(r)
        shows = [
            f"{item} ({', '.join(modes[item[7:]])})" if item.startswith("engine:") else item
            for item in provides.get(r.name, [])
        ]
        table.add_row(r.name, r.distribution, r.version, shown, ", ".join(shows))
    out.print(table)


def _since(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date; write it like 2026-11-24 or 2026-11-24T08:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC).isoformat(timespec="milliseconds")


@main.command(name="list")
@click.option("--database", help="Only sessions of this engine (sqlite, postgresql, ...).")
@click.option(
    "--status",
    type=click.Choice(["STARTED", "DONE", "FAILED"], case_sensitive=False),
    help="Only this status.",
)
@click.option("--since", help="Only sessions started at or after this date/time (ISO 8601, UTC default).")
@click.option("--all", "show_all", is_flag=True, help="Also the sessions whose archives were pruned.")
@config_option
@catalog_option
@json_option
@handled
def list_(
    database: str | None,
    status: str | None,
    since: str | None,
    show_all: bool,
    config_file: Path | None,
    catalog_path: str | None,
    as_json: bool,
) -> None:
    """List the sessions in the catalog (those whose archives were pruned only with --all)."""
    after = _since(since)  # a bad argument is said before any catalog is looked for
    path = _catalog_for(catalog_path, config_file)
    catalog = open_catalog(path, create=False)
    sessions = catalog.sessions(database=database, status=status and status.upper(), since=after)
    if not show_all:
        sessions = [s for s in sessions if s.pruned != PRUNED]
    if as_json:
        _emit_json([summary_json(s) for s in sessions])
    else:
        _says_catalog(path)
        print_sessions(
            out, sessions, {split.session_id: split for split in catalog.handovers(outstanding=True)}
        )
        names = dict.fromkeys(s.name for s in sessions)
        print_drills(out, [d for name in names for d in catalog.drills(name=name)[-1:]], last=True)


@main.command()
@click.argument("session_id", type=int, metavar="ID")
@config_option
@catalog_option
@json_option
@handled
def show(session_id: int, config_file: Path | None, catalog_path: str | None, as_json: bool) -> None:
    """Show one session: phases, window, and its files in archive order."""
    path = _catalog_for(catalog_path, config_file)
    catalog = open_catalog(path, create=False)
    summary = catalog.get(session_id)
    files = catalog.files(session_id)
    drills = catalog.drills(session_id=session_id)
    split = next(iter(catalog.handovers(session_id=session_id)), None)
    if as_json:
        handover = {"handover": split.to_json()} if split is not None else {}
        _emit_json({**summary_json(summary, files), "drills": [d.to_json() for d in drills], **handover})
    else:
        _says_catalog(path)
        print_summary(out, summary)
        if split is not None:
            print_handover(out, split)
        print_files(out, files)
        print_drills(out, drills, last=False)


archive_option = click.option(
    "--archive",
    metavar="PATH",
    help="The archive to read (default: the one the catalog names for ID).",
)


@main.command()
@click.argument("session_id", type=int, metavar="[ID]", required=False)
@archive_option
@config_option
@catalog_option
@json_option
@handled
def verify(
    session_id: int | None,
    archive: str | None,
    config_file: Path | None,
    catalog_path: str | None,
    as_json: bool,
) -> None:
    """Re-read an archive and check every checksum.

    Every member's data against its checksum record, and the members and the manifest against
    the catalog's file list for session ID.  With --archive PATH and no ID, the archive is
    checked against its own manifest (for an archive carried to another host); --archive -
    reads standard input.
    """
    path = _catalog_for(catalog_path, config_file)
    source, files = locate_archive(session_id, archive, path)
    report = verify_archive(source, files, session_id=session_id)
    if as_json:
        _emit_json(report.to_json())
    else:
        if session_id is not None:
            _says_catalog(path)
        print_verify(out, report)
    if not report.ok:
        sys.exit(6)


@main.command()
@click.argument("session_id", type=int, metavar="[ID]", required=False)
@click.option(
    "--to",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to restore: a new or empty directory.",
)
@click.option(
    "--only", multiple=True, metavar="GLOB", help="Restore only members matching GLOB (repeatable)."
)
@click.option(
    "--force", is_flag=True, help="Restore into a non-empty directory, replacing files of the same name."
)
@click.option("--verbose", "-v", is_flag=True, help="List every member restored.")
@archive_option
@config_option
@catalog_option
@json_option
@handled
def restore(
    session_id: int | None,
    directory: Path,
    only: tuple[str, ...],
    force: bool,
    verbose: bool,
    archive: str | None,
    config_file: Path | None,
    catalog_path: str | None,
    as_json: bool,
) -> None:
    """Restore an archive safely into a directory.

    Extracts session ID's archive (or --archive PATH) into --to DIR, checking every file against
    its checksum, then prints what the database engine says to run next.  Members that would
    land outside DIR (absolute paths, '..', escaping links) and device nodes or FIFOs are
    refused before anything is written.
    """
    path = _catalog_for(catalog_path, config_file)
    source, files = locate_archive(session_id, archive, path)
    expected = from_catalog(files) if files is not None else None
    result = restore_archive(source, directory, only=only, force=force, expected=expected)
    if as_json:
        _emit_json(result.to_json())
    else:
        if session_id is not None:
            _says_catalog(path)
        print_restore(out, result, verbose=verbose)


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("splitmirror-demo"),
    show_default=True,
    help="Where the demo puts its database, mirror, archives and catalog.",
)
@json_option
@handled
def demo(directory: Path, as_json: bool) -> None:
    """Back up a live SQLite database twice (FREEZE, HOT_BACKUP); no server, no root."""
    from .demo import run_demo

    run_demo(directory, out=out, err=err, as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    main()
