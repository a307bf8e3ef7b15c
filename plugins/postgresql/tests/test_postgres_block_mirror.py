"""PostgreSQL on the block mirror and on the change-tracked directory mirror: the server in a
container, its data directory on a loop-device ext4 that is the primary (mount point).  The block
mirror is an image file that is never mounted; every file is read from it by extent.  Restore
drills in both modes: the copy starts in a fresh container, pg_amcheck is clean and every
acknowledged row is there."""

from __future__ import annotations

import os

import pytest

from splitmirror.catalog import SqliteCatalog
from splitmirror.testing import SessionRunner, run_drill
from splitmirror.testing.containers import on_newest
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres

#: Mirrors and secrets do not change with the server's version: the newest of each database only.
pytestmark = on_newest("container_postgres", "postgres")


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_drill_on_the_block_mirror(
    mode: str, container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    disk = container_postgres.datadir.parent
    if not os.path.ismount(disk):
        pytest.skip("the block mirror needs the data directory on a filesystem of its own (root)")
    database = ContainerLedgerDatabase(container_postgres, primary=disk)
    splitmirror_session.mirror_options = {"provider": "block"}
    report = run_drill(database, splitmirror_session, mode)
    print(report)
    assert report.acknowledged > 0 and report.passed, str(report)
    catalog = SqliteCatalog(splitmirror_session.workspace.catalog)
    session = max(catalog.sessions(), key=lambda s: s.id)
    methods = {f.read_method for f in catalog.files(session.id)} - {"generated"}
    # HOT_BACKUP's WAL is collected from the primary after the window, as on any mirror.
    assert methods == ({"extent", "collected"} if mode == "hot-backup" else {"extent"}), methods


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_drill_on_the_tracked_directory_mirror(
    mode: str, container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    """Change tracking on the directory mirror (SPLIT writes the data directory's filesystem
    back for the final pass; FREEZE freezes it, HOT_BACKUP lets pgbench write on): the final
    pass copies the written ranges, and the restore passes pg_amcheck with every acknowledged
    row."""
    disk = container_postgres.datadir.parent
    if not os.path.ismount(disk):
        pytest.skip("change tracking needs the data directory on a filesystem of its own (root)")
    database = ContainerLedgerDatabase(container_postgres, primary=disk)
    splitmirror_session.mirror_options = {"provider": "directory", "tracking": "on"}
    report = run_drill(database, splitmirror_session, mode)
    print(report, report.stats["final_sync"])
    assert report.acknowledged > 0 and report.passed, str(report)
    assert report.stats["final_sync"]["tracking"] == "tracked", report.stats["final_sync"]
