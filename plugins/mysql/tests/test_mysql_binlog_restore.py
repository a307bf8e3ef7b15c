"""Restored copies of servers that kept a binary log start by the printed steps, both ways: the
``docker run`` line, and the chown and bare server line (run in a container of the image that
stands in for the database host, with the restore at its own path).  The binary log's name as
a DBA sets it: relative (``binlog``), absolute in the data directory (its index then names
absolute paths), and in a directory of its own under the primary.

Each drill runs ledger writers through a FREEZE session (prepared transactions are in the image:
without the binary log the copy refuses to start) and checks every acknowledged row, on the newest
MariaDB and MySQL here (MySQL's binary log is on by default, with GTIDs); the flavours, places and
routes are combined pairwise (:data:`PAIRWISE`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.testing import SessionRunner, Workspace, run_drill
from splitmirror.testing.containers import Unavailable, newest_usable
from splitmirror.testing.secrets import sentinel_password
from splitmirror_mysql.testing import ContainerMysql, MysqlLedgerDatabase, write_option_file

#: --log-bin as the server ran with it → the directory of its own it needs (under the primary).
LOG_BINS = {
    "relative": ("binlog", None),
    "absolute": ("/var/lib/mysql/binlog", None),
    "own-directory": ("/var/log/mysql-binlogs/binlog", "binlogs"),
}


#: (image family, binary log's place, route the copy starts by), pairwise: every flavour with
#: every place and every route, and every place with every route, in six drills rather than the
#: twelve of the whole product (each takes a server's start and a drill).  One server of each
#: flavour, the newest usable here: the binary log's place is splitmirror's side, not the version's.
PAIRWISE = [
    ("mariadb", "relative", "host"),
    ("mariadb", "absolute", "container"),
    ("mariadb", "own-directory", "container"),
    ("mysql", "relative", "container"),
    ("mysql", "absolute", "host"),
    ("mysql", "own-directory", "host"),
]
CASES = [(name, newest_usable(name), log_bin, route) for name, log_bin, route in PAIRWISE]


@pytest.fixture(
    params=CASES, ids=[f"{name}-{version}-{log_bin}-{route}" for name, version, log_bin, route in CASES]
)
def logged(
    request: pytest.FixtureRequest, splitmirror_primary_disk: Path, splitmirror_workspace: Workspace
) -> Iterator[tuple[ContainerMysql, Path, str]]:
    """The server with the binary log named as the parameter says; (server, option file, route)."""
    if os.geteuid() != 0:
        pytest.skip(
            "container MySQL/MariaDB tests need root: splitmirror reads files the container's user owns"
        )
    name, version, variant, route = request.param
    log_bin, own = LOG_BINS[variant]
    mounts = {}
    if own:
        host = splitmirror_primary_disk / own
        host.mkdir()
        os.chown(host, 999, 999)  # the image's mysql user; its entrypoint hands over only the data directory
        mounts[host] = os.path.dirname(log_bin)
    try:
        server = ContainerMysql(
            name,
            version,
            splitmirror_primary_disk / "mysql",
            sentinel_password(),
            binlog=log_bin,
            mounts=mounts,
        )
    except Unavailable as reason:
        pytest.skip(str(reason))
    try:
        yield server.start(), write_option_file(splitmirror_workspace.root / "my.cnf", server.password), route
    finally:
        server.stop()


def test_a_copy_starts_by_the_printed_steps(
    logged: tuple[ContainerMysql, Path, str],
    splitmirror_primary_disk: Path,
    splitmirror_session: SessionRunner,
) -> None:
    server, option_file, route = logged
    database = MysqlLedgerDatabase(server, option_file, primary=splitmirror_primary_disk, route=route)
    report = run_drill(database, splitmirror_session, "freeze")
    assert report.acknowledged > 0 and report.passed, str(report)
