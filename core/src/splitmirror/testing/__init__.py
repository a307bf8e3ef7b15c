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

The submodules: :mod:`.contract` and :mod:`.faults` (the suites), :mod:`.ledger` (the writer
processes' loop), :mod:`.containers` (servers in containers), :mod:`.steps` (running the steps
a restore printed), :mod:`.secrets`, :mod:`.docs` (walkthroughs read out of Markdown, for the tests
that run them as written).  See ``docs/writing-a-plugin.md``.

The names below are imported when first used, not with the package: a ledger writer process
imports :mod:`.ledger` alone, and must not pay for the session engine and Docker's client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .database import (
        LedgerDatabase,
        RestoredLedger,
        RestoreResult,
        SqliteLedgerDatabase,
        committed_within,
    )
    from .drill import DrillReport, SessionRunner, Workspace, run_drill

#: Each name of ``__all__`` and the submodule that defines it.
_WHERE = {
    "DrillReport": "drill",
    "LedgerDatabase": "database",
    "RestoredLedger": "database",
    "RestoreResult": "database",
    "SessionRunner": "drill",
    "SqliteLedgerDatabase": "database",
    "Workspace": "drill",
    "run_drill": "drill",
    "committed_within": "database",
}

__all__ = [
    "DrillReport",
    "LedgerDatabase",
    "RestoreResult",
    "RestoredLedger",
    "SessionRunner",
    "SqliteLedgerDatabase",
    "Workspace",
    "committed_within",
    "run_drill",
]


def __getattr__(name: str) -> Any:
    """Import a name of ``__all__`` from its submodule on first use (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
