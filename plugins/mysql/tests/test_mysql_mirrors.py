"""MariaDB/MySQL on the block mirror and on the change-tracked directory mirror: the server in a
container, its data directory on a loop-device ext4 that is the primary.  Restore drills in both
modes (each freezes the data directory's filesystem at SPLIT: InnoDB needs an atomic image): the
copy starts in a fresh container, CHECK TABLE is clean, every acknowledged row is there, and the
final pass copied only what was written since the last pre-copy pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.testing import SessionRunner, run_drill
from splitmirror.testing.containers import newest_usable
from splitmirror.tracking import unavailable
from splitmirror_mysql.testing import ContainerMysql, MysqlLedgerDatabase

MIRRORS = {
    "block": {"provider": "block", "tracking": "on"},
    "directory-tracked": {"provider": "directory", "tracking": "on"},
}
#: Mode, mirror and flavour (the newest of each: mirrors do not change with the server's
#: version), pairwise: every two of them together once, in four drills rather than eight.
PAIRWISE = [
    ("freeze", "block", "mariadb"),
    ("freeze", "directory-tracked", "mysql"),
    ("hot-backup", "block", "mysql"),
    ("hot-backup", "directory-tracked", "mariadb"),
]


@pytest.mark.parametrize(
    ("mode", "mirror", "server"),
    [(mode, mirror, (name, newest_usable(name))) for mode, mirror, name in PAIRWISE],
    ids=[f"{mode}-{mirror}-{name}-{newest_usable(name)}" for mode, mirror, name in PAIRWISE],
    indirect=["server"],
)
def test_a_drill_on_a_tracked_mirror(
    mode: str,
    mirror: str,
    server: ContainerMysql,
    option_file: Path,
    splitmirror_primary_disk: Path,
    splitmirror_session: SessionRunner,
) -> None:
    reason = unavailable()
    if not os.path.ismount(splitmirror_primary_disk) or reason:
        pytest.skip(reason or "tracked mirrors need the data directory on a filesystem of its own (root)")
    database = MysqlLedgerDatabase(server, option_file, primary=splitmirror_primary_disk)
    splitmirror_session.mirror_options = MIRRORS[mirror]
    report = run_drill(database, splitmirror_session, mode)
    print(report, report.stats["final_sync"])
    assert report.acknowledged > 0 and report.passed, str(report)
    assert report.stats["final_sync"]["tracking"] == "tracked", report.stats["final_sync"]
