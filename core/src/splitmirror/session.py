"""The session engine: the eleven phases in DESIGN.md's order, and the window's guarantees.

Read :meth:`Session.run` first; it is the whole contract in twenty lines:

* every phase runs through :meth:`Session._phase`, which times it (monotonic clock), records it
  and tells observers, via the ``splitmirror_phase`` hook so wrappers can time or trace it;
* :meth:`Session._window` brackets QUIESCE..UNQUIESCE with ``try/finally``: on *any* way out
  (an exception in a phase, a plugin error, Ctrl-C, SIGTERM, ``max_window``) it thaws every frozen
  filesystem and releases the database before doing anything else.  While it is in the window,
  catalog writes and ``phase_finished`` notifications wait until the window has closed;
* the catalog row is ``DONE`` only after the archive is complete, fsynced and its manifest
  written; otherwise it is ``FAILED`` with the phase and the first line of the error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__, impl, placement
from .archive.pax import ArchiveWriter, MemberRecord
from .catalog import Catalog, FileRecord, PhaseRecord, SessionSummary, default_catalog_path
from .catalog.base import DONE, FAILED, STARTED
from .catalog.sqlite import SqliteCatalog
from .config import Config, expand_target_path, plugin_options, redact_url
from .engine import DatabaseEngine, DatabaseFile, PreflightProblem, ServerInfo, UnquiesceResult
from .errors import (
    PluginError,
    PreflightError,
    SessionFailed,
    SplitmirrorError,
    WindowExceeded,
    first_line,
)
from .filemap import FileMap
from .fsfreeze import Freezer
from .hooks import Hooks
from .lock import SessionLock
from .mirror.base import MirrorProvider, SplitStat, SyncStats
from .mirror.ownership import MirrorClaim
from .phases import PHASE_ORDER, Mode, Phase
from .progress import Progress
from .targets.base import Target
from .watchdog import Watchdog
from .window import SignalGuard

MANIFEST_FORMAT = 1

log = logging.getLogger("splitmirror.session")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _stat(path: Path) -> SplitStat:
    info = os.stat(path)
    return SplitStat(info.st_size, info.st_mode, info.st_mtime, info.st_uid, info.st_gid)


def logical_order(key: tuple[int | str, ...]) -> tuple[tuple[int, int | str], ...]:
    """Sort key for plugin keys that mix numbers and names without comparing int to str."""
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in key)


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

    def __init__(self, config: Config, hooks: Hooks | None = None, *, take_over_mirror: bool = False) -> None:
        self.config = config
        self.hooks = hooks or Hooks()
        self.mode: Mode = config.database.mode
        self.id: int | None = None
        self.phase: Phase | None = None
        self.catalog: Catalog | None = None
        self.engine: DatabaseEngine | None = None
        self.mirror: MirrorProvider | None = None
        self.target: Target | None = None
        self.server: ServerInfo | None = None
        self.files: list[DatabaseFile] = []
        self.metadata: dict[str, Any] = {}
        self.unquiesced: UnquiesceResult | None = None
        self.window_ms: float | None = None
        self.stats: dict[str, Any] = {}
        self.members: list[FileRecord] = []
        self._filemap = FileMap()
        self._freezer = Freezer()
        self._lock: SessionLock | None = None
        self._claim = MirrorClaim(config, take_over=take_over_mirror)
        self._guard = SignalGuard(config.session.max_window)
        self._watchdog = Watchdog({})
        self._window_start: float | None = None
        self._quiesced = False
        self._pending: list[_Pending] | None = None
        self._body_ran: Phase | None = None
        self._target_cls: type[Target] | None = None
        self.catalog_path = Path()

    # -- the contract ---------------------------------------------------------------------

    def run(self) -> SessionSummary:
        failure: SessionFailed | None = None
        with self._guard:
            try:
                self._phase(Phase.INIT)
                self._phase(Phase.MAP)
                self._phase(Phase.SYNC)
                self._window()
                self._phase(Phase.BACKUP)
                self._phase(Phase.CLEANUP)
            except BaseException as error:
                with self._guard.deferred():  # a second Ctrl-C must not cut the bookkeeping short
                    self._fail(error)
                if self.id is None:
                    raise
                assert self.phase is not None
                failure = SessionFailed(self.id, self.phase.name, first_line(error))
                failure.__cause__ = error
            finally:
                with self._guard.deferred():
                    self._close()
            if failure is None:
                self._guard.raise_pending()
        summary = self._finished()  # observers hear of a FAILED session as of a DONE one
        if failure is not None:
            raise failure
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
            if self._quiesced and self.engine is not None:
                try:
                    self.engine.abort()
                finally:
                    self._quiesced = False
                    self._close_window()
                    self._watchdog.tell(released=True)

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
            record = PhaseRecord(
                phase.name, started_at, duration * 1000, None if error is None else first_line(error)
            )
            if self._pending is not None and phase.in_window:
                self._pending.append(_Pending(phase, record, duration, error))
            else:
                self._report(phase, record, duration, error)

    def _report(
        self, phase: Phase, record: PhaseRecord, duration: float, error: BaseException | None
    ) -> None:
        if self.catalog is not None and self.id is not None:
            self.catalog.record_phase(self.id, record)
        try:
            self.hooks.phase_finished(self, phase, duration, error)
        except Exception:  # a notification failing (mail server down) must not fail the backup
            log.exception("an observer failed on phase_finished(%s)", phase.name)

    def _report_pending(self) -> None:
        pending, self._pending = self._pending or [], None
        for item in pending:
            self._report(item.phase, item.record, item.duration_s, item.error)

    def run_phase_body(self, phase: Phase) -> None:
        """Called by the core's ``splitmirror_phase`` implementation."""
        self._body_ran = phase
        _BODIES[phase](self)

    def _check_window(self) -> None:
        if self._window_start is None or self.window_ms is not None:
            return
        if time.monotonic() - self._window_start > self.config.session.max_window:
            raise WindowExceeded(f"the window passed max_window ({self.config.session.max_window:g}s)")

    def progress(self, phase: Phase) -> Progress:
        """A progress callback for ``phase`` that also enforces the window limit."""

        def report(done: int, total: int | None) -> None:
            if phase.in_window:
                self._check_window()
            self.hooks.progress(self, phase, done, total)

        return report

    # -- phase bodies ---------------------------------------------------------------------

    def _resolve(self) -> None:
        """Pick the plugins the config names and validate their options; no I/O."""
        cfg = self.config
        engine_cls = self.hooks.engine_for_url(cfg.database.url)
        mirror_cls = self.hooks.mirrors.get(cfg.mirror.provider)
        engine_options = plugin_options(cfg, "database", engine_cls.options_model)
        mirror_options = plugin_options(cfg, "mirror", mirror_cls.options_model)
        self._target_cls = self.hooks.target_for_path(cfg.target.path, cfg.target.kind)
        self.catalog_path = default_catalog_path(cfg.session.catalog)
        self.engine = engine_cls(cfg.database.url, engine_options)
        self.mirror = mirror_cls(cfg.mirror.primary, cfg.mirror.mirror, mirror_options)
        self._filemap.with_extents = mirror_cls.supports_extent_reads

    @property
    def _target_class(self) -> type[Target]:
        assert self._target_cls is not None, "_resolve() first"
        return self._target_cls

    def _preflight(self) -> list[PreflightProblem]:
        """Connect and ask everyone what would stop the session; changes nothing."""
        assert self.engine is not None and self.mirror is not None
        self.server = self.engine.connect()
        probe = self._target_class(self._target_path(0), self.config.target.block_size)
        return [
            *self.engine.preflight(self.mode),
            *self.mirror.preflight(),
            *self._outside_primary(self.engine.layout()),
            *probe.preflight(),
            *placement.preflight_problems(
                self.config,
                self.catalog_path,
                probe.name == "file",
                self.engine.freeze_paths(self.mode),
                self.mirror,
            ),
            *self._claim.problems(),
        ]

    def _outside_primary(self, paths: list[Path]) -> list[PreflightProblem]:
        """Database files the mirror cannot carry; checked again after DISCOVER."""
        assert self.mirror is not None
        problems: list[PreflightProblem] = []
        if not self.config.mirror.primary.is_dir():
            return problems  # the mirror provider already says the primary is missing
        outside = []
        for path in paths:
            try:
                self.mirror.relative(path)
            except ValueError:
                outside.append(path)
        if outside:
            first, real = outside[0], outside[0].resolve()
            where = f"{real} (reached as {first})" if real != first else str(first)
            many = f"{len(outside)} files outside the primary, such as" if len(outside) > 1 else ""
            problems.append(
                PreflightProblem(
                    f"the database uses {many or 'a file outside the primary:'} {where}, "
                    f"while [mirror] primary is {self.config.mirror.primary}",
                    "set [mirror] primary to a directory holding every database file "
                    "(for a server: its data directory, WAL and tablespaces)",
                )
            )
        return problems

    def check(self) -> tuple[ServerInfo, list[PreflightProblem]]:
        """``splitmirror check``: INIT's checks without the lock, the catalog or any change."""
        try:
            self._resolve()
            problems = self._preflight()
            assert self.server is not None
            return self.server, problems
        finally:
            self._close()

    def _init(self) -> None:
        self._resolve()
        cfg = self.config
        assert self.mirror is not None
        misplaced = placement.place_problems(
            cfg, self.catalog_path, self._target_class.name == "file", self.mirror
        )
        if misplaced:  # before the locks: their directory is among what may be misplaced
            raise PreflightError(_sentences(misplaced))
        self._lock = SessionLock(self.catalog_path.parent / "locks", str(cfg.source), cfg.session.name)
        self._lock.acquire()
        self._claim.lock()  # a mirror another session is using: refused before asking anyone anything
        problems = self._preflight()
        if problems:
            raise PreflightError(_sentences(problems))
        assert self.engine is not None and self.server is not None
        self.catalog = SqliteCatalog(self.catalog_path)
        self._fail_abandoned(self.catalog)
        self.id = self.catalog.start_session(
            name=cfg.session.name,
            mode=self.mode.value,
            database=self.engine.name,
            database_url=redact_url(cfg.database.url),
            config=str(cfg.source),
            started_at=utc_now(),
        )
        self.catalog.update_session(self.id, server_version=self.server.version)
        self.target = self._target_class(self._target_path(self.id), cfg.target.block_size)
        problems = self.target.preflight()  # the real name, now that the session has its id
        if self.target.name == "file":
            problems += placement.archive_problems(cfg, Path(self.target.path))
        if problems:
            raise PreflightError(_sentences(problems))
        self._start_watchdog()

    def _fail_abandoned(self, catalog: Catalog) -> None:
        """Rows of this configuration still ``STARTED`` belong to sessions that are gone: we hold
        the configuration's lock, so none of them runs.  Their process ended without recording
        an outcome and no watchdog did it for them (the machine went down, or the watchdog was
        killed too); say so rather than show them running forever."""
        for stale in catalog.sessions(status=STARTED):
            if stale.config == str(self.config.source):
                names = [phase.name for phase in PHASE_ORDER]
                done = [names.index(p.name) for p in stale.phases if p.name in names]
                # Window phases are recorded when the window closes: this is the earliest it was in.
                at = names[min(max(done, default=-1) + 1, len(names) - 1)]
                catalog.finish_session(
                    stale.id,
                    status=FAILED,
                    finished_at=utc_now(),
                    failed_phase=at,
                    error="its process ended without recording an outcome (killed, crashed, or the "
                    f"machine went down); found by session started at {utc_now()}",
                )

    def _target_path(self, session_id: int) -> str:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return expand_target_path(
            self.config.target.path, session=session_id, name=self.config.session.name, timestamp=stamp
        )

    def _map(self) -> None:
        assert self.engine is not None
        mapped = self._filemap.map(self.engine.layout())
        self.stats["map"] = {"files": mapped}

    def _sync(self) -> None:
        assert self.mirror is not None
        self._claim.claim()  # whose copy the mirror holds, recorded before its first byte
        stats = self.mirror.bulk_sync(self.progress(Phase.SYNC))
        self.stats["bulk_sync"] = dataclasses.asdict(stats)

    def _start_watchdog(self) -> None:
        assert self.engine is not None and self.target is not None
        self._watchdog = Watchdog(
            {
                "session": self.id,
                "catalog": str(self.catalog_path),
                "config": str(self.config.source),
                "max_window": self.config.session.max_window,
                "leftovers": self.target.leftovers(),
            }
        )
        self._watchdog.start()
        self._freezer.listener = lambda event, mount: self._watchdog.tell(**{event: str(mount)})

    def _quiesce(self) -> None:
        assert self.engine is not None
        self._window_start = time.monotonic()
        self._guard.arm()
        self._watchdog.tell(state=self.engine.emergency_state())
        self._quiesced = True  # before the call: a half-entered mode is released by abort()
        self.engine.quiesce(self.mode)
        self._watchdog.tell(state=self.engine.emergency_state())

    def _discover(self) -> None:
        assert self.engine is not None and self.mirror is not None
        files = self.engine.discover()
        problems = self._outside_primary([f.path for f in files])
        if problems:
            raise PreflightError(_sentences(problems))
        self.files = sorted(files, key=lambda f: logical_order(f.logical_key))

    def _prepare(self) -> None:
        assert self.engine is not None
        self.metadata = dict(self.engine.prepare())

    def _freeze_paths(self) -> list[Path]:
        """What SPLIT freezes: the engine's paths for the mode, and the mirror provider's (a
        block mirror's primary, in every mode)."""
        assert self.engine is not None and self.mirror is not None
        return [*self.engine.freeze_paths(self.mode), *self.mirror.freeze_paths()]

    def _split(self) -> None:
        assert self.engine is not None and self.mirror is not None
        with self._guard.deferred():  # a signal mid-FIFREEZE is raised once the mount is recorded
            for path in self._freeze_paths():
                self._freezer.freeze(path)
        self._guard.raise_pending()
        stats = self.mirror.final_sync([f.path for f in self.files], self.progress(Phase.SPLIT))
        self.mirror.split()
        self.stats["final_sync"] = dataclasses.asdict(stats)

    def _check(self) -> None:
        self._leave_out_vanished(lambda f: not os.path.lexists(f.path))
        missing = [f.path for f in self.files if not os.path.lexists(f.path)]
        if missing:
            raise SplitmirrorError(
                f"{missing[0]} vanished during the window ({len(missing)} file(s) in all), although the "
                "database said it uses it; the image would be incomplete, so the session stops"
            )
        result = self._filemap.check(f.path for f in self.files)
        self.stats["check"] = dataclasses.asdict(result)
        assert self.mirror is not None
        if self.mirror.supports_extent_reads:
            self.mirror.checked(self._filemap.extents, self._filemap.entries)
        with self._guard.deferred():
            errors = self._freezer.thaw_all()
        if errors:
            raise errors[0]
        self._guard.raise_pending()

    def _unquiesce(self) -> None:
        assert self.engine is not None
        self.unquiesced = self.engine.unquiesce()
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
        assert self.target and self.mirror and self.catalog and self.id and self.unquiesced
        mirror = self.mirror
        self._leave_out_vanished(lambda f: not mirror.exists_in_split(f.path))
        writer = ArchiveWriter(self.target, uid=os.getuid(), gid=os.getgid())
        window_files = sorted(self.unquiesced.window_files, key=lambda f: logical_order(f.logical_key))
        collected = sorted(self.unquiesced.collected_files, key=lambda f: logical_order(f.logical_key))
        sources = [(f, True) for f in [*self.files, *window_files]] + [(f, False) for f in collected]
        sizes = {f.path: self._source_size(f, mirrored) for f, mirrored in sources}
        total, done = sum(sizes.values()), 0
        report = self.progress(Phase.BACKUP)
        self.target.open()
        for f, mirrored in sources:
            name = str(self.mirror.relative(f.path))
            try:
                info = self.mirror.split_stat(f.path) if mirrored else _stat(f.path)
                with self.mirror.open_split_copy(f.path) if mirrored else open(f.path, "rb") as source:
                    member = writer.add_file(
                        name,
                        source,
                        sizes[f.path],
                        mode=info.mode,
                        mtime=info.mtime,
                        owner=(info.uid, info.gid),
                        progress=lambda n, _t, base=done: report(base + n, total),
                        data=self.mirror.data_ranges(f.path) if mirrored else None,
                    )
            except OSError as error:  # the target's own errors (full) are UserErrors, not OSErrors
                where = "the split mirror" if mirrored else "the primary"
                raise SplitmirrorError(
                    f"reading {name} from {where} failed ({error.strerror or error}); the archive "
                    "would be incomplete, so it was removed"
                ) from error
            done += member.size
            method = self.mirror.read_method(f.path) if mirrored else "collected"
            self._add_member(str(f.path), f.logical_key, f.role, member, method)
            if mirrored and self.mirror.supports_extent_reads:
                self.stats.setdefault("extents", {})[name] = self.mirror.extents_of(f.path)
        for extra in self.unquiesced.extra_members:
            name = str(self.mirror.relative(extra.path)) if extra.path is not None else extra.name
            member = writer.add_bytes(name, extra.data, mtime=time.time())
            self._add_member("", extra.logical_key, extra.role, member, "generated")
        manifest = writer.add_manifest(self._manifest(), mtime=time.time())
        writer.close()
        self._add_member("", ("manifest",), "manifest", manifest, "generated")
        self.catalog.add_files(self.id, self.members)
        data = [m for m in self.members if m.role != "manifest"]
        self.catalog.update_session(
            self.id,
            files=len(data),
            bytes=sum(m.size for m in data),
            archive=self.target.location,
            window_ms=self.window_ms,
            label=self.unquiesced.label,
            redo_range=dict(self.unquiesced.redo_range),
            stats=self.stats,
        )

    def _source_size(self, f: DatabaseFile, mirrored: bool) -> int:
        assert self.mirror is not None
        try:
            return self.mirror.split_stat(f.path).size if mirrored else os.stat(f.path).st_size
        except (FileNotFoundError, KeyError):
            where = "the split mirror" if mirrored else "the primary, where it was to be collected"
            raise FileNotFoundError(f"{f.path} is missing from {where}") from None

    def _add_member(
        self, path: str, key: tuple[int | str, ...], role: str, member: MemberRecord, method: str
    ) -> None:
        seq = len(self.members) + 1
        self.members.append(
            FileRecord(seq, member.name, path, key, role, member.size, member.sha256, member.offset, method)
        )

    def _manifest(self) -> dict[str, Any]:
        assert self.engine is not None and self.unquiesced is not None and self.server is not None
        return {
            "format": MANIFEST_FORMAT,
            "splitmirror": __version__,
            "session": {"id": self.id, "name": self.config.session.name},
            "database": {
                "engine": self.engine.name,
                "url": redact_url(self.config.database.url),
                "version": self.server.version,
                "flavour": self.server.flavour,
            },
            "mode": self.mode.value,
            "created_at": utc_now(),
            "window_ms": self.window_ms,
            "label": self.unquiesced.label,
            "redo_range": dict(self.unquiesced.redo_range),
            "metadata": self.metadata,
            "files": [m.to_json() for m in self.members],
        }

    def _cleanup(self) -> None:
        assert self.mirror is not None and self.catalog is not None and self.id is not None
        self.mirror.reestablish()
        self.catalog.finish_session(self.id, status=DONE, finished_at=utc_now())

    # -- endings --------------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        """Everything a failed session owes: the archive discarded, the mirror back, the row."""
        if self._quiesced or self._freezer.frozen:  # only if the window's own finally was skipped
            self._release()
        for undo in (self.target.discard if self.target else None, self._reestablish):
            if undo is not None:
                with contextlib.suppress(Exception):  # the original error is the one to report
                    undo()
        if self.catalog is not None and self.id is not None and self.phase is not None:
            self.catalog.update_session(self.id, window_ms=self.window_ms, stats=self.stats)
            self.catalog.finish_session(
                self.id,
                status=FAILED,
                finished_at=utc_now(),
                failed_phase=self.phase.name,
                error=first_line(error),
            )

    def _reestablish(self) -> None:
        if self.mirror is not None and self.phase is not None and self.phase.value >= Phase.SPLIT.value:
            self.mirror.reestablish()

    def _close(self) -> None:
        self._freezer.thaw_all()  # before anything that may write to the primary (SQLite's close)
        if self.engine is not None:
            with contextlib.suppress(Exception):  # closing must not hide the session's outcome
                self.engine.close()
        if self.mirror is not None:
            with contextlib.suppress(Exception):
                self.mirror.close()
        self._watchdog.finish()  # the outcome is recorded: nothing left for it to do
        self._claim.release()
        if self._lock is not None:
            self._lock.release()

    def _finished(self) -> SessionSummary:
        assert self.catalog is not None and self.id is not None
        summary = self.catalog.get(self.id)
        try:
            self.hooks.session_finished(self, summary)
        except Exception:  # the session's outcome is recorded; a notification cannot change it
            log.exception("an observer failed on session_finished")
        return summary

    def summary(self) -> SessionSummary | None:
        """The catalog's view of this session (after it ended, successfully or not)."""
        if self.catalog is None or self.id is None:
            return None
        return self.catalog.get(self.id)


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


def _sentences(problems: list[PreflightProblem]) -> str:
    return "; and ".join(problem.sentence() for problem in problems)


@impl(trylast=True)
def splitmirror_phase(session: Session, phase: Phase) -> object:
    """The core's phase runner: observers wrap this hook to time or trace phases."""
    session.run_phase_body(phase)
    return True


__all__ = ["Session", "SessionSummary", "SyncStats", "logical_order", "utc_now"]
