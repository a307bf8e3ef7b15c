"""Fixtures for the PostgreSQL plugin's tests: a real cluster from the host's binaries.

``host_postgres`` skips, with the reason, where such a cluster cannot run (no server binaries, not
root, no postgres user); its data directory is inside the test's splitmirror workspace primary,
so sessions mirror it, and the server is stopped in teardown, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from splitmirror.testing import Workspace
from splitmirror_postgresql.testing import HostPostgres, PostgresLedgerDatabase, unavailable


@pytest.fixture
def host_postgres(splitmirror_workspace: Workspace) -> Iterator[HostPostgres]:
    """A started PostgreSQL cluster with its data directory at ``<workspace>/primary/pgdata``
    (socket and log in ``<workspace>/pg``, outside what the mirror copies)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = HostPostgres(splitmirror_workspace.root / "pg")
    try:
        server.init(splitmirror_workspace.primary / "pgdata").start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def splitmirror_database(host_postgres: HostPostgres) -> PostgresLedgerDatabase:
    return PostgresLedgerDatabase(host_postgres)
