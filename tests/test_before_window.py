"""``DatabaseEngine.before_window`` and the mirror's last pre-copy pass (``catch_up``): what an
engine writes just before the window (PostgreSQL's checkpoint) is copied by a pass at the end of
SYNC, not by the final pass inside the window."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from splitmirror import impl
from splitmirror.config import Config
from splitmirror.engines.sqlite import SqliteEngine
from splitmirror.hooks import Hooks
from splitmirror.phases import Mode, Phase
from splitmirror.session import Session
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase

BURST = 8 << 20  # what the first "checkpoint" writes
DIRTIED = 64 << 10  # what the second writes: what was dirtied during the last pre-copy pass


class Phases:
    """Records the phases as they start, beside the engine's calls."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        self.events.append(phase.name)


def checkpoint_into(burst: Path, events: list[str]) -> object:
    """A ``before_window`` that writes into the primary as a checkpoint writes dirty pages out
    (:data:`BURST` bytes the first time, :data:`DIRTIED` the second), and records that it ran."""
    sizes = [BURST, DIRTIED]

    def before_window(self: SqliteEngine, mode: Mode) -> None:
        events.append(f"before_window({mode.value})")
        with open(burst, "r+b") as f:
            f.write(os.urandom(sizes.pop(0)))
            os.fsync(f.fileno())

    return before_window


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_before_window_runs_at_the_end_of_sync_and_its_writes_miss_the_window(
    mode: str,
    tracked_disk: Path,
    splitmirror_session: SessionRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = SqliteLedgerDatabase(tracked_disk)
    database.create_ledger()
    burst = tracked_disk / "pages.bin"
    burst.write_bytes(bytes(BURST))
    events: list[str] = []
    monkeypatch.setattr(SqliteEngine, "before_window", checkpoint_into(burst, events))
    splitmirror_session.mirror_options = {"provider": "directory", "tracking": "on"}
    summary = splitmirror_session.run(database, mode, Phases(events))
    assert summary.status == "DONE"
    called = f"before_window({mode})"
    assert events[events.index("SYNC") : events.index("QUIESCE")] == ["SYNC", called, called], events
    bulk, final = summary.stats["bulk_sync"], summary.stats["final_sync"]
    assert bulk["passes"][-1] >= BURST, f"the last pre-copy pass did not copy the burst: {bulk['passes']}"
    assert final["bytes_written"] < BURST // 4, f"the window copied the burst: {final}"
    assert final["bytes_written"] >= DIRTIED, "the second checkpoint's pages are the final pass's"


def test_without_tracking_there_is_no_extra_pass(
    ledger: Path, make_config: Callable[..., Config], hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Untracked (the primary on the root filesystem), a catch-up pass would compare as much
    as the final pass: none runs, and ``before_window`` still does."""
    events: list[str] = []
    monkeypatch.setattr(SqliteEngine, "before_window", lambda self, mode: events.append(mode.value))
    summary = Session(make_config(mode="hot-backup"), hooks).run()
    assert events == ["hot-backup"]
    assert summary.stats["bulk_sync"]["tracking"].startswith("untracked")
    assert len(summary.stats["bulk_sync"]["passes"]) == 1, summary.stats["bulk_sync"]
