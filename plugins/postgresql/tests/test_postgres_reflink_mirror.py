"""PostgreSQL on the reflink mirror: the server in a container, its data directory on a
loop-device xfs made with reflink; the split clones every file DISCOVER listed.  HOT_BACKUP
repairs a copy made file by file (WAL from the start LSN), so its restore drill must pass;
FREEZE needs the data directory frozen for one instant, which clones cannot give, so it is
refused before the database is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror.errors import PreflightError
from splitmirror.testing import SessionRunner, run_drill
from splitmirror.testing.containers import on_newest
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres

#: Mirrors do not change with the server's version: the newest only.
pytestmark = on_newest("container_postgres", "postgres")


@pytest.fixture
def splitmirror_primary_disk(splitmirror_reflink_filesystem: Path) -> Path:
    """The data directory's home: an xfs that clones (it replaces the usual ext4)."""
    return splitmirror_reflink_filesystem


@pytest.fixture
def reflink_session(
    container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> SessionRunner:
    splitmirror_session.mirror_options = {"provider": "reflink"}
    splitmirror_session.mirror_path = container_postgres.datadir.parent / "splits"
    return splitmirror_session


def test_a_hot_backup_drill_on_the_reflink_mirror(
    container_postgres: ContainerPostgres, reflink_session: SessionRunner
) -> None:
    report = run_drill(ContainerLedgerDatabase(container_postgres), reflink_session, "hot-backup")
    print(report)
    assert report.acknowledged > 0 and report.passed, str(report)
    assert report.stats["final_sync"]["files_created"] > 900, "every file of the cluster was cloned"
    assert list((reflink_session.mirror_path or Path()).iterdir()) == [], "CLEANUP deleted the clones"


def test_freeze_on_the_reflink_mirror_is_refused_before_the_database_is_touched(
    container_postgres: ContainerPostgres, reflink_session: SessionRunner
) -> None:
    database = ContainerLedgerDatabase(container_postgres)
    with pytest.raises(
        PreflightError, match=r"frozen at the split, and the reflink mirror splits by clones"
    ) as refused:
        reflink_session.run(database, "freeze")
    assert 'use mode = "hot-backup"' in str(refused.value) and "the btrfs provider" in str(refused.value)
