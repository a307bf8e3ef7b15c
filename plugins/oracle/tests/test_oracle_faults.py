"""Oracle's rows of the fault matrix (:class:`FaultMatrix`), where its image can be pulled.

Oracle is the database the emergency release was made for: backup mode and SUSPEND outlive the
session that entered them.  So every row here that kills the session (SIGKILL in QUIESCE, SPLIT,
UNQUIESCE, mid-BACKUP) or its connection (``ALTER SYSTEM KILL SESSION`` during SPLIT) proves the
release: afterwards no datafile may be in backup mode and the instance must be ACTIVE
(:meth:`OracleLedgerDatabase.leftovers`).  The last test shows what happens without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror.testing import SessionRunner
from splitmirror.testing.faults import FaultMatrix, run_killed
from splitmirror.watchdog import DISABLE_ENV
from splitmirror_oracle.testing import OracleLedgerDatabase


class TestOracleFaultMatrix(FaultMatrix):
    pass


@pytest.mark.parametrize("mode", ["hot-backup", "freeze"])
def test_without_the_watchdog_a_killed_session_leaves_backup_mode_behind(
    mode: str,
    splitmirror_database: OracleLedgerDatabase,
    splitmirror_session: SessionRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same SIGKILL in SPLIT with the watchdog switched off: the datafiles stay in backup
    mode (and in FREEZE the instance stays suspended) — what the emergency release ends in the
    matrix above.  Released here by the engine's own emergency release, as the watchdog would."""
    from splitmirror_oracle.engine import OracleEngine, OracleOptions

    splitmirror_database.create_ledger()
    config = splitmirror_session.config(splitmirror_database, mode)
    monkeypatch.setenv(DISABLE_ENV, "1")
    run_killed(config.source, "SPLIT", tmp_path)
    try:
        left = splitmirror_database.leftovers()
        assert any("backup mode" in thing for thing in left), left
        if mode == "freeze":
            assert any("SUSPENDED" in thing for thing in left), left
    finally:
        options = OracleOptions.model_validate(splitmirror_database.options)
        OracleEngine.emergency_release(splitmirror_database.url, options, {"engine": "oracle"})
    assert splitmirror_database.leftovers() == []
    assert splitmirror_database.accepts_writes()
