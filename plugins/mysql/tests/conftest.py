"""Fixtures for the MySQL/MariaDB plugin's tests: real servers in containers.

``server`` starts each MariaDB and MySQL version the images know (one that has no image here
skips with the reason) with its data directory on ``splitmirror_primary_disk``
(a loop-device ext4 as root: both modes freeze it for InnoDB's atomic split), root's password
in an option file of the workspace.  Containers are removed in teardown, pass or fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.testing import Workspace
from splitmirror.testing.containers import Unavailable, versions
from splitmirror.testing.secrets import sentinel_password
from splitmirror_mysql.testing import ContainerMysql, MysqlLedgerDatabase, write_option_file

#: (image family, version) the suite runs against: every version the images know; each skips with
#: its reason when unavailable.
SERVERS = [(name, version) for name in ("mariadb", "mysql") for version in versions(name)]


@pytest.fixture
def splitmirror_loop_size() -> int:
    return 512 << 20  # ibdata1, a 96 MiB redo log, binary logs


@pytest.fixture(params=SERVERS, ids=[f"{name}-{version}" for name, version in SERVERS])
def server(
    request: pytest.FixtureRequest, splitmirror_primary_disk: Path, splitmirror_workspace: Workspace
) -> Iterator[ContainerMysql]:
    if os.geteuid() != 0:
        pytest.skip(
            "container MySQL/MariaDB tests need root: splitmirror reads files the container's user owns"
        )
    name, version = request.param
    try:
        server = ContainerMysql(name, version, splitmirror_primary_disk / "mysql", sentinel_password())
    except Unavailable as reason:
        pytest.skip(str(reason))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def option_file(server: ContainerMysql, splitmirror_workspace: Workspace) -> Path:
    return write_option_file(splitmirror_workspace.root / "my.cnf", server.password)


@pytest.fixture
def splitmirror_database(server: ContainerMysql, option_file: Path) -> MysqlLedgerDatabase:
    return MysqlLedgerDatabase(server, option_file)
