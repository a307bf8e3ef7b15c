"""The contract suite against every MariaDB and MySQL version the images know (MySQL 8.4 where its
image can be pulled): both modes, discovery, logical order, unquiesce on failure in the window,
and restore drills with four writers whose restored copy starts in a fresh container, passes
CHECK TABLE for every table and holds every acknowledged row.

Two rows run on the newest of each flavour only, where the version cannot change the outcome:
the refusal of an undeclared mode, which comes before connecting (this engine declares both, so
it skips), and unquiesce on failure in every window phase.  The other versions fail in QUIESCE
(the locks held, nothing frozen) and in SPLIT (the data filesystem frozen under the server, thawed
before the release): a failure in DISCOVER or PREPARE leaves the server as QUIESCE does, one in
CHECK as every successful session leaves it for UNQUIESCE, one in UNQUIESCE after the release; the
engine sends the same statements to a server in the same state."""

from __future__ import annotations

import pytest

from splitmirror.phases import Phase
from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import newest_usable, on_newest, versions
from splitmirror.testing.contract import FAULTED, DatabaseContract
from splitmirror_mysql.testing import MysqlLedgerDatabase

FLAVOURS = ("mariadb", "mysql")
#: The unquiesce rows: every faulted window phase (contract.FAULTED) on the newest of each flavour,
#: QUIESCE and SPLIT on the others.
unquiesce_cases = pytest.mark.parametrize(
    ("server", "phase"),
    [
        pytest.param((name, version), phase, id=f"{name}-{version}-{phase.name}")
        for name in FLAVOURS
        for version in versions(name)
        for phase in (FAULTED if version == newest_usable(name) else [Phase.QUIESCE, Phase.SPLIT])
    ],
    indirect=["server"],
)


class TestMysqlContract(DatabaseContract):
    @on_newest("server", *FLAVOURS)
    def test_an_undeclared_mode_is_refused_before_connecting(
        self, splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
    ) -> None:
        super().test_an_undeclared_mode_is_refused_before_connecting(
            splitmirror_database, splitmirror_session
        )

    @unquiesce_cases
    def test_unquiesce_on_failure(
        self,
        phase: Phase,
        splitmirror_database: MysqlLedgerDatabase,
        splitmirror_session: SessionRunner,
        contract_mode: str,
    ) -> None:
        super().test_unquiesce_on_failure(phase, splitmirror_database, splitmirror_session, contract_mode)
