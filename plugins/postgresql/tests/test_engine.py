"""Bad input and leftovers for the PostgreSQL engine, against a real server."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from splitmirror import impl
from splitmirror.errors import PreflightError, SessionFailed
from splitmirror.phases import Phase
from splitmirror.session import Session
from splitmirror.testing import SessionRunner
from splitmirror.testing.contract import Fault
from splitmirror_postgresql.layout import logical_key, wal_segments
from splitmirror_postgresql.testing import HostPostgres, PostgresLedgerDatabase


def test_password_in_the_url_is_refused(
    splitmirror_database: PostgresLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    splitmirror_database.url = splitmirror_database.url.replace("postgres@", "postgres:sekrit@")
    with pytest.raises(
        PreflightError, match="carries a password; remove it and put the password in PGPASSWORD"
    ) as error:
        splitmirror_session.run(splitmirror_database, "hot-backup")
    assert "sekrit" not in str(error.value)


def test_server_down_is_one_sentence(
    splitmirror_database: PostgresLedgerDatabase,
    splitmirror_session: SessionRunner,
    host_postgres: HostPostgres,
) -> None:
    host_postgres.stop()
    with pytest.raises(PreflightError, match=r"cannot connect to PostgreSQL at .*; check the URL") as error:
        splitmirror_session.run(splitmirror_database, "hot-backup")
    assert "\n" not in str(error.value)


def test_freeze_on_the_root_filesystem_suggests_hot_backup(
    splitmirror_database: PostgresLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    splitmirror_database.create_ledger()
    with pytest.raises(
        PreflightError, match=r'on the root filesystem, which cannot be frozen.*or use mode = "hot-backup"'
    ):
        splitmirror_session.run(splitmirror_database, "freeze")


def test_failed_hot_backup_leaves_no_backup_and_no_slot(
    splitmirror_database: PostgresLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    from splitmirror.phases import Phase

    splitmirror_database.create_ledger()
    with pytest.raises(SessionFailed):
        splitmirror_session.run(splitmirror_database, "hot-backup", Fault(Phase.SPLIT))
    with psycopg.connect(splitmirror_database.url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
        # A backup still running would make this one fail ("a backup is already in progress" is
        # gone in 15, but starting and stopping must work cleanly).
        conn.execute("SELECT pg_backup_start('probe', true)")
        conn.execute("SELECT pg_backup_stop(false)")


def test_logical_key_orders_relations_then_cluster_files_then_wal() -> None:

    assert logical_key(Path("base/5/16384.1")) == (0, 1663, 5, 16384, 0, 1)
    assert logical_key(Path("base/5/16384_vm")) == (0, 1663, 5, 16384, 2, 0)
    assert logical_key(Path("global/1262")) == (0, 1664, 0, 1262, 0, 0)
    assert logical_key(Path("pg_tblspc/16400/PG_15_202209061/5/16401")) == (0, 16400, 5, 16401, 0, 0)
    assert logical_key(Path("PG_VERSION")) == (1, "PG_VERSION")
    assert logical_key(Path("pg_wal/000000010000000000000003")) == (2, "000000010000000000000003")


def test_wal_segments_span_start_file_to_stop_lsn() -> None:
    size = 16 * 1024 * 1024
    assert wal_segments("000000010000000000000002", "0/3000100", size) == [
        "000000010000000000000002",
        "000000010000000000000003",
    ]
    # A stop LSN exactly on a boundary belongs to the segment before it (pg_walfile_name).
    assert wal_segments("000000010000000000000002", "0/3000000", size) == ["000000010000000000000002"]
    assert wal_segments("0000000100000000000000FF", "1/1000010", size)[-1] == "000000010000000100000001"


def test_missing_privileges_name_the_grant(
    splitmirror_database: PostgresLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    from splitmirror.session import Session

    with psycopg.connect(splitmirror_database.url, autocommit=True) as admin:
        admin.execute("CREATE ROLE bkp LOGIN")
    splitmirror_database.url = splitmirror_database.url.replace("postgres@", "bkp@")
    config = splitmirror_session.config(splitmirror_database, "hot-backup")
    _server, problems = Session(config).check()
    assert [p.fix for p in problems] == ["GRANT pg_read_all_settings TO bkp"]
    with psycopg.connect(splitmirror_database.url.replace("bkp@", "postgres@"), autocommit=True) as admin:
        admin.execute("GRANT pg_read_all_settings TO bkp")
    _server, problems = Session(splitmirror_session.config(splitmirror_database, "hot-backup")).check()
    assert [p.fix for p in problems] == [
        "GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO bkp",
        "GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO bkp",
        "ALTER ROLE bkp REPLICATION",
    ]


def test_a_long_transaction_does_not_block_hot_backup(
    splitmirror_database: PostgresLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    splitmirror_database.create_ledger()
    with psycopg.connect(splitmirror_database.url) as long_running:
        long_running.execute("INSERT INTO ledger (writer, seq, payload) VALUES (77, 1, 'x')")
        long_running.execute("LOCK TABLE ledger IN SHARE ROW EXCLUSIVE MODE")  # held, uncommitted
        summary = splitmirror_session.run(splitmirror_database, "hot-backup")
        long_running.rollback()
    assert summary.status == "DONE"
    assert summary.window_ms is not None and summary.window_ms < 10_000


class DropTable:
    """In the window, after DISCOVER listed its files: DROP TABLE, then CHECKPOINT, which is
    when PostgreSQL unlinks a dropped relation's main fork (its other forks go at once)."""

    def __init__(self, url: str, table: str) -> None:
        self.url, self.table = url, table

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.PREPARE:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f"DROP TABLE {self.table}")
                conn.execute("CHECKPOINT")


@pytest.mark.parametrize("contract_mode", ["freeze", "hot-backup"])  # conftest: FREEZE on a loop disk
def test_a_table_dropped_in_the_window_is_left_out_and_the_restore_recovers(
    contract_mode: str, splitmirror_database: PostgresLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """pg_basebackup's behaviour: files that vanish while the server runs are left out; the
    restore's recovery drops the table too.  (Until SPLIT freezes the filesystem the server runs
    in FREEZE as well.)"""
    splitmirror_database.create_ledger()
    with psycopg.connect(splitmirror_database.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE doomed (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO doomed SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
        conn.execute("VACUUM doomed")  # visibility and free-space maps: more files to vanish
        relative = conn.execute(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c WHERE c.relname IN ('doomed', 'doomed_pkey')"
        ).fetchall()
    files = [splitmirror_database.datadir / row[0] for row in relative]
    assert all(path.exists() for path in files)

    summary = splitmirror_session.run(
        splitmirror_database, contract_mode, DropTable(splitmirror_database.url, "doomed")
    )
    assert summary.status == "DONE"
    assert not any(path.exists() for path in files), "the drop really removed the files"
    vanished = set(summary.stats.get("vanished", []))
    assert {str(path) for path in files} <= vanished, vanished

    restore = splitmirror_session.restore(summary, splitmirror_session.workspace.root / "restored")
    ledger_check = splitmirror_database.restored_ledger(restore)
    assert ledger_check.integrity_ok, ledger_check.integrity
    with splitmirror_database.restored_server(restore) as server, psycopg.connect(server.conninfo) as conn:
        assert conn.execute("SELECT to_regclass('doomed')").fetchone() == (None,)


def requested_checkpoints(url: str) -> int:
    """Checkpoints requested since the server started (``CHECKPOINT``, ``pg_backup_start``)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.info.server_version >= 170000:
            row = conn.execute("SELECT num_requested FROM pg_stat_checkpointer").fetchone()
        else:
            row = conn.execute("SELECT checkpoints_req FROM pg_stat_bgwriter").fetchone()
    assert row is not None
    return int(row[0])


class CheckpointsAtQuiesce:
    """Counts the requested checkpoints as QUIESCE starts (the window opens)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.count: int | None = None

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.QUIESCE:
            self.count = requested_checkpoints(self.url)


def test_the_checkpoint_runs_before_the_window_opens(
    splitmirror_database: PostgresLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """``before_window``: a CHECKPOINT at the end of SYNC, so that ``pg_backup_start``'s own,
    inside the window, has only what was dirtied since to write."""
    splitmirror_database.create_ledger()
    before = requested_checkpoints(splitmirror_database.url)
    probe = CheckpointsAtQuiesce(splitmirror_database.url)
    summary = splitmirror_session.run(splitmirror_database, "hot-backup", probe)
    assert summary.status == "DONE"
    assert probe.count is not None and probe.count > before, "no checkpoint before the window"
