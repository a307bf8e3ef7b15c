"""Fixtures for the Oracle plugin's tests.

``server`` starts Oracle Database Free (``gvenzl/oracle-free``, or ``$SPLITMIRROR_IMAGE_ORACLE_23``)
with ``/opt/oracle/oradata`` on ``splitmirror_primary_disk`` (a loop-device ext4 as root), in
ARCHIVELOG mode, the splitmirror account created by the plugin's own script.  Where the image
cannot be pulled (no registry here) it skips with that reason and the override variable; the
container is removed in teardown, pass or fail.

The tests that run everywhere (``test_oracle_statements.py``, ``test_oracle_restore_files.py``,
...) need no server: they say in their names what they drive instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.testing import Workspace
from splitmirror.testing.containers import Unavailable, versions
from splitmirror.testing.secrets import sentinel_password
from splitmirror_oracle.testing import ContainerOracle, OracleLedgerDatabase


@pytest.fixture
def splitmirror_loop_size() -> int:
    return 6 << 30  # the unpacked database (~2.5 GiB with the PDBs), its archived logs, a restore's copy


def start_server(version: str, datadir: Path, *, archivelog: bool = True) -> ContainerOracle:
    """A started :class:`ContainerOracle`, or a skip saying why there is none here."""
    if os.geteuid() != 0:
        pytest.skip("container Oracle tests need root: splitmirror reads files the container's user owns")
    try:
        server = ContainerOracle(version, datadir, sentinel_password(), archivelog=archivelog)
    except Unavailable as reason:
        pytest.skip(str(reason))
    return server.start()


@pytest.fixture(params=versions("oracle"))
def server(request: pytest.FixtureRequest, splitmirror_primary_disk: Path) -> Iterator[ContainerOracle]:
    server = start_server(request.param, splitmirror_primary_disk / "oradata")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def splitmirror_database(server: ContainerOracle, splitmirror_workspace: Workspace) -> OracleLedgerDatabase:
    return OracleLedgerDatabase(server, splitmirror_workspace.root)
