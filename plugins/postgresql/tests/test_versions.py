"""What differs between the PostgreSQL versions, on real servers in containers: the backup API
and its label, the directories and the left-out files of each version's base backup, and 17's
WAL summaries and incremental backups beside a split-mirror backup.

pg_basebackup of the same server is the yardstick: a restored copy has every directory its
output has, and none of the files of its ``excludeFiles``.  17+ keeps WAL summaries (``summarize_wal``) in
``pg_wal/summaries``, which a base backup carries empty; without it a restored copy starts only
after logging that it made it.  A split-mirror copy is always full: it neither needs nor
disturbs an incremental chain, and a ``backup_manifest`` of another backup stays out of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import versions
from splitmirror_postgresql import restored_paths
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres

#: The versions with WAL summaries and incremental backups (the test of them runs on these only).
SINCE_17 = [version for version in versions("postgres") if int(version) >= 17]
#: Where pg_basebackup writes inside the server's container (outside the data directory).
FULL, INCREMENTAL = "/tmp/full", "/tmp/incremental"


def in_container(server: ContainerPostgres, *argv: str) -> str:
    """Run ``argv`` as postgres in the server's container (its socket trusts that user)."""
    assert server.container is not None
    code, output = server.container.exec(list(argv), user="postgres")
    assert code == 0, f"{' '.join(argv)}: {output}"
    return output


def basebackup(server: ContainerPostgres, directory: str, *options: str) -> set[str]:
    """pg_basebackup of ``server`` into ``directory`` in its container; its directories."""
    in_container(server, "pg_basebackup", "-D", directory, "-X", "fetch", "-c", "fast", *options)
    listing = in_container(server, "find", directory, "-mindepth", "1", "-type", "d", "-printf", "%P\\n")
    return set(listing.splitlines())


def major(server: ContainerPostgres) -> int:
    return int(server.version)


def summarize_wal(server: ContainerPostgres) -> None:
    """``summarize_wal = on`` by ALTER SYSTEM, so it travels in the restored postgresql.auto.conf,
    and a first summary written."""
    with psycopg.connect(server.url, password=server.password, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET summarize_wal = on")
        conn.execute("SELECT pg_reload_conf()")
        assert wait_for_summaries(conn), "the live server wrote no WAL summary"


def wait_for_summaries(conn: psycopg.Connection[Any], timeout: float = 30.0) -> bool:
    """Switch WAL until the summarizer has written a summary (it summarizes whole segments)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn.execute("CREATE TABLE IF NOT EXISTS summarized AS SELECT 1 AS x")
        conn.execute("SELECT pg_switch_wal()")
        row = conn.execute("SELECT count(*) FROM pg_available_wal_summaries()").fetchone()
        if row is not None and row[0] > 0:
            return True
        time.sleep(0.5)
    return False


def test_the_backup_api_and_label_are_15s_and_a_restore_has_what_pg_basebackup_makes(
    container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    """On every version: the functions the engine and the documented GRANTs name exist with those
    signatures; the label carries the fields the engine reads, its start LSN being the redo
    range's; the restore has every directory of the same server's pg_basebackup output
    (``pg_wal/summaries`` from 17 on), and none of the files of pg_basebackup's ``excludeFiles``, here put
    into the live data directory as a server started from a base backup, and one that was
    writing its temporaries, has them."""
    server = container_postgres
    with psycopg.connect(server.url, password=server.password, autocommit=True) as conn:
        for function in ("pg_backup_start(text, boolean)", "pg_backup_stop(boolean)"):
            row = conn.execute("SELECT %s::regprocedure::text", (function,)).fetchone()
            assert row == (function.replace(" ", ""),)  # an error names what is missing
    expected = basebackup(server, FULL)
    assert ("pg_wal/summaries" in expected) is (major(server) >= 17)
    in_container(server, "cp", f"{FULL}/backup_manifest", f"{server.data}/backup_manifest")
    planted = ["postgresql.auto.conf.tmp", "current_logfiles.tmp", "global/pg_internal.init.4242"]
    owner = (server.datadir / "PG_VERSION").stat()
    for name in planted:
        (server.datadir / name).write_text("a file the server was writing\n")
        os.chown(server.datadir / name, owner.st_uid, owner.st_gid)
    database = ContainerLedgerDatabase(server)
    database.create_ledger()
    summary = splitmirror_session.run(database, "hot-backup")
    restore = splitmirror_session.restore(summary, splitmirror_session.workspace.root / "restored")
    datadir = restored_paths.data_directory(restore.directory, restore.manifest)
    names = {str((restore.directory / member).relative_to(datadir)) for member in restore.restored}
    assert not {"backup_manifest", *planted} & names, sorted(names)
    assert "global/pg_internal.init" not in names
    restored = {str(path.relative_to(datadir)) for path in datadir.rglob("*") if path.is_dir()}
    assert expected <= restored, sorted(expected - restored)
    label = dict(
        line.split(": ", 1) for line in (datadir / "backup_label").read_text().splitlines() if ": " in line
    )
    assert {"START WAL LOCATION", "CHECKPOINT LOCATION", "BACKUP METHOD", "START TIMELINE", "LABEL"} <= set(
        label
    )
    assert label["BACKUP METHOD"] == "streamed" and label["BACKUP FROM"] == "primary"
    assert label["START WAL LOCATION"].split()[0] == summary.redo_range["start_lsn"]
    assert "INCREMENTAL FROM LSN" not in label


@pytest.mark.parametrize("container_postgres", SINCE_17, indirect=True)
@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_cluster_summarizing_wal_backs_up_restores_and_keeps_its_incremental_chain(
    mode: str, container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    """17+ with ``summarize_wal = on``, a full pg_basebackup taken before the session: the
    session leaves the chain intact (an incremental backup on top of the full one, and their
    pg_combinebackup, succeed after it); the copy, started by the printed steps, finds
    ``pg_wal/summaries`` in place (no "creating missing WAL directory" in its log), passes
    amcheck and summarizes WAL itself."""
    server = container_postgres
    summarize_wal(server)
    basebackup(server, FULL)
    database = ContainerLedgerDatabase(server)
    database.create_ledger()
    summary = splitmirror_session.run(database, mode)
    basebackup(server, INCREMENTAL, f"--incremental={FULL}/backup_manifest")
    in_container(server, "pg_combinebackup", FULL, INCREMENTAL, "-o", "/tmp/combined")
    restore = splitmirror_session.restore(summary, splitmirror_session.workspace.root / "restored")
    assert not [m for m in restore.restored if Path(m).name.startswith("INCREMENTAL.")]
    with (
        database.restored_server(restore) as copy,
        psycopg.connect(copy.conninfo, password=server.password, autocommit=True) as conn,
    ):
        assert conn.execute("SHOW summarize_wal").fetchone() == ("on",)
        assert copy.amcheck()[0]
        assert wait_for_summaries(conn), "the restored copy wrote no WAL summary"
        assert copy.container is not None
        log = copy.container.logs(lines=400)
        assert "creating missing WAL directory" not in log, log
