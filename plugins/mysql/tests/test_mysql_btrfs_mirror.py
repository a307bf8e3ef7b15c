"""MariaDB/MySQL on the btrfs mirror: the server in a container, its data directory in a
subvolume of a loop-device btrfs that is the primary.  InnoDB needs an atomic image in both
modes; the read-only snapshot is that instant, so nothing is frozen.  Restore drills in both
modes: the copy starts in a fresh container, CHECK TABLE is clean, every acknowledged row is
there, and no snapshot is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror.testing import SessionRunner, run_drill
from splitmirror.testing.containers import on_newest
from splitmirror_mysql.testing import ContainerMysql, MysqlLedgerDatabase

#: Mirrors do not change with the server's version: the newest of each database only.
pytestmark = on_newest("server", "mariadb", "mysql")


@pytest.fixture
def splitmirror_primary_disk(splitmirror_btrfs_subvolume: Path) -> Path:
    """The data directory's home: a btrfs subvolume (it replaces the usual ext4)."""
    return splitmirror_btrfs_subvolume


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_drill_on_the_btrfs_mirror(
    mode: str,
    server: ContainerMysql,
    option_file: Path,
    splitmirror_primary_disk: Path,
    splitmirror_session: SessionRunner,
) -> None:
    database = MysqlLedgerDatabase(server, option_file, primary=splitmirror_primary_disk)
    splitmirror_session.mirror_options = {"provider": "btrfs"}
    splitmirror_session.mirror_path = splitmirror_primary_disk.parent / "snapshots"
    report = run_drill(database, splitmirror_session, mode)
    print(report)
    assert report.acknowledged > 0 and report.passed, str(report)
    assert list(splitmirror_session.mirror_path.iterdir()) == [], "CLEANUP deleted the snapshot"
