"""MariaDB/MySQL on the command mirror, driven by docs/examples/command-mirror/'s loop-device
recipe: the server in a container, its data directory on a loop-device ext4; the split command
copies that device into an image file with ``dd`` inside the window (the primary frozen: InnoDB
needs one instant) and mounts the image read-only, and BACKUP reads each file there.  Restore
drills in both modes: the copy starts in a fresh container, CHECK TABLE is clean and every
acknowledged row is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.testing import SessionRunner, run_drill
from splitmirror.testing.containers import on_newest
from splitmirror.testing.mirror_contract import command_recipe
from splitmirror_mysql.testing import ContainerMysql, MysqlLedgerDatabase

#: Mirrors do not change with the server's version, nor with the flavour here (the recipe copies
#: the whole device twice a session, the slowest drill of the suite): the newest MariaDB only;
#: MySQL's InnoDB is proven on the btrfs and block mirrors' drills.
pytestmark = on_newest("server", "mariadb", pairs=True)

RECIPE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "command-mirror"


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_drill_on_the_command_mirror(
    mode: str,
    server: ContainerMysql,
    option_file: Path,
    splitmirror_primary_disk: Path,
    splitmirror_session: SessionRunner,
) -> None:
    if not os.path.ismount(splitmirror_primary_disk):
        pytest.skip("the loop-device recipe needs the data directory on a filesystem of its own (root)")
    database = MysqlLedgerDatabase(server, option_file, primary=splitmirror_primary_disk)
    splitmirror_session.mirror_options = command_recipe(RECIPE, splitmirror_session.workspace, "mountpoint")
    report = run_drill(database, splitmirror_session, mode)
    print(report)
    assert report.acknowledged > 0 and report.passed, str(report)
