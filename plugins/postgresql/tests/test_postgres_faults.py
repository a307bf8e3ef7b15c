"""PostgreSQL's rows of the fault matrix: the session SIGKILLed inside the window and during
BACKUP, with the data directory on a loop-device ext4 that FREEZE freezes.  The server takes a
committed write within a second, no filesystem stays frozen, no backup or slot is left, the
catalog row is FAILED with the phase, no archive is left, and the next session is DONE."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from splitmirror.testing import SessionRunner
from splitmirror.testing.faults import archives_left, failure_of, is_frozen, run_killed, seconds_until
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres


@pytest.mark.parametrize(
    ("mode", "point"),
    [("freeze", "QUIESCE"), ("freeze", "SPLIT"), ("hot-backup", "SPLIT"), ("freeze", "BACKUP-mid")],
)
def test_a_killed_session_leaves_postgres_writable_and_out_of_backup(
    mode: str,
    point: str,
    container_postgres: ContainerPostgres,
    splitmirror_session: SessionRunner,
    tmp_path: Path,
) -> None:
    if not os.path.ismount(container_postgres.datadir.parent):
        pytest.skip("FREEZE needs the data directory on a filesystem of its own (root)")
    database = ContainerLedgerDatabase(container_postgres)
    database.create_ledger()
    config = splitmirror_session.config(database, mode)
    killed = run_killed(config.source, point, tmp_path)
    assert seconds_until(database.accepts_writes) < 1.0
    assert not is_frozen(container_postgres.datadir)
    ws = splitmirror_session.workspace
    row = failure_of(ws.catalog, killed.session_id)
    assert (row["status"], row["failed_phase"]) == ("FAILED", point.split("-")[0]), row
    assert archives_left(ws.archives) == []
    with psycopg.connect(database.url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
        others = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        assert seconds_until(lambda: conn.execute(others).fetchone() == (0,)) < 1.0, (
            "a backend of ours lingers"
        )
        conn.execute("SELECT pg_backup_start('probe', true)")  # no backup of ours still running
        conn.execute("SELECT pg_backup_stop(false)")
    assert splitmirror_session.run(database, mode).status == "DONE"
