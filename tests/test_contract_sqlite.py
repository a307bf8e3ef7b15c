"""The built-in SQLite engine passes the whole contract suite, both modes, 4 concurrent writers."""

from __future__ import annotations

import pytest

from splitmirror.testing import LedgerDatabase, SqliteLedgerDatabase, Workspace
from splitmirror.testing.contract import DatabaseContract


@pytest.fixture
def splitmirror_database(splitmirror_workspace: Workspace) -> LedgerDatabase:
    return SqliteLedgerDatabase(splitmirror_workspace.primary)


class TestSqliteContract(DatabaseContract):
    pass
