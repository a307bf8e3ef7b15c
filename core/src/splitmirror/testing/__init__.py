"""Test support for splitmirror and for database plugins: fixtures, restore drills, and the
contract suite every database engine must pass.

Published as a pytest plugin (entry point ``pytest11``), so a plugin's tests get the fixtures by
installing splitmirror; the contract suite is a class to subclass::

    # conftest.py of a plugin
    import pytest
    from splitmirror.testing import LedgerDatabase

    @pytest.fixture
    def splitmirror_database(splitmirror_workspace) -> LedgerDatabase:
        return MyLedgerDatabase(splitmirror_workspace.primary)

    # test_contract.py
    from splitmirror.testing.contract import DatabaseContract

    class TestMyDatabase(DatabaseContract):
        pass

See ``docs/writing-a-plugin.md``.
"""

from __future__ import annotations

from .database import LedgerDatabase, RestoredLedger, SqliteLedgerDatabase
from .drill import DrillReport, SessionRunner, Workspace, run_drill

__all__ = [
    "DrillReport",
    "LedgerDatabase",
    "RestoredLedger",
    "SessionRunner",
    "SqliteLedgerDatabase",
    "Workspace",
    "run_drill",
]
