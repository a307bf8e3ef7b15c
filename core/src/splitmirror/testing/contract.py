"""The contract suite: what every database engine must pass, in each mode it declares.

Subclass :class:`DatabaseContract` in your plugin's tests and provide a ``splitmirror_database``
fixture returning your :class:`~splitmirror.testing.LedgerDatabase`; the other fixtures come with
splitmirror's pytest plugin.  Each test runs once per mode the engine declares
(:attr:`DatabaseEngine.modes <splitmirror.engine.DatabaseEngine.modes>`), narrowed by the
class's ``contract_modes``; the other mode's tests skip, saying why.  Sessions run inside the
pytest process (observers are registered in it): an embedded database that one process may open
only once must let the session's connection coexist with the test's, or close its own first.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .. import impl
from ..catalog import SqliteCatalog
from ..errors import ConfigError, SessionFailed
from ..phases import PHASE_ORDER, Mode, Phase
from ..session import Session, logical_order
from .database import LedgerDatabase
from .drill import DrillReport, SessionRunner

WINDOW = [phase for phase in PHASE_ORDER if phase.in_window]
#: The window's phases a fault is injected in: each leaves the engine in a state of its own (the
#: mode entered; the files listed; prepared; the primary frozen for the split; the mode left).
#: CHECK is not among them: it calls no engine method, and a fault after it finds the engine as
#: one after SPLIT does (the core's own thaw-then-release order is proven with SQLite, in
#: tests/test_session.py).
FAULTED = [phase for phase in WINDOW if phase is not Phase.CHECK]


class Fault:
    """Raises inside one phase after its body ran, so the mode really was entered."""

    def __init__(self, phase: Phase) -> None:
        self.phase = phase

    @impl(wrapper=True)
    def splitmirror_phase(self, session: Session, phase: Phase) -> Generator[None, Any, Any]:
        result = yield
        if phase is self.phase:
            raise RuntimeError(f"injected fault in {phase.name}")
        return result


def modes_fixture(narrowing: str) -> Any:
    """The fixture giving a suite's mode: one parameter per mode, skipped (saying why) when the
    suite's class attribute ``narrowing`` leaves it out.  It asks nothing of the database (a
    database fixture may ask for the mode: a FREEZE server on a disk of its own);
    :func:`declared_modes_guard` skips the modes the engine does not declare."""

    @pytest.fixture(params=[m.value for m in Mode])
    def mode(self: object, request: pytest.FixtureRequest) -> str:
        narrowing_to = getattr(self, narrowing)  # mode names or Mode members
        narrowed = None if narrowing_to is None else tuple(Mode(m).value for m in narrowing_to)
        if narrowed is not None and request.param not in narrowed:
            pytest.skip(f"{type(self).__name__} runs {', '.join(narrowed)} only ({narrowing})")
        return str(request.param)

    return mode


def declared_modes_guard(mode_fixture: str) -> Any:
    """An autouse fixture skipping, saying why, a test whose ``mode_fixture`` is a mode the
    engine does not declare (:attr:`~splitmirror.api.DatabaseEngine.modes`)."""

    @pytest.fixture(autouse=True)
    def guard(self: object, request: pytest.FixtureRequest) -> None:
        if mode_fixture not in request.fixturenames:
            return
        mode = request.getfixturevalue(mode_fixture)
        database: LedgerDatabase = request.getfixturevalue("splitmirror_database")
        runner: SessionRunner = request.getfixturevalue("splitmirror_session")
        engine = runner.hooks().engine_for_url(database.url)
        declared = [m.value for m in engine.modes]
        if mode not in declared:
            pytest.skip(f"the {engine.name} engine declares {', '.join(declared)} only (its modes)")

    return guard


class DatabaseContract:
    """Each declared mode, discovery completeness, logical order, the window, unquiesce on failure
    and the restore drill, against the database your ``splitmirror_database`` fixture provides."""

    #: The modes to run, if fewer than the engine declares (``("freeze",)`` or
    #: ``(Mode.FREEZE,)``); None: all.
    contract_modes: tuple[str | Mode, ...] | None = None

    contract_mode = modes_fixture("contract_modes")
    _declared_modes_only = declared_modes_guard("contract_mode")

    def test_an_undeclared_mode_is_refused_before_connecting(
        self, splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner
    ) -> None:
        engine = splitmirror_session.hooks().engine_for_url(splitmirror_database.url)
        undeclared = [m.value for m in Mode if m not in engine.modes]
        if not undeclared:
            pytest.skip(f"the {engine.name} engine declares every mode")
        with pytest.raises(ConfigError, match=r"\[database\] mode: ") as refused:
            splitmirror_session.run(splitmirror_database, undeclared[0])
        assert refused.value.exit_code == 2

    def test_session_records_every_phase_and_the_window(
        self, splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, contract_mode: str
    ) -> None:
        splitmirror_database.create_ledger()
        summary = splitmirror_session.run(splitmirror_database, contract_mode)
        assert (summary.status, summary.mode) == ("DONE", contract_mode)
        assert [p.name for p in summary.phases] == [p.name for p in PHASE_ORDER]
        assert summary.window_ms is not None and summary.window_ms > 0
        in_window = sum(p.duration_ms for p in summary.phases if Phase[p.name].in_window)
        assert summary.window_ms >= in_window * 0.99
        assert summary.files > 0 and summary.archive and Path(summary.archive).exists()

    def test_discovery_is_complete(
        self, splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, contract_mode: str
    ) -> None:
        splitmirror_database.create_ledger()
        summary = splitmirror_session.run(splitmirror_database, contract_mode)
        archived = {Path(f.path).resolve() for f in self._files(splitmirror_session, summary.id) if f.path}
        in_use = {path.resolve() for path in splitmirror_database.files_in_use()}
        assert in_use, "files_in_use() found nothing: the adapter is wrong"
        missing = sorted(str(p) for p in in_use - archived)
        assert not missing, f"files the database uses but the archive lacks: {missing}"

    def test_members_follow_logical_order(
        self, splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, contract_mode: str
    ) -> None:
        splitmirror_database.create_ledger()
        summary = splitmirror_session.run(splitmirror_database, contract_mode)
        files = [f for f in self._files(splitmirror_session, summary.id) if f.read_method != "generated"]
        keys = [logical_order(f.logical_key) for f in files]
        assert keys == sorted(keys), [f.member for f in files]

    @pytest.mark.parametrize("phase", FAULTED, ids=[p.name for p in FAULTED])
    def test_unquiesce_on_failure(
        self,
        phase: Phase,
        splitmirror_database: LedgerDatabase,
        splitmirror_session: SessionRunner,
        contract_mode: str,
    ) -> None:
        splitmirror_database.create_ledger()
        with pytest.raises(SessionFailed) as failure:
            splitmirror_session.run(splitmirror_database, contract_mode, Fault(phase))
        assert failure.value.phase == phase.name
        assert splitmirror_database.accepts_writes(), "the database must take writes right after"
        row = SqliteCatalog(splitmirror_session.workspace.catalog).get(failure.value.session_id)
        assert (row.status, row.failed_phase) == ("FAILED", phase.name)

    def test_restore_drill(self, splitmirror_drill: Any, contract_mode: str) -> None:
        report: DrillReport = splitmirror_drill(contract_mode)
        print(report)  # shown with -s or -rP: rows acknowledged, found, lost
        assert report.acknowledged > 0, "the writers acknowledged nothing before QUIESCE"
        assert report.passed, str(report)

    @staticmethod
    def _files(runner: SessionRunner, session_id: int) -> list[Any]:
        return SqliteCatalog(runner.workspace.catalog).files(session_id)
