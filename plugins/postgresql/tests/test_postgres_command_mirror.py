"""PostgreSQL on the command mirror, driven by docs/examples/command-mirror/'s loop-device recipe:
the server in a container, its data directory on a loop-device ext4; the sync and split
commands copy that device into an image file with ``dd`` (the split inside the window, the
primary frozen), and BACKUP reads every file from the image by extent, never mounted.
Restore drills in both modes: the copy starts in a fresh container, pg_amcheck is clean and
every acknowledged row is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.testing import SessionRunner, run_drill
from splitmirror.testing.containers import on_newest
from splitmirror.testing.mirror_contract import command_recipe
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres

#: Mirrors do not change with the server's version: the newest only.
pytestmark = on_newest("container_postgres", "postgres")

RECIPE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "command-mirror"


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_drill_on_the_command_mirror(
    mode: str, container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    if not os.path.ismount(container_postgres.datadir.parent):
        pytest.skip("the loop-device recipe needs the data directory on a filesystem of its own (root)")
    splitmirror_session.mirror_options = command_recipe(RECIPE, splitmirror_session.workspace, "device")
    report = run_drill(ContainerLedgerDatabase(container_postgres), splitmirror_session, mode)
    print(report)
    assert report.acknowledged > 0 and report.passed, str(report)
