"""PostgreSQL's rows of the fault matrix (:class:`FaultMatrix`), with the data directory on a
loop-device ext4 that FREEZE freezes: the session SIGKILLed in the window and mid-BACKUP, its
connection terminated from the server side, a full target, a file lost from the split image,
the mirror lost mid-BACKUP.  No client lock makes PostgreSQL's quiesce wait (CHECKPOINT and
pg_backup_start take none), so that row skips, saying so.

The matrix runs on the newest PostgreSQL only: on every version it would take CI past its
time; the contract suite, the drills and the bad-input cases run on all."""

from __future__ import annotations

import os

import pytest

from splitmirror.testing import LedgerDatabase
from splitmirror.testing.containers import on_newest
from splitmirror.testing.faults import FaultMatrix
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres


@pytest.fixture
def splitmirror_database(container_postgres: ContainerPostgres) -> LedgerDatabase:
    if not os.path.ismount(container_postgres.datadir.parent):
        pytest.skip("FREEZE needs the data directory on a filesystem of its own (root)")
    return ContainerLedgerDatabase(container_postgres)


pytestmark = on_newest("container_postgres", "postgres")


class TestPostgresFaultMatrix(FaultMatrix):
    pass
