"""The session engine: the eleven phases in their fixed order (:mod:`.phases`), and the window's guarantees.

Read :meth:`Session.run` first; it is the whole contract in twenty lines:

* every phase runs through :meth:`Session._phase`, which times it (monotonic clock), records it
  and tells observers, via the ``splitmirror_phase`` hook so wrappers can time or trace it;
* :meth:`Session._window` brackets QUIESCE..UNQUIESCE with ``try/finally``: on *any* way out
  (an exception in a phase, a plugin error, Ctrl-C, SIGTERM, ``max_window``) it thaws every frozen
  filesystem and releases the database before doing anything else.  While it is in the window,
  catalog writes and ``phase_finished`` notifications wait until the window has closed;
* the catalog row is ``DONE`` only after the archive is complete, fsynced and its manifest
  written; otherwise ``FAILED`` with the phase and the error's first line (in CLEANUP, the archive stays).

The phase bodies follow, one method each.  INIT's is :mod:`.opening`, which builds the
session's :class:`~splitmirror.opening.Parts` that every later phase uses (its checks are
:mod:`.preflight`'s, which also serves ``splitmirror check``); BACKUP's archive is written by
:mod:`.archive.assembly`.  Off-host, the split is handed over instead (:mod:`.handover`), and a
backup host runs BACKUP and CLEANUP (:mod:`.worker`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import impl, preflight
from .archive.assembly import ArchiveAssembly, logical_order, manifest_header
from .blocked import BlockedTime
from .budget import Budget
from .catalog import Catalog, FileRecord, PhaseRecord, SessionSummary
from .catalog.base import DONE, FAILED, STARTED, utc_now
from .config import Config
from .engine import DatabaseEngine, DatabaseFile, PreflightProblem, ServerInfo, UnquiesceResult
from .errors import PluginError, PreflightError, SessionFailed, SplitmirrorError, WindowExceeded, first_line
from .filemap import FileMap
from .fsfreeze import Freezer
from .handover import hand_over
from .hooks import Hooks
from .hostname import host
from .mirror.base import MirrorProvider, SyncStats
from .mirror.ownership import MirrorClaim
from .opening import Opening, Parts
from .phases import PHASE_ORDER, Mode, Phase
from .progress import Progress
from .watchdog import Watchdog
from .window import SignalGuard

#: Seconds between two progress reports to observers (a terminal redraws about as often).
PROGRESS_INTERVAL = 0.1


@dataclasses.dataclass
class _Pending:
    """A phase that ended inside the window, reported once the window has closed."""

    phase: Phase
    record: PhaseRecord
    duration_s: float
    error: BaseException | None


class Session:
    """One backup session of one configuration.  ``run()`` once; it returns the summary or raises
    :class:`~splitmirror.errors.SessionFailed` (or a :class:`~splitmirror.errors.UserError` when
    the session could not even start)."""

    def __init__(
        self,
        config: Config,
        hooks: Hooks | None = None,
        *,
        take_over_mirror: bool = False,
        split_only: bool = False,
    ) -> None:
        self.config = config
        #: INIT .. UNQUIESCE here, BACKUP and CLEANUP on a backup host (:mod:`.handover`).
        self.off_host = split_only or config.session.backup == "off-host"
        self.hooks = hooks or Hooks()
        self.mode: Mode = config.database.mode
        self.phase = Phase.INIT  # the phase running, or the last one that ran
        self.files: list[DatabaseFile] = []  # DISCOVER's, in logical order
        self.metadata: dict[str, Any] = {}  # PREPARE's, for the manifest
        self.unquiesced = UnquiesceResult()  # UNQUIESCE's: label, redo range, window files
        self.window_ms: float | None = None
        self.stats: dict[str, Any] = {}
        self.members: list[FileRecord] = []  # BACKUP's, in archive order
        self._claim = MirrorClaim(config, take_over=take_over_mirror)
        self._opening = Opening(config, self.hooks, self._claim, off_host=self.off_host)  # INIT, what it took
        self._filemap = FileMap()
        self._freezer = Freezer()
        self._blocked = BlockedTime(self._freezer, engine_holds=self.mode is Mode.FREEZE)
        self._budget = Budget.from_config(config)  # what SYNC and BACKUP may take from the server
        self._guard = SignalGuard(config.session.max_window)
        self._watchdog = Watchdog({})
        self._window_start: float | None = None
        self._quiesced = False
        self._pending: list[_Pending] | None = None
        #: The last progress report a phase held back (phase, done, total), told when it ends.
        self._unsent: tuple[Phase, int, int | None] | None = None
        self._body_ran: Phase | None = None

    @property
    def parts(self) -> Parts:
        """The session's parts; they exist once INIT has inserted the catalog row."""
        if self._opening.parts is None:
            raise RuntimeError("the session's parts are built by INIT, which has not got that far")
        return self._opening.parts

    # What observers read (hookspecs: "its id, config, mode, engine"); None until INIT has them.
    @property
    def id(self) -> int | None:
        return None if self._opening.parts is None else self._opening.parts.id

    @property
    def catalog(self) -> Catalog | None:
        return None if self._opening.parts is None else self._opening.parts.catalog

    @property
    def engine(self) -> DatabaseEngine | None:
        return None if self._opening.chosen is None else self._opening.chosen.engine

    @property
    def mirror(self) -> MirrorProvider | None:
        return None if self._opening.chosen is None else self._opening.chosen.mirror

    def check(self) -> tuple[ServerInfo, list[PreflightProblem]]:
        """``splitmirror check`` (:func:`splitmirror.preflight.check`) for this configuration."""
        checked = preflight.check(self.config, self.hooks, take_over_mirror=self._claim.take_over)
        return checked.server, checked.problems

    # -- the contract ---------------------------------------------------------------------

    def run(self) -> SessionSummary:
        failure: SessionFailed | None = None
        self.hooks.take_late_failures()  # an earlier session's are not this one's
        with self._guard:
            try:
                self._phase(Phase.INIT)
                self._phase(Phase.MAP)
                self._phase(Phase.SYNC)
                self._window()
                if self.off_host:
                    self._hand_over()
                else:
                    self._phase(Phase.BACKUP)
                    self._phase(Phase.CLEANUP)
            except BaseException as error:
                with self._guard.deferred():  # a second Ctrl-C must not cut the bookkeeping short
                    self._fail(error)
                if self._opening.parts is None:
                    raise
                failure = SessionFailed(self._opening.parts.id, self.phase.name, first_line(error))
                failure.__cause__ = error
            finally:
                with self._guard.deferred():
                    self._close()
            if failure is None:
                self._guard.raise_pending()
        summary = self._finished()  # observers hear of a FAILED session as of a DONE one
        late = self.hooks.take_late_failures()  # strict mode: raised once the outcome is settled
        if failure is not None:
            raise failure
        if late:
            raise late[0]
        return summary

    def _window(self) -> None:
        """QUIESCE .. UNQUIESCE, with thaw and release guaranteed on every way out (and, for
        the ways out that skip ``finally``, by the watchdog started in INIT)."""
        self._pending = []
        try:
            self._phase(Phase.QUIESCE)
            self._phase(Phase.DISCOVER)
            self._phase(Phase.PREPARE)
            self._phase(Phase.SPLIT)
            self._phase(Phase.CHECK)
            self._phase(Phase.UNQUIESCE)
        finally:
            self._guard.disarm()
            if self._quiesced or self._freezer.frozen:
                self._release()
            self._report_pending()
        self._guard.raise_pending()

    def _release(self) -> None:
        """Failure path inside the window: thaw, then let the database go.  Nothing else first."""
        with self._guard.deferred():
            self._freezer.thaw_all()
            if self._quiesced:
                released = False
                try:
                    self.parts.engine.abort()
                    released = True
                finally:
                    self._blocked.released()
                    self._quiesced = False
                    self._close_window()
                    # A release that raised is tried again by the watchdog, in its own process,
                    # once the session has recorded its failure.
                    self._watchdog.tell(**{"released" if released else "release_failed": True})

    @property
    def blocked_ms(self) -> float | None:
        """How long the writers waited on the session (:mod:`.blocked`); None before QUIESCE."""
        return None if self._window_start is None else self._blocked.ms()

    def _close_window(self) -> None:
        self._guard.disarm()  # the limit is for the window, not for what follows it
        if self._window_start is not None and self.window_ms is None:
            self.window_ms = (time.monotonic() - self._window_start) * 1000

    # -- phases ---------------------------------------------------------------------------

    def _phase(self, phase: Phase) -> None:
        self.phase = phase
        self._watchdog.tell(phase=phase.name)
        if phase.in_window and phase is not Phase.QUIESCE:
            self._check_window()
        started_at, started = utc_now(), time.monotonic()
        error: BaseException | None = None
        try:
            self.hooks.phase_started(self, phase)
            self._body_ran = None
            self.hooks.run_phase(self, phase)
            if self._body_ran is not phase:
                raise PluginError(
                    f"a plugin's splitmirror_phase hook returned a value and skipped the {phase.name} "
                    f"phase; observers must use wrapper=True or return None"
                )
        except BaseException as caught:
            error = caught
            raise
        finally:
            duration = time.monotonic() - started
            said = None if error is None else first_line(error)
            record = PhaseRecord(phase.name, started_at, duration * 1000, said, host())
            if self._pending is not None and phase.in_window:
                self._pending.append(_Pending(phase, record, duration, error))
            else:
                self._report(phase, record, duration, error)

    def _report(
        self, phase: Phase, record: PhaseRecord, duration: float, error: BaseException | None
    ) -> None:
        if self._opening.parts is not None:
            self._opening.parts.catalog.record_phase(self._opening.parts.id, record)
        self.hooks.phase_finished(self, phase, duration, error)  # an observer's failure is logged

    def _report_pending(self) -> None:
        pending, self._pending = self._pending or [], None
        with self._guard.deferred():  # a Ctrl-C now must not lose the window's phase records
            for item in pending:
                self._report(item.phase, item.record, item.duration_s, item.error)

    def run_phase_body(self, phase: Phase) -> None:
        """Called by the core's ``splitmirror_phase`` implementation."""
        self._body_ran = phase
        _BODIES[phase](self)
        if self._unsent is not None and self._unsent[0] is phase:  # the phase's last word
            (_phase, done, total), self._unsent = self._unsent, None
            self.hooks.progress(self, phase, done, total)

    def _check_window(self) -> None:
        if self._window_start is None or self.window_ms is not None:
            return
        if time.monotonic() - self._window_start > self.config.session.max_window:
            raise WindowExceeded(f"the window passed max_window ({self.config.session.max_window:g}s)")

    def progress(self, phase: Phase) -> Progress:
        """A progress callback for ``phase`` that also enforces the window limit.  Observers
        hear at most every :data:`PROGRESS_INTERVAL`, when ``done`` reaches a known ``total``
        and a phase's last report: thousands come, some inside the window."""
        last = -PROGRESS_INTERVAL

        def report(done: int, total: int | None) -> None:
            nonlocal last
            if phase.in_window:
                self._check_window()
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL or (total is not None and done >= total):
                last, self._unsent = now, None
                self.hooks.progress(self, phase, done, total)
            else:
                self._unsent = (phase, done, total)

        return report

    # -- phase bodies ---------------------------------------------------------------------

    def _init(self) -> None:
        parts = self._opening.open()
        self._filemap.with_extents = parts.mirror.supports_extent_reads
        self._watchdog = Watchdog.of_session(parts, self.config)
        self._watchdog.start()
        self._freezer.listener = lambda event, mount: self._watchdog.tell(**{event: str(mount)})

    def _map(self) -> None:
        mapped = self._filemap.map(self.parts.engine.layout())
        self.stats["map"] = {"files": mapped}

    def _sync(self) -> None:
        self._claim.claim()  # whose copy the mirror holds, recorded before its first byte
        progress = self.progress(Phase.SYNC)
        stats = self._budget.run(self.parts.mirror.bulk_sync, progress)
        self.parts.engine.before_window(self.mode)
        last = self._budget.run(self.parts.mirror.catch_up, progress)  # its delta at full rate
        if last is not None:
            stats.add(last)
            # Again: what was dirtied during that pass is written outside the window, not by
            # QUIESCE's own checkpoint inside it (the final pass copies it either way).
            self.parts.engine.before_window(self.mode)
        self.stats["bulk_sync"] = dataclasses.asdict(stats)

    def _quiesce(self) -> None:
        engine = self.parts.engine
        self._window_start = time.monotonic()
        self._guard.arm()
        self._watchdog.tell(state=engine.emergency_state())
        self._quiesced = True  # before the call: a half-entered mode is released by abort()
        self._blocked.quiescing()
        engine.quiesce(self.mode)
        self._blocked.quiesced(engine.holds_writers(self.mode))
        self._watchdog.tell(state=engine.emergency_state())

    def _discover(self) -> None:
        files = self.parts.engine.discover()
        self.parts.mirror.forget_resolutions()
        problems = preflight.outside_primary(self.config, self.parts.mirror, [f.path for f in files])
        if problems:
            raise PreflightError(preflight.sentences(problems))
        self.files = sorted(files, key=lambda f: logical_order(f.logical_key))

    def _prepare(self) -> None:
        self.metadata = dict(self.parts.engine.prepare())

    def _split(self) -> None:
        parts = self.parts
        # The engine's filesystems for the mode, and the mirror's (a block mirror's primary).
        frozen = parts.mirror.freezes_for(parts.engine.freeze_paths(self.mode))
        # Every one written back first, the writers still free (none is frozen yet: one freeze
        # would otherwise hold its writers through the next one's write-back); an interrupt
        # meanwhile stops the session before anything is frozen.
        writing_back = self._write_back(frozen)
        self._guard.raise_pending()
        with self._guard.deferred():  # a signal mid-FIFREEZE is raised once the mount is recorded
            for path in frozen:
                self._freezer.freeze(path)
        self._guard.raise_pending()
        writing_back += self._write_back(parts.mirror.write_back_paths())  # the writers keep going
        self.stats["write_back_ms"] = round(writing_back * 1000, 1)
        parts.mirror.skip_in_final_pass(parts.engine.collected_paths(self.mode))
        stats = parts.mirror.final_sync([f.path for f in self.files], self.progress(Phase.SPLIT))
        parts.mirror.split()
        self.stats["final_sync"] = dataclasses.asdict(stats)

    def _write_back(self, paths: Sequence[Path]) -> float:
        """syncfs on each of ``paths`` not frozen yet (:meth:`Freezer.write_back`); the seconds it took."""
        started = time.monotonic()
        for path in paths:
            self._freezer.write_back(path)
        return time.monotonic() - started

    def _check(self) -> None:
        result = self._filemap.check(f.path for f in self.files)
        gone = set(self._filemap.vanished)
        self._leave_out_vanished(lambda f: f.path in gone)
        missing = [f.path for f in self.files if f.path in gone]
        if missing:
            raise SplitmirrorError(
                f"{missing[0]} vanished during the window ({len(missing)} file(s) in all), although the "
                "database said it uses it; the image would be incomplete, so the session stops"
            )
        self.stats["check"] = dataclasses.asdict(result)
        if self.parts.mirror.supports_extent_reads:
            self.parts.mirror.checked(self._filemap.extents, self._filemap.entries)
        with self._guard.deferred():
            errors = self._freezer.thaw_all()
        if errors:
            raise errors[0]
        self._guard.raise_pending()

    def _unquiesce(self) -> None:
        self.unquiesced = self.parts.engine.unquiesce()
        self._blocked.released()
        self._watchdog.tell(released=True)
        self._quiesced = False
        self._close_window()

    def _leave_out_vanished(self, vanished: Callable[[DatabaseFile], bool]) -> None:
        """Drop the files the engine said may vanish and that did; remember which (stats)."""
        gone = [f for f in self.files if f.may_vanish and vanished(f)]
        if gone:
            self.files = [f for f in self.files if f not in gone]
            names = self.stats.setdefault("vanished", [])
            names.extend(str(f.path) for f in gone)

    def _backup(self) -> None:
        parts = self.parts
        assert parts.target is not None, "an off-host session hands its split over instead"
        self._leave_out_vanished(lambda f: not parts.mirror.exists_in_split(f.path))
        header = manifest_header(parts, self.config)
        assembly = ArchiveAssembly(
            parts.target, parts.mirror, header, self.progress(Phase.BACKUP), self.stats
        )
        self.members = assembly.members
        fields = assembly.write_under(self._budget, self.files, self.unquiesced, self._window_figures())
        parts.catalog.add_files(parts.id, self.members)
        parts.catalog.update_session(parts.id, **fields)

    def _hand_over(self) -> None:
        """Off-host, BACKUP's part here: the split recorded in the catalog for a backup host."""
        self.phase = Phase.BACKUP  # what a failure is recorded as
        self._leave_out_vanished(lambda f: not self.parts.mirror.exists_in_split(f.path))
        hand_over(self.parts, self.config, self.files, self.unquiesced, self._window_figures(), self.stats)

    def _window_figures(self) -> dict[str, Any]:
        return {"window_ms": self.window_ms, "blocked_ms": self.blocked_ms, "metadata": self.metadata}

    def _cleanup(self) -> None:
        self.parts.mirror.reestablish()
        self.parts.catalog.finish_session(self.parts.id, status=DONE, finished_at=utc_now())

    # -- endings --------------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        """What a failed session owes: the archive discarded (unless complete), the mirror back, the row."""
        if self._quiesced or self._freezer.frozen:  # only if the window's own finally was skipped
            self._release()
        parts = self._opening.parts
        if parts is None:
            return  # no row yet: the error itself is the whole story
        keep = self.phase is Phase.CLEANUP  # the archive is complete: only the mirror failed
        discard = () if keep or parts.target is None else (parts.target.discard,)
        for undo in (*discard, self._reestablish):
            with contextlib.suppress(Exception):  # the original error is the one to report
                undo()
        parts.catalog.update_session(
            parts.id, window_ms=self.window_ms, blocked_ms=self.blocked_ms, stats=self.stats
        )
        parts.catalog.finish_session(
            parts.id,
            status=FAILED,
            finished_at=utc_now(),
            failed_phase=self.phase.name,
            error=first_line(error),
        )

    def _reestablish(self) -> None:
        if self.phase.value >= Phase.SPLIT.value:
            self.parts.mirror.reestablish()

    def _close(self) -> None:
        self._freezer.thaw_all()  # before anything that may write to the primary (SQLite's close)
        self._opening.close()  # the engine and the mirror
        self._watchdog.finish()  # the outcome is recorded: nothing left for it to do
        self._claim.release()
        self._opening.unlock()

    def _finished(self) -> SessionSummary:
        summary = self.parts.catalog.get(self.parts.id)
        if summary.status != STARTED:  # a split handed over ends on the backup host
            self.hooks.session_finished(self, summary)  # an observer's failure is logged
        return summary

    def summary(self) -> SessionSummary | None:
        """The catalog's view of this session (after it ended, successfully or not)."""
        parts = self._opening.parts
        return None if parts is None else parts.catalog.get(parts.id)


_BODIES: dict[Phase, Callable[[Session], None]] = {
    Phase.INIT: Session._init,
    Phase.MAP: Session._map,
    Phase.SYNC: Session._sync,
    Phase.QUIESCE: Session._quiesce,
    Phase.DISCOVER: Session._discover,
    Phase.PREPARE: Session._prepare,
    Phase.SPLIT: Session._split,
    Phase.CHECK: Session._check,
    Phase.UNQUIESCE: Session._unquiesce,
    Phase.BACKUP: Session._backup,
    Phase.CLEANUP: Session._cleanup,
}
assert tuple(_BODIES) == PHASE_ORDER


@impl(trylast=True)
def splitmirror_phase(session: Session, phase: Phase) -> object:
    """The core's phase runner: observers wrap this hook to time or trace phases."""
    session.run_phase_body(phase)
    return True


__all__ = ["Parts", "Session", "SessionSummary", "SyncStats", "logical_order", "utc_now"]
