"""``splitmirror prune``: deleting the archives a retention policy lets go, crash-safely.

Each archive goes in three steps, each durable before the next: the catalog row is marked
``PRUNING`` (with the reason), the archive is deleted (and its directory synced), the row is
marked ``PRUNED``.  A prune killed between them leaves a row that says ``PRUNING``, with the
archive there or not: never a row that claims a kept archive which is gone, nor one that says
gone while the archive stays.  The next prune finishes every ``PRUNING`` row first.  Rows are never
deleted: ``list --all`` shows the history, pruned archives included.

Only what splitmirror wrote is deleted: an archive file, or through the command target's
``delete_command``.  A tape is never touched (recycling cartridges is the media manager's), nor a
copy that went to standard output, which splitmirror cannot find.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import stat
from collections.abc import Mapping
from typing import Any

from .catalog.base import Catalog, SessionSummary, utc_now
from .config import Config
from .errors import ConfigError
from .hostname import host
from .mirror.commands import CommandFailed, run_command
from .operations import RetentionConfig
from .retention import Decision, decide, has_archive, of_configuration
from .targets.builtin import STDOUT_LABEL

#: How long a ``delete_command`` may take for one archive.
DELETE_TIMEOUT_S = 300.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One archive's decision and what became of it: ``kept``, ``deleted``, ``would delete``,
    ``left`` (outside the policy but not splitmirror's to delete), ``failed``."""

    decision: Decision
    result: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        summary = self.decision.session
        return {
            "id": summary.id,
            "started_at": summary.started_at,
            "archive": summary.archive,
            "bytes": summary.bytes,
            "action": self.decision.action,
            "reasons": list(self.decision.reasons),
            "result": self.result,
            "detail": self.detail,
        }


def policy_of(config: Config) -> RetentionConfig:
    """The configuration's ``[retention]``; one sentence when it has none."""
    if config.retention is None:
        raise ConfigError(
            f"{config.source}: there is no [retention] section, so nothing says which archives to "
            "keep; add one with keep_last, keep_within, keep_daily, keep_weekly or keep_monthly"
        )
    return config.retention


def prune(
    config: Config, catalog: Catalog, *, dry_run: bool = False, tz: dt.tzinfo | None = None
) -> list[Outcome]:
    """Apply ``config``'s retention to its sessions in ``catalog``; newest first."""
    everything = catalog.sessions()
    decisions = decide(of_configuration(everything, config), policy_of(config), tz)
    going = {d.session.id for d in decisions if d.action == "delete"}
    # What another row still counts on: an archive path (or delete command) named by a session
    # that stays.  A DBA who moved an archive aside and let the next session write the same
    # path has two rows naming one file, and only the newer one's archive is there.
    named = {_identity(s): s.id for s in everything if s.id not in going and has_archive(s)}
    outcomes = []
    for decision in reversed(decisions):  # the oldest goes first
        if decision.action == "keep":
            outcomes.append(Outcome(decision, "kept"))
            continue
        other = named.get(_identity(decision.session))
        refusal = f"session {other} names the same archive and is kept" if other else _not_ours(decision)
        if refusal:
            outcomes.append(Outcome(decision, "left", refusal))
        elif dry_run:
            outcomes.append(Outcome(decision, "would delete"))
        else:
            outcomes.append(_delete(catalog, decision))
    return outcomes[::-1]


def elsewhere(config: Config, catalog: Catalog) -> list[SessionSummary]:
    """Archives under ``config``'s name that back up another database URL: retention leaves them
    (a configuration copied and not renamed, or a URL respelt: another host name, port, user)."""
    everything = catalog.sessions()
    ours = {s.id for s in of_configuration(everything, config)}
    return [s for s in everything if s.name == config.session.name and s.id not in ours and has_archive(s)]


def _commands(decision: Decision) -> Mapping[str, Any]:
    return _commands_of(decision.session)


def _commands_of(summary: SessionSummary) -> Mapping[str, Any]:
    commands = summary.stats.get("archive_commands")
    return commands if isinstance(commands, Mapping) else {}


def _identity(summary: SessionSummary) -> tuple[str, ...]:
    """What deleting this session's archive would remove: its delete command, else its path."""
    delete = _commands_of(summary).get("delete")
    return tuple(str(arg) for arg in delete) if delete else (summary.archive or "",)


def _not_ours(decision: Decision) -> str:
    """Why the archive is not splitmirror's to delete, or ``""``."""
    location = decision.session.archive or ""
    written_on = next((phase.host for phase in decision.session.phases if phase.name == "BACKUP"), "")
    if written_on and written_on != host():  # its path names a file of the backup host's
        return f"it was written on {written_on} (an off-host backup); delete it there by your own rules"
    if _commands(decision):
        if not _commands(decision).get("delete"):
            return "written by a command target without delete_command; delete it with your tool"
        return ""
    if location == STDOUT_LABEL:
        return "it went to standard output; splitmirror cannot find your copy"
    if not os.path.isabs(location):
        return "the catalog recorded a relative path, which names another file in every directory"
    try:
        mode = os.lstat(location).st_mode
    except FileNotFoundError:
        return ""  # already gone: the row is marked so
    except OSError as error:
        return f"cannot look at it ({error.strerror})"
    if stat.S_ISCHR(mode):
        return "it is on tape; recycle the cartridge by your media rules"
    if not stat.S_ISREG(mode):
        return "it is not a regular file"
    return ""


def _delete(catalog: Catalog, decision: Decision) -> Outcome:
    summary = decision.session
    if summary.pruned is None:
        catalog.mark_pruning(summary.id, at=utc_now(), why="; ".join(decision.reasons))
    delete = _commands(decision).get("delete")
    try:
        if delete:
            run_command("the delete_command", [str(arg) for arg in delete], DELETE_TIMEOUT_S, {})
            detail = "by delete_command"
        else:
            detail = _unlink(summary.archive or "")
    except (OSError, CommandFailed) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        return Outcome(decision, "failed", f"{reason}; the next prune tries again")
    catalog.mark_pruned(summary.id, at=utc_now())
    return Outcome(decision, "deleted", detail)


def _unlink(path: str) -> str:
    """Delete the archive file and make that durable; ``"already gone"`` when it was."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return "already gone"
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some filesystems cannot sync a directory
            os.fsync(directory)
    finally:
        os.close(directory)
    return ""
