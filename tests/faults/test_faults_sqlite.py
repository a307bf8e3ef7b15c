"""The fault matrix for SQLite (:class:`FaultMatrix`, both modes, on the directory mirror),
and a session SIGKILLed in every phase from QUIESCE to BACKUP on the block mirror (so SPLIT
freezes the primary filesystem and a dead session would leave it frozen).  After each death:
writes within a second, nothing frozen, the row FAILED with the phase, no archive left, the
next session DONE.  Without the watchdog the filesystem stays
frozen and the row STARTED: that is what the watchdog is for."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from splitmirror.testing import LedgerDatabase, SessionRunner, SqliteLedgerDatabase, Workspace
from splitmirror.testing.faults import (
    KILL_POINTS,
    FaultMatrix,
    archives_left,
    failure_of,
    is_frozen,
    run_killed,
    seconds_until,
    thaw,
)


@pytest.fixture
def splitmirror_database(splitmirror_workspace: Workspace) -> LedgerDatabase:
    return SqliteLedgerDatabase(splitmirror_workspace.primary)


class TestSqliteFaultMatrix(FaultMatrix):
    pass


@pytest.fixture
def disk(splitmirror_loop_filesystem: Path) -> Path:
    return splitmirror_loop_filesystem  # unmounted afterwards, thawed first if a test failed


@pytest.fixture
def block_runner(splitmirror_session: SessionRunner) -> SessionRunner:
    splitmirror_session.mirror_options = {"provider": "block"}
    return splitmirror_session


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_session_killed_in_any_phase_leaves_nothing_held(
    point: str, disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    config = block_runner.config(database, "freeze")
    killed = run_killed(config.source, point, tmp_path)
    assert seconds_until(database.accepts_writes) < 1.0
    assert seconds_until(lambda: not is_frozen(disk)) < 1.0
    ws = block_runner.workspace
    row = failure_of(ws.catalog, killed.session_id)
    phase = point.split("-")[0]
    assert row["status"] == "FAILED" and row["failed_phase"] == phase, row
    assert f"died in {phase}" in str(row["error"]), row
    assert archives_left(ws.archives) == [], "an archive of a session that never finished"
    assert "splitmirror watchdog:" in killed.stderr
    assert block_runner.run(database, "freeze").status == "DONE"


def test_without_the_watchdog_a_killed_split_leaves_the_filesystem_frozen(
    disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    config = block_runner.config(database, "freeze")
    killed = run_killed(config.source, "SPLIT", tmp_path, watchdog=False)
    try:
        time.sleep(0.5)
        assert is_frozen(disk), "nothing thawed it: the watchdog is the only one left to"
        assert failure_of(block_runner.workspace.catalog, killed.session_id)["status"] == "STARTED"
    finally:
        thaw(disk)
