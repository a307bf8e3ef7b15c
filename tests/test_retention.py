"""Retention decisions, table-driven over dates: which archives each rule keeps, and why."""

from __future__ import annotations

import datetime as dt

import pytest

from splitmirror.catalog.base import DONE, FAILED, PRUNED, PRUNING, STARTED, SessionSummary
from splitmirror.operations import RetentionConfig
from splitmirror.retention import decide

UTC = dt.UTC


def session(id: int, started: str, status: str = DONE, **fields: object) -> SessionSummary:
    fields.setdefault("archive", f"/backup/orders-{id}.tar")
    at = dt.datetime.fromisoformat(started).replace(tzinfo=UTC).isoformat()
    return SessionSummary(
        id=id, name="orders", status=status, mode="freeze", database="sqlite", database_url="sqlite:///x",
        config="/etc/orders.toml", started_at=at, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def nightly(days: int, start: str = "2026-11-01T02:00") -> list[SessionSummary]:
    """One DONE session a night, ``days`` nights, ids 1..days."""
    first = dt.datetime.fromisoformat(start)
    return [session(i + 1, (first + dt.timedelta(days=i)).isoformat()) for i in range(days)]


def kept(sessions: list[SessionSummary], **rules: object) -> list[int]:
    decisions = decide(sessions, RetentionConfig(**rules), tz=UTC)  # type: ignore[arg-type]
    return sorted(d.session.id for d in decisions if d.action == "keep")


# 2026-11-01 is a Sunday; ISO week 44 ends on it.  Nights 1..36 run to 2026-12-06.
@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"keep_last": 3}, [34, 35, 36]),
        ({"keep_last": 100}, list(range(1, 37))),
        ({"keep_within": "2d"}, [34, 35, 36]),  # 48 h before the newest start, inclusive
        ({"keep_within": 86400 * 2 - 1}, [35, 36]),
        ({"keep_daily": 4}, [33, 34, 35, 36]),
        # Newest of each ISO week: Sun 12-06 (W49), Sun 11-29 (W48), Sun 11-22 (W47).
        ({"keep_weekly": 3}, [22, 29, 36]),
        # Newest of each month: 12-06 (December), 11-30 (November); there is no third month.
        ({"keep_monthly": 3}, [30, 36]),
        ({"keep_last": 2, "keep_weekly": 2}, [29, 35, 36]),
        ({"keep_daily": 2, "keep_monthly": 2}, [30, 35, 36]),
    ],
    ids=lambda value: ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else "",
)
def test_rules_over_five_weeks_of_nightly_archives(rules: dict[str, object], expected: list[int]) -> None:
    assert kept(nightly(36), **rules) == expected


def test_days_without_an_archive_do_not_use_up_a_slot() -> None:
    sessions = [
        session(1, "2026-11-01T02:00"),
        session(2, "2026-11-05T02:00"),
        session(3, "2026-11-09T02:00"),
    ]
    assert kept(sessions, keep_daily=3) == [1, 2, 3]


def test_the_newest_of_a_day_is_the_one_kept() -> None:
    sessions = [
        session(1, "2026-11-01T02:00"),
        session(2, "2026-11-01T14:00"),
        session(3, "2026-11-02T02:00"),
    ]
    assert kept(sessions, keep_daily=2) == [2, 3]


def test_days_are_counted_in_the_given_time_zone() -> None:
    # 23:30 UTC on the 1st is already the 2nd in Berlin: two days in UTC, one there.
    sessions = [session(1, "2026-11-01T23:30"), session(2, "2026-11-02T02:00")]
    assert kept(sessions, keep_daily=2) == [1, 2]
    berlin = dt.timezone(dt.timedelta(hours=1))
    decisions = decide(sessions, RetentionConfig(keep_daily=2), tz=berlin)
    assert [(d.session.id, d.action) for d in decisions] == [(2, "keep"), (1, "delete")]


def test_keep_within_counts_back_from_the_newest_archive_not_from_now() -> None:
    """A schedule that stopped a year ago keeps its last week, however old."""
    old = nightly(10, start="2020-01-01T02:00")
    assert kept(old, keep_within="3d") == [7, 8, 9, 10]


def test_the_newest_done_archive_stays_whatever_the_rules() -> None:
    sessions = [
        session(1, "2026-11-01T02:00"),
        session(2, "2026-11-02T02:00", FAILED, failed_phase="CLEANUP"),
    ]
    decisions = {d.session.id: d for d in decide(sessions, RetentionConfig(keep_last=1), tz=UTC)}
    assert decisions[2].action == "keep"  # the newest archive (complete, its resync failed)
    assert decisions[1].action == "keep" and decisions[1].reasons == ("the newest DONE archive",)


def test_only_complete_archives_are_candidates() -> None:
    sessions = [
        session(1, "2026-11-01T02:00"),
        session(2, "2026-11-02T02:00", FAILED, failed_phase="BACKUP", archive=None),
        session(3, "2026-11-03T02:00", STARTED),  # still writing: never looked at
        session(4, "2026-11-04T02:00", pruned=PRUNED),  # gone already
    ]
    decisions = decide(sessions, RetentionConfig(keep_last=1), tz=UTC)
    assert [(d.session.id, d.action) for d in decisions] == [(1, "keep")]


def test_an_unfinished_prune_is_finished_whatever_the_rules_say_now() -> None:
    left = session(0, "2026-10-31T02:00", pruned=PRUNING, pruned_why="one of the old ones")
    decisions = {d.session.id: d for d in decide([*nightly(3), left], RetentionConfig(keep_last=10), tz=UTC)}
    assert decisions[0].action == "delete"
    assert decisions[0].reasons == ("one of the old ones; an earlier prune did not finish",)
    assert {decisions[i].action for i in (1, 2, 3)} == {"keep"}


def test_reasons_say_every_rule_that_keeps() -> None:
    decisions = decide(nightly(3), RetentionConfig(keep_last=1, keep_daily=1), tz=UTC)
    assert decisions[0].reasons == ("the newest DONE archive", "one of the last 1", "daily 2026-11-03")
    assert decisions[1].reasons == ("outside the policy",)
