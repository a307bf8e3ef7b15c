"""The contract suite against Oracle Database Free, where its image can be pulled: both modes,
discovery against the datafiles on disk, logical order (datafiles, archived logs, backup control
file), the database released on a failure in every window phase, and restore drills whose copy
is recovered (RECOVER ... USING BACKUP CONTROLFILE, OPEN RESETLOGS) in a fresh container by the
printed steps, holds every acknowledged row and passes ANALYZE and DBMS_DICTIONARY_CHECK."""

from __future__ import annotations

from splitmirror.testing.contract import DatabaseContract


class TestOracleContract(DatabaseContract):
    pass
