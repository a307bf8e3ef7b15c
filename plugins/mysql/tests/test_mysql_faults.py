"""MariaDB's (and, where its image can be pulled, MySQL's) rows of the fault matrix: the
session SIGKILLed while BACKUP STAGE / the locks are held with the data directory frozen, and
during BACKUP.  The server commits within a second, nothing stays frozen, no connection of ours
lingers, the row is FAILED with the phase, no archive is left, the next session is DONE."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.testing import SessionRunner
from splitmirror.testing.faults import archives_left, failure_of, is_frozen, run_killed, seconds_until
from splitmirror_mysql.testing import MysqlLedgerDatabase


def others(database: MysqlLedgerDatabase) -> int:
    """Client connections besides this one (the killed session's, if the server kept it)."""
    connection = database.server.connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                " WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump')"
                " AND USER NOT IN ('system user', 'event_scheduler')"
            )
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("mode", "point"),
    [("freeze", "QUIESCE"), ("freeze", "SPLIT"), ("hot-backup", "SPLIT"), ("freeze", "BACKUP-mid")],
)
def test_a_killed_session_leaves_the_server_writable_and_unlocked(
    mode: str,
    point: str,
    splitmirror_database: MysqlLedgerDatabase,
    splitmirror_session: SessionRunner,
    tmp_path: Path,
) -> None:
    datadir = splitmirror_database.server.datadir
    if not os.path.ismount(datadir.parent):
        pytest.skip("the locks' split needs the data directory on a filesystem of its own (root)")
    splitmirror_database.create_ledger()
    config = splitmirror_session.config(splitmirror_database, mode)
    killed = run_killed(config.source, point, tmp_path)
    assert seconds_until(splitmirror_database.accepts_writes) < 1.0
    assert not is_frozen(datadir)
    ws = splitmirror_session.workspace
    row = failure_of(ws.catalog, killed.session_id)
    assert (row["status"], row["failed_phase"]) == ("FAILED", point.split("-")[0]), row
    assert archives_left(ws.archives) == []
    assert seconds_until(lambda: others(splitmirror_database) == 0) < 1.0, "a connection of ours lingers"
    assert splitmirror_session.run(splitmirror_database, mode).status == "DONE"
