"""Which archives a retention policy keeps: pure decisions, no files and no catalog writes.

The rules are the ones DBAs know from borg, restic and pgBackRest, and an archive stays when any
rule keeps it:

- ``keep_last N``: the N newest archives;
- ``keep_within D``: every archive started within D of the *newest* archive's start, not of now,
  so a schedule that stopped (a full disk for a fortnight) never lets prune erode the history
  it can no longer replace;
- ``keep_daily N`` / ``keep_weekly N`` / ``keep_monthly N``: the newest archive of each of the N
  newest days / ISO weeks / months that have one, in the machine's local time (as a timer's
  ``OnCalendar`` counts days); a day without an archive does not use up a slot.

Whatever the rules say, the newest ``DONE`` archive always stays: prune never leaves a
configuration without its last good backup.  Only sessions with a complete archive are
candidates (``DONE``, or ``FAILED`` in CLEANUP, whose archive was complete); a ``STARTED`` session
is still writing and is never looked at.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from .catalog.base import DONE, FAILED, PRUNED, PRUNING, SessionSummary
from .config import Config, redact_url
from .operations import RetentionConfig

Action = Literal["keep", "delete"]


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the policy says of one archive, and why (``prune --dry-run`` prints the reasons)."""

    session: SessionSummary
    action: Action
    reasons: tuple[str, ...]


def has_archive(summary: SessionSummary) -> bool:
    """A complete archive the catalog still counts as there (or half deleted by a killed prune)."""
    complete = summary.status == DONE or (summary.status == FAILED and summary.failed_phase == "CLEANUP")
    return complete and summary.pruned != PRUNED and bool(summary.archive)


def _started(summary: SessionSummary, tz: dt.tzinfo | None) -> dt.datetime:
    return dt.datetime.fromisoformat(summary.started_at).astimezone(tz)


_PERIODS: dict[str, Callable[[dt.datetime], str]] = {
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: t.strftime("%Y-%m"),
}


def decide(
    sessions: Iterable[SessionSummary], policy: RetentionConfig, tz: dt.tzinfo | None = None
) -> list[Decision]:
    """A decision for every archive among ``sessions`` (one configuration's), newest first.

    ``tz`` is the time zone days, weeks and months are counted in (``None``: local time).  An
    archive a killed prune left ``PRUNING`` is decided ``delete`` whatever the rules say now: its
    deletion was recorded before it began, so the next prune finishes it.
    """
    archives = sorted(
        (s for s in sessions if has_archive(s)), key=lambda s: (s.started_at, s.id), reverse=True
    )
    reasons: dict[int, list[str]] = {s.id: [] for s in archives}
    done = [s for s in archives if s.status == DONE and s.pruned is None]
    if done:
        reasons[done[0].id].append("the newest DONE archive")
    live = [s for s in archives if s.pruned is None]
    if policy.keep_last is not None:
        for summary in live[: policy.keep_last]:
            reasons[summary.id].append(f"one of the last {policy.keep_last}")
    if policy.keep_within is not None and live:
        newest = _started(live[0], tz)
        for summary in live:
            if (newest - _started(summary, tz)).total_seconds() <= policy.keep_within:
                reasons[summary.id].append(f"within {_duration(policy.keep_within)} of the newest")
    for period, key in _PERIODS.items():
        count = getattr(policy, f"keep_{period}")
        if count is None:
            continue
        seen: list[str] = []
        for summary in live:
            label = key(_started(summary, tz))
            if label not in seen and len(seen) < count:
                seen.append(label)
                reasons[summary.id].append(f"{period} {label}")
    decisions = []
    for summary in archives:
        if summary.pruned == PRUNING:
            why = (summary.pruned_why or "outside the policy") + "; an earlier prune did not finish"
            decisions.append(Decision(summary, "delete", (why,)))
        elif reasons[summary.id]:
            decisions.append(Decision(summary, "keep", tuple(reasons[summary.id])))
        else:
            decisions.append(Decision(summary, "delete", ("outside the policy",)))
    return decisions


def _duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def of_configuration(sessions: Sequence[SessionSummary], config: Config) -> list[SessionSummary]:
    """The sessions of ``config``: retention is per configuration, by the name the catalog and
    the archives carry (a config file moved keeps its history) *and* the database it backs up,
    so a configuration copied for another database and not renamed never prunes the first
    one's archives (nor counts their newest as its own)."""
    url = redact_url(config.database.url)
    return [s for s in sessions if s.name == config.session.name and s.database_url == url]
