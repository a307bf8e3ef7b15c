"""MariaDB's (and, where its image can be pulled, MySQL's) rows of the fault matrix
(:class:`FaultMatrix`): the session SIGKILLed while BACKUP STAGE / the locks are held with the
data directory frozen and mid-BACKUP, its connection KILLed from the server side, a full target,
a file lost from the split image, the mirror lost mid-BACKUP, and a table lock held past
max_window."""

from __future__ import annotations

from splitmirror.testing.faults import FaultMatrix


class TestMysqlFaultMatrix(FaultMatrix):
    pass
