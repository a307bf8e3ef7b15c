"""Fixtures for the PostgreSQL plugin's tests: a real cluster from the host's binaries.

``host_postgres`` skips, with the reason, where such a cluster cannot run (no server binaries, not
root, no postgres user); its data directory is inside the test's splitmirror workspace primary,
so sessions mirror it, and the server is stopped in teardown, pass or fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.testing import Workspace
from splitmirror.testing.containers import Unavailable, leftovers, versions
from splitmirror.testing.secrets import sentinel_password
from splitmirror_postgresql.container import ContainerPostgres, write_pgpass
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


#: Versions the plugin supports (every PostgreSQL the images know); those without an image here
#: skip with the reason.
VERSIONS = versions("postgres")


@pytest.fixture(params=VERSIONS)
def container_postgres(
    request: pytest.FixtureRequest,
    splitmirror_primary_disk: Path,
    splitmirror_workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ContainerPostgres]:
    if os.geteuid() != 0:
        pytest.skip(
            "container PostgreSQL tests need root: splitmirror reads files the container's postgres owns"
        )
    password = sentinel_password()  # scanned for by test_postgres_secrets
    try:
        server = ContainerPostgres(str(request.param), splitmirror_primary_disk / "pgdata", password)
    except Unavailable as reason:
        pytest.skip(str(reason))
    monkeypatch.setenv("PGPASSFILE", str(write_pgpass(splitmirror_workspace.root / "pgpass", password)))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    try:
        server.start("max_wal_size=96MB", "min_wal_size=32MB")
        yield server
    finally:
        server.stop()
    assert not leftovers(), "a container outlived its test"
