"""Fixtures for the PostgreSQL plugin's tests: a real cluster from the host's binaries.

``host_postgres`` skips, with the reason, where such a cluster cannot run (no server binaries, not
root, no postgres user); its data directory is inside the test's splitmirror workspace primary,
so sessions mirror it, and the server is stopped in teardown, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from splitmirror.testing import Workspace
from splitmirror_postgresql.testing import HostLedgerDatabase, HostPostgres, unavailable


@pytest.fixture
def splitmirror_loop_size() -> int:
    return 512 << 20  # a fresh cluster with its first WAL segments needs more than 64 MiB


@pytest.fixture
def host_postgres(splitmirror_workspace: Workspace, request: pytest.FixtureRequest) -> Iterator[HostPostgres]:
    """A started PostgreSQL cluster with its data directory at ``<workspace>/primary/pgdata``
    (socket and log in ``<workspace>/pg``, outside what the mirror copies).  For the contract's
    FREEZE runs the data directory lives on a loop-device filesystem of its own instead, the
    layout FREEZE needs: SPLIT freezes it, and nothing of splitmirror's is on it."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    parent = splitmirror_workspace.primary
    if "contract_mode" in request.fixturenames and request.getfixturevalue("contract_mode") == "freeze":
        parent = request.getfixturevalue("splitmirror_loop_filesystem")
    server = HostPostgres(splitmirror_workspace.root / "pg")
    try:
        server.init(parent / "pgdata").start("max_wal_size=96MB", "min_wal_size=32MB")
        yield server
    finally:
        server.stop()


@pytest.fixture
def splitmirror_database(host_postgres: HostPostgres) -> HostLedgerDatabase:
    return HostLedgerDatabase(host_postgres)
