"""MariaDB/MySQL on the reflink mirror: refused, in either mode, before the database is touched.
InnoDB writes in the background under either mode's locks (page flushing, purge, the redo
log), so its files must be split at one instant: SPLIT freezes the data directory, and clones
(one file at a time) cannot be taken on a frozen filesystem.  The btrfs mirror is the clone-like
split that serves InnoDB (test_mysql_btrfs_mirror.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror.errors import PreflightError
from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import on_newest
from splitmirror_mysql.testing import ContainerMysql, MysqlLedgerDatabase

#: Mirrors do not change with the server's version: the newest of each database only.
pytestmark = on_newest("server", "mariadb", "mysql")


@pytest.fixture
def splitmirror_primary_disk(splitmirror_reflink_filesystem: Path) -> Path:
    """The data directory's home: an xfs that clones (it replaces the usual ext4)."""
    return splitmirror_reflink_filesystem


def test_the_reflink_mirror_is_refused_even_in_hot_backup(
    server: ContainerMysql,
    option_file: Path,
    splitmirror_primary_disk: Path,
    splitmirror_session: SessionRunner,
) -> None:
    database = MysqlLedgerDatabase(server, option_file, primary=splitmirror_primary_disk / "mysql")
    database.create_ledger()
    splitmirror_session.mirror_options = {"provider": "reflink"}
    splitmirror_session.mirror_path = splitmirror_primary_disk / "splits"
    with pytest.raises(PreflightError, match=r"frozen at the split, and the reflink mirror splits by clones"):
        # FREEZE asks for the same freeze (the engine's freeze_paths is one list for both modes).
        splitmirror_session.run(database, "hot-backup")
    assert database.accepts_writes()
