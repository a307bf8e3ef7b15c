"""The PostgreSQL engine against the contract suite, on a real PostgreSQL 15 (host binaries).

Both modes, drills included.  For FREEZE the cluster's data directory is on a loop-device
filesystem of its own (see ``host_postgres`` in conftest.py), so SPLIT can freeze it.
"""

from __future__ import annotations

from splitmirror.testing.contract import DatabaseContract


class TestPostgresContract(DatabaseContract):
    pass
