"""MariaDB's and MySQL's rows of the fault matrix
(:class:`FaultMatrix`): the session SIGKILLed while BACKUP STAGE / the locks are held with the
data directory frozen and mid-BACKUP, its connection KILLed from the server side, a full target,
a file lost from the split image, the mirror lost mid-BACKUP, and a table lock held past
max_window.

The matrix runs on the newest MariaDB and the newest MySQL only: on every version it would
take CI past its time; the contract suite, the drills and the bad-input cases run on all."""

from __future__ import annotations

from splitmirror.testing.containers import on_newest
from splitmirror.testing.faults import FaultMatrix

pytestmark = on_newest("server", "mariadb", "mysql")


class TestMysqlFaultMatrix(FaultMatrix):
    pass
