"""The fault matrix for SQLite (:class:`FaultMatrix`, both modes, on the directory mirror),
and a session SIGKILLed in every phase from QUIESCE to BACKUP on the block mirror (so SPLIT
freezes the primary filesystem and a dead session would leave it frozen).  After each death:
writes within a second, nothing frozen, the row FAILED with the phase, no archive left, the
next session DONE.  Without the watchdog the filesystem stays
frozen and the row STARTED: that is what the watchdog is for."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from splitmirror.errors import SessionFailed
from splitmirror.phases import Phase
from splitmirror.session import Session
from splitmirror.testing import LedgerDatabase, SessionRunner, SqliteLedgerDatabase, Workspace
from splitmirror.testing.faults import (
    KILL_POINTS,
    FaultMatrix,
    Killed,
    _Act,
    archives_left,
    failure_of,
    is_frozen,
    run_killed,
    seconds_until,
    thaw,
    tracing_instances,
)
from splitmirror.workload import create_ledger


@pytest.fixture
def splitmirror_database(splitmirror_workspace: Workspace) -> LedgerDatabase:
    return SqliteLedgerDatabase(splitmirror_workspace.primary)


class TestSqliteFaultMatrix(FaultMatrix):
    pass


@pytest.fixture
def splitmirror_loop_size() -> int:
    """Room for a ledger of :data:`BEYOND_READ_AHEAD` rows and its WAL."""
    return 160 << 20


@pytest.fixture
def disk(splitmirror_loop_filesystem: Path) -> Path:
    return splitmirror_loop_filesystem  # unmounted afterwards, thawed first if a test failed


@pytest.fixture
def block_runner(splitmirror_session: SessionRunner) -> SessionRunner:
    splitmirror_session.mirror_options = {"provider": "block"}
    return splitmirror_session


def kill_a_freeze(
    disk: Path, runner: SessionRunner, point: str, scratch: Path, *, watchdog: bool = True
) -> tuple[SqliteLedgerDatabase, Killed]:
    """A FREEZE session of a ledger on ``disk``, SIGKILLed at ``point``."""
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    config = runner.config(database, "freeze")
    return database, run_killed(config.source, point, scratch, watchdog=watchdog)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_session_killed_in_any_phase_leaves_nothing_held(
    point: str, disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    database, killed = kill_a_freeze(disk, block_runner, point, tmp_path)
    assert seconds_until(database.accepts_writes) < 1.0
    assert seconds_until(lambda: not is_frozen(disk)) < 1.0
    ws = block_runner.workspace
    row = failure_of(ws.catalog, killed.session_id)
    phase = point.split("-")[0]
    assert row["status"] == "FAILED" and row["failed_phase"] == phase, row
    assert f"died in {phase}" in str(row["error"]), row
    assert archives_left(ws.archives) == [], "an archive of a session that never finished"
    assert not tracing_instances(), "the dead session's change-tracking instance is left"
    assert "splitmirror watchdog:" in killed.stderr
    assert block_runner.run(database, "freeze").status == "DONE"


def test_without_the_watchdog_a_killed_split_leaves_the_filesystem_frozen(
    disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    _database, killed = kill_a_freeze(disk, block_runner, "SPLIT", tmp_path, watchdog=False)
    try:
        time.sleep(0.5)
        assert is_frozen(disk), "nothing thawed it: the watchdog is the only one left to"
        assert failure_of(block_runner.workspace.catalog, killed.session_id)["status"] == "STARTED"
    finally:
        thaw(disk)


def test_the_watchdog_thaws_within_200_ms_of_the_death(
    disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    _database, killed = kill_a_freeze(disk, block_runner, "SPLIT", tmp_path)
    while is_frozen(disk):
        time.sleep(0.005)
    reaction = time.monotonic() - killed.died_at
    print(f"thawed {reaction * 1000:.0f} ms after the session's process was reaped")
    assert reaction < 0.2, reaction


#: Ledger rows of a database several times the read-ahead's reach (at most 12 chunks of 1 MiB
#: in flight), so that a mirror lost after the first progress event still has unread data.
BEYOND_READ_AHEAD = 120_000


def test_the_directory_mirror_lost_with_data_unread_fails_backup(
    splitmirror_session: SessionRunner, tmp_path: Path
) -> None:
    """The fault matrix's "mirror lost mid-BACKUP" on a database larger than what BACKUP reads
    ahead: the loss must fail BACKUP, naming the split mirror, and leave no archive."""
    database = SqliteLedgerDatabase(splitmirror_session.workspace.primary)
    create_ledger(database.path, rows=BEYOND_READ_AHEAD)
    mirror = splitmirror_session.workspace.mirror

    def lose(_session: Session) -> None:  # even a file BACKUP holds open loses its data
        for path in mirror.iterdir():
            os.truncate(path, 0)

    with pytest.raises(SessionFailed) as failure:
        splitmirror_session.run(database, "hot-backup", _Act(Phase.BACKUP, lose, on_progress=True))
    assert failure.value.phase == "BACKUP" and "on the split mirror" in failure.value.reason
    assert archives_left(splitmirror_session.workspace.archives) == []
    assert database.accepts_writes()
    summary = splitmirror_session.run(database, "hot-backup")
    assert database.restored_ledger(splitmirror_session.restore(summary, tmp_path / "r")).integrity_ok


def test_the_mirror_image_cut_short_mid_backup_fails_backup(
    disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    """The block mirror's device going away under BACKUP (here: its image truncated to nothing
    after the first bytes were archived): reads fail, BACKUP fails naming the file, no archive."""
    database = SqliteLedgerDatabase(disk)
    create_ledger(database.path, rows=BEYOND_READ_AHEAD)  # BACKUP reports progress with most unread

    def cut(session: Session) -> None:
        os.truncate(session.config.mirror.mirror, 0)

    with pytest.raises(SessionFailed) as failure:
        block_runner.run(database, "freeze", _Act(Phase.BACKUP, cut, on_progress=True))
    assert failure.value.phase == "BACKUP" and "from the split mirror failed" in failure.value.reason
    assert archives_left(block_runner.workspace.archives) == []
    assert database.accepts_writes() and not is_frozen(disk)
    # A new, empty image in its place: the old checksum map no longer vouches for it.
    mirror = block_runner.workspace.mirror
    mirror.unlink()
    summary = block_runner.run(database, "freeze")
    assert summary.status == "DONE" and summary.stats["bulk_sync"]["bytes_written"] > 0
    assert database.restored_ledger(block_runner.restore(summary, tmp_path / "restored")).integrity_ok
