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

from collections.abc import Iterator
from pathlib import Path

import pytest
from oracle_servers import require_image, start_server

from splitmirror.testing import Workspace
from splitmirror.testing.containers import versions
from splitmirror_oracle.testing import ContainerOracle, OracleLedgerDatabase


@pytest.fixture
def splitmirror_loop_size() -> int:
    return 6 << 30  # the unpacked database (~2.5 GiB with the PDBs), its archived logs, a restore's copy


@pytest.fixture(params=versions("oracle"))
def server(request: pytest.FixtureRequest) -> Iterator[ContainerOracle]:
    """The image is asked for before the primary disk is made: where it cannot be pulled the
    test skips without a loop device, a filesystem and a container's worth of setup."""
    version = request.param
    require_image(version)
    disk: Path = request.getfixturevalue("splitmirror_primary_disk")
    server = start_server(version, disk / "oradata")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def splitmirror_database(server: ContainerOracle, splitmirror_workspace: Workspace) -> OracleLedgerDatabase:
    return OracleLedgerDatabase(server, splitmirror_workspace.root)
