"""PostgreSQL on the btrfs mirror: the server in a container, its data directory in a subvolume
of a loop-device btrfs that is the primary; the split is a read-only snapshot of it, taken in
both modes without freezing anything (the snapshot is the instant).  Restore drills in both
modes: the copy starts in a fresh container, pg_amcheck is clean and every acknowledged row is
there, and no snapshot is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror.testing import SessionRunner, run_drill
from splitmirror.testing.containers import on_newest
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres

#: Mirrors do not change with the server's version: the newest only.
pytestmark = on_newest("container_postgres", "postgres")


@pytest.fixture
def splitmirror_primary_disk(splitmirror_btrfs_subvolume: Path) -> Path:
    """The data directory's home: a btrfs subvolume (it replaces the usual ext4)."""
    return splitmirror_btrfs_subvolume


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_drill_on_the_btrfs_mirror(
    mode: str, container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    subvolume = container_postgres.datadir.parent
    database = ContainerLedgerDatabase(container_postgres, primary=subvolume)
    splitmirror_session.mirror_options = {"provider": "btrfs"}
    splitmirror_session.mirror_path = subvolume.parent / "snapshots"
    report = run_drill(database, splitmirror_session, mode)
    print(report)
    assert report.acknowledged > 0 and report.passed, str(report)
    assert list(splitmirror_session.mirror_path.iterdir()) == [], "CLEANUP deleted the snapshot"
