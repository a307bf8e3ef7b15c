"""The session engine against a real SQLite database and real files."""

from __future__ import annotations

import json
import sqlite3
import tarfile
import time
from collections.abc import Callable, Generator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from conftest import integrity, writable_now
from splitmirror import impl
from splitmirror.catalog import SqliteCatalog
from splitmirror.config import Config
from splitmirror.errors import SessionFailed
from splitmirror.hooks import Hooks
from splitmirror.phases import PHASE_ORDER, Phase
from splitmirror.session import Session
from splitmirror.testing.contract import Fault
from splitmirror.workload import acknowledged, start_writer, stop_writer


class Recorder:
    """An observer plugin: remembers every phase event and times phases with a wrapper."""

    def __init__(self) -> None:
        self.started: list[Phase] = []
        self.finished: list[tuple[Phase, str | None]] = []
        self.wrapped: dict[Phase, float] = {}
        self.progress: set[Phase] = set()
        self.summaries: list[str] = []

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        self.started.append(phase)

    @impl
    def splitmirror_phase_finished(
        self, session: Session, phase: Phase, duration_s: float, error: BaseException | None
    ) -> None:
        self.finished.append((phase, None if error is None else str(error)))

    @impl(wrapper=True)
    def splitmirror_phase(self, session: Session, phase: Phase) -> Generator[None, Any, Any]:
        started = time.monotonic()
        try:
            return (yield)
        finally:
            self.wrapped[phase] = time.monotonic() - started

    @impl
    def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
        self.progress.add(phase)

    @impl
    def splitmirror_session_finished(self, session: Session, summary: Any) -> None:
        self.summaries.append(summary.status)


class Pause:
    """Holds a phase open for a while, so the window is long enough to watch."""

    def __init__(
        self,
        phase: Phase,
        seconds: float,
        during: Callable[[], None] | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.phase, self.seconds, self.during, self.before = phase, seconds, during, before

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is self.phase:
            if self.before:
                self.before()
            time.sleep(self.seconds)
            if self.during:
                self.during()


def run(config: Config, hooks: Hooks, *plugins: object) -> Session:
    """Run a session with ``plugins`` registered for its duration only."""
    removers = [hooks.register(plugin, f"test-plugin-{i}") for i, plugin in enumerate(plugins)]
    try:
        session = Session(config, hooks)
        session.run()
        return session
    finally:
        for remove in removers:
            remove()


def test_phases_run_in_design_order_and_are_recorded(ledger: Path, make_config: Any, hooks: Hooks) -> None:
    recorder = Recorder()
    session = run(make_config(), hooks, recorder)
    assert recorder.started == list(PHASE_ORDER)
    assert [p for p, _ in recorder.finished] == list(PHASE_ORDER)
    assert set(recorder.wrapped) == set(PHASE_ORDER)
    assert {Phase.SYNC, Phase.BACKUP} <= recorder.progress
    assert recorder.summaries == ["DONE"]
    summary = session.summary()
    assert summary is not None and summary.status == "DONE"
    assert [p.name for p in summary.phases] == [p.name for p in PHASE_ORDER]
    assert summary.window_ms is not None and 0 < summary.window_ms < 30_000
    in_window = sum(p.duration_ms for p in summary.phases if Phase[p.name].in_window)
    assert summary.window_ms == pytest.approx(in_window, abs=50)


@pytest.mark.parametrize(
    "phase", [p for p in PHASE_ORDER if Phase.QUIESCE.value <= p.value <= Phase.BACKUP.value]
)
@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_failure_in_any_phase_unquiesces_and_records(
    phase: Phase, mode: str, ledger: Path, make_config: Any, hooks: Hooks
) -> None:
    config = make_config(mode=mode)
    with pytest.raises(SessionFailed) as failure:
        run(config, hooks, Fault(phase))
    assert failure.value.phase == phase.name
    assert writable_now(ledger), "the database must be writable right after a failed session"
    catalog = SqliteCatalog(config.session.catalog)
    row = catalog.get(failure.value.session_id)
    assert (row.status, row.failed_phase) == ("FAILED", phase.name)
    assert row.error == f"injected fault in {phase.name}"
    assert not list((config.mirror.primary.parent / "archives").iterdir()), "no archive on failure"
    # The lock was released: the next session on the same config runs.
    assert Session(config, hooks).run().status == "DONE"


def test_window_limit_aborts_and_unquiesces(ledger: Path, make_config: Any, lenient_hooks: Hooks) -> None:
    """The alarm goes off in an observer (which holds PREPARE open): the window limit is no
    observer's failure, so it is raised, not logged."""
    hooks = lenient_hooks
    config = make_config(max_window="300ms")
    started = time.monotonic()
    with pytest.raises(SessionFailed) as failure:
        run(config, hooks, Pause(Phase.PREPARE, 5))
    assert time.monotonic() - started < 4, "the window limit must interrupt the phase"
    assert failure.value.phase == "PREPARE"
    assert "max_window" in failure.value.reason
    assert writable_now(ledger)
    row = SqliteCatalog(config.session.catalog).get(failure.value.session_id)
    assert row.status == "FAILED" and row.window_ms is not None and row.window_ms < 2000
    assert Session(config, hooks).run().status == "DONE", "the lock was released"


@pytest.mark.parametrize(("mode", "blocked"), [("freeze", True), ("hot-backup", False)])
def test_writer_blocked_only_in_freeze_and_archive_restores(
    mode: str, blocked: bool, ledger: Path, make_config: Any, hooks: Hooks, tmp_path: Path
) -> None:
    acks = tmp_path / "acks.txt"
    writer = start_writer(ledger, acks)
    seen: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 10
        while len(acknowledged(acks)) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)

        def count(key: str) -> Callable[[], None]:
            return lambda: seen.__setitem__(key, len(acknowledged(acks)))

        def committed(key: str) -> Callable[[], None]:
            """Rows committed, read from the database itself (readers are never blocked)."""

            def read() -> None:
                with closing(sqlite3.connect(ledger)) as conn:
                    seen[key] = conn.execute("SELECT count(*) FROM ledger WHERE writer = 1").fetchone()[0]

            return read

        session = run(
            make_config(mode=mode),
            hooks,
            Pause(Phase.QUIESCE, 0, before=count("before_quiesce")),
            Pause(Phase.DISCOVER, 0.8, before=committed("window_open"), during=committed("after_pause")),
        )
    finally:
        stop_writer(writer)
    grew = seen["after_pause"] - seen["window_open"]
    if blocked:
        assert grew == 0, f"writer committed {grew} rows inside a FREEZE window"
    else:
        assert grew > 5, "in HOT_BACKUP the writer keeps committing"
    summary = session.summary()
    assert summary is not None and summary.archive is not None
    restored = tmp_path / "restored"
    with tarfile.open(summary.archive) as tar:
        tar.extractall(restored, filter="data")
    result, rows = integrity(restored / "ledger.db")
    assert result == "ok"
    # Every row acknowledged before QUIESCE began is in the restored database.
    acked = acknowledged(acks)[: seen["before_quiesce"]]
    with sqlite3.connect(restored / "ledger.db") as conn:
        present = {r for (r,) in conn.execute("SELECT seq FROM ledger WHERE writer = 1")}
    assert set(acked) <= present
    assert rows >= 2000 + len(acked)


def test_skipping_a_phase_body_is_refused(ledger: Path, make_config: Any, hooks: Hooks) -> None:
    class Hijack:
        @impl
        def splitmirror_phase(self, session: Session, phase: Phase) -> object:
            return "skipped" if phase is Phase.QUIESCE else None

    with pytest.raises(SessionFailed) as failure:
        run(make_config(), hooks, Hijack())
    assert failure.value.phase == "QUIESCE"
    assert "skipped the QUIESCE phase" in failure.value.reason
    assert writable_now(ledger)


def test_second_session_on_same_config_is_refused_while_first_runs(
    ledger: Path, make_config: Any, hooks: Hooks
) -> None:
    config = make_config()
    outcome: dict[str, str] = {}

    def try_second() -> None:
        try:
            Session(config, hooks).run()
            outcome["second"] = "ran"
        except Exception as error:  # noqa: BLE001
            outcome["second"] = str(error)

    run(config, hooks, Pause(Phase.SYNC, 0, try_second))
    assert "another session is already running" in outcome["second"]
    assert f"pid {__import__('os').getpid()}" in outcome["second"]


def test_mirror_provider_from_a_plugin_is_used_in_phase_order(
    ledger: Path, write_config: Any, hooks: Hooks
) -> None:
    from splitmirror.config import load_config
    from splitmirror.mirror.directory import DirectoryMirror

    calls: list[str] = []

    class Tracing(DirectoryMirror):
        name = "tracing-directory"

        def bulk_sync(self, progress: Any) -> Any:
            calls.append("bulk_sync")
            return super().bulk_sync(progress)

        def final_sync(self, first: Any, progress: Any) -> Any:
            calls.append(f"final_sync {[p.name for p in first]}")
            return super().final_sync(first, progress)

        def split(self) -> None:
            calls.append("split")
            super().split()

        def will_read(self, primary_paths: Any) -> None:
            calls.append(f"will_read {[p.name for p in primary_paths]}")

        def reestablish(self) -> None:
            calls.append("reestablish")
            super().reestablish()

    class Provider:
        @impl
        def splitmirror_register_mirrors(self, register: Any) -> None:
            register(Tracing)

    path = write_config(mode="hot-backup")
    path.write_text(path.read_text().replace('provider = "directory"', 'provider = "tracing-directory"'))
    run(load_config(path), hooks, Provider())
    assert calls == [
        "bulk_sync",
        "final_sync ['ledger.db', 'ledger.db-wal']",
        "split",
        "will_read ['ledger.db', 'ledger.db-wal']",  # BACKUP's order, before its first read
        "reestablish",
    ]


def test_progress_bars_observer_renders_sync_and_backup(ledger: Path, make_config: Any, hooks: Hooks) -> None:
    import io

    from rich.console import Console

    from splitmirror.progress_bars import ProgressBars

    stream = io.StringIO()
    bars = ProgressBars(Console(file=stream, force_terminal=True, width=120), enabled=True)
    run(make_config(), hooks, bars)
    bars.stop()
    shown = stream.getvalue()
    assert "sync (bulk)" in shown and "backup" in shown


def test_restore_preparation_drops_a_stale_wal_index(
    ledger: Path, make_config: Any, hooks: Hooks, tmp_path: Path
) -> None:
    from splitmirror.engines.sqlite import SqliteEngine

    summary = Session(make_config(mode="hot-backup"), hooks).run()
    restored = tmp_path / "restored"
    with tarfile.open(summary.archive or "") as tar:
        tar.extractall(restored, filter="data")
    (restored / "ledger.db-shm").write_bytes(b"stale index from somewhere else")
    manifest = json.loads((restored / ".splitmirror-manifest.json").read_text())
    steps = SqliteEngine.prepare_restore(restored, manifest)
    assert not (restored / "ledger.db-shm").exists()
    assert steps[0].argv == ("sqlite3", str(restored / "ledger.db"), "PRAGMA integrity_check")
    assert integrity(restored / "ledger.db")[0] == "ok"


def test_window_limit_does_not_apply_after_unquiesce(ledger: Path, make_config: Any, hooks: Hooks) -> None:
    class SlowAfterUnquiesce:
        @impl(wrapper=True)
        def splitmirror_phase(self, session: Session, phase: Phase) -> Generator[None, Any, Any]:
            result = yield
            if phase is Phase.UNQUIESCE:
                time.sleep(1.3)  # the database is already free: this is not window time
            return result

    session = run(make_config(max_window="1s"), hooks, SlowAfterUnquiesce())
    summary = session.summary()
    assert summary is not None and summary.status == "DONE"
    assert summary.window_ms is not None and summary.window_ms < 1000


NOTIFICATIONS = (
    "splitmirror_phase_started",
    "splitmirror_phase_finished",
    "splitmirror_progress",
    "splitmirror_session_finished",
)


class MailServerDown:
    """An observer whose every notification fails."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = dict.fromkeys(NOTIFICATIONS, 0)

    def _fail(self, hook: str) -> None:
        self.calls[hook] += 1
        raise ConnectionError("mail server down")

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        self._fail("splitmirror_phase_started")

    @impl
    def splitmirror_phase_finished(
        self, session: Session, phase: Phase, duration_s: float, error: BaseException | None
    ) -> None:
        self._fail("splitmirror_phase_finished")

    @impl
    def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
        self._fail("splitmirror_progress")

    @impl
    def splitmirror_session_finished(self, session: Session, summary: Any) -> None:
        self._fail("splitmirror_session_finished")


def test_failing_notifications_do_not_fail_the_backup(
    ledger: Path, make_config: Any, lenient_hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    """Every one of the four notifications fails, every time: each failure is logged with the
    plugin's name, the other observers still hear everything, and the backup is DONE."""
    down, recorder = MailServerDown(), Recorder()
    session = run(make_config(), lenient_hooks, down, recorder)
    summary = session.summary()
    assert summary is not None and summary.status == "DONE"
    assert [p.name for p in summary.phases] == [p.name for p in PHASE_ORDER], "every phase recorded"
    assert Path(summary.archive or "").exists()
    assert all(down.calls.values()), down.calls
    assert recorder.started == list(PHASE_ORDER) and recorder.summaries == ["DONE"], "others still hear"
    logged = [r for r in caplog.records if r.name == "splitmirror.hooks" and r.levelname == "ERROR"]
    for hook in NOTIFICATIONS:
        assert any(f"plugin 'test-plugin-0' failed in {hook}" in r.getMessage() for r in logged), hook
    assert all(isinstance(r.exc_info[1], ConnectionError) for r in logged if r.exc_info)


class _Breaks:
    def __init__(self, phase: Phase) -> None:
        self.phase, self.raised = phase, 0

    def _maybe(self, phase: Phase) -> None:
        if phase is self.phase:
            self.raised += 1
            raise RuntimeError(f"the progress display broke in {phase.name}")


class ProgressFailsIn(_Breaks):
    """Raises on every progress report of one phase (SPLIT's run with the database held)."""

    @impl
    def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
        self._maybe(phase)


class StartFailsIn(_Breaks):
    """Raises when one phase starts."""

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        self._maybe(phase)


def test_a_progress_observer_failing_inside_the_window_is_logged(
    ledger: Path, make_config: Any, lenient_hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    """SPLIT's final pass reports progress with the database quiesced and the primary frozen:
    a broken progress bar there must not fail (and so abort) the backup."""
    broken = ProgressFailsIn(Phase.SPLIT)
    session = run(make_config(), lenient_hooks, broken)
    summary = session.summary()
    assert broken.raised > 0, "SPLIT reported no progress: the test proves nothing"
    assert summary is not None and summary.status == "DONE"
    assert "the progress display broke in SPLIT" in caplog.text
    assert "plugin 'test-plugin-0' failed in splitmirror_progress" in caplog.text
    tracebacks = [r for r in caplog.records if r.name == "splitmirror.hooks" and r.exc_info]
    assert len(tracebacks) == 1, "logged once: a traceback per block would lengthen the window"


def test_a_progress_observer_failing_on_every_block_is_logged_once(
    ledger: Path,
    make_config: Any,
    lenient_hooks: Hooks,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many reports inside the window (a small block size, a bigger database, every report
    passed on to observers): one traceback."""
    monkeypatch.setattr("splitmirror.session.PROGRESS_INTERVAL", 0)
    with closing(sqlite3.connect(ledger)) as db, db:
        db.executemany(
            "INSERT INTO ledger (writer, seq, at, payload) VALUES (1, ?, 0, randomblob(2000))",
            ((seq,) for seq in range(1, 2001)),
        )
    broken = ProgressFailsIn(Phase.SPLIT)
    session = run(make_config(block_size="16KiB"), lenient_hooks, broken, ProgressFailsIn(Phase.BACKUP))
    summary = session.summary()
    assert summary is not None and summary.status == "DONE"
    assert broken.raised > 1, "SPLIT reported progress once: the test proves nothing"
    logged = [r.getMessage() for r in caplog.records if r.name == "splitmirror.hooks" and r.exc_info]
    assert sorted(logged) == sorted(
        f"plugin 'test-plugin-{i}' failed in splitmirror_progress; the session goes on (its further "
        "failures there are not logged)"
        for i in (0, 1)
    )


@pytest.mark.parametrize("phase", [Phase.QUIESCE, Phase.BACKUP])
def test_a_phase_started_observer_failing_is_logged(
    phase: Phase, ledger: Path, make_config: Any, lenient_hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    broken = StartFailsIn(phase)
    session = run(make_config(), lenient_hooks, broken)
    summary = session.summary()
    assert broken.raised == 1 and summary is not None and summary.status == "DONE"
    assert "plugin 'test-plugin-0' failed in splitmirror_phase_started" in caplog.text


def test_strict_plugin_mode_makes_a_failing_observer_fail_the_session(
    ledger: Path, make_config: Any, hooks: Hooks
) -> None:
    """For plugin development and the test suite (whose ``hooks`` fixture is strict)."""
    assert hooks.strict
    with pytest.raises(SessionFailed) as failure:
        run(make_config(), hooks, ProgressFailsIn(Phase.SPLIT))
    assert failure.value.phase == "SPLIT"
    assert failure.value.reason == (
        "plugin 'test-plugin-0' failed in splitmirror_progress: RuntimeError: the progress display "
        "broke in SPLIT (strict plugin mode)"
    )
    assert writable_now(ledger)


class FinishFailsIn(_Breaks):
    """Raises when one phase's outcome is reported."""

    @impl
    def splitmirror_phase_finished(
        self, session: Session, phase: Phase, duration_s: float, error: BaseException | None
    ) -> None:
        self._maybe(phase)


def test_strict_mode_never_undoes_a_done_session(ledger: Path, make_config: Any, hooks: Hooks) -> None:
    """CLEANUP's observer fails after the row is DONE: the failure is raised, the archive stays."""
    from splitmirror.errors import PluginError

    config = make_config()
    with pytest.raises(PluginError, match="failed in splitmirror_phase_finished: RuntimeError: the "):
        run(config, hooks, FinishFailsIn(Phase.CLEANUP))
    (row,) = SqliteCatalog(config.session.catalog).sessions()
    assert row.status == "DONE" and Path(row.archive or "").exists()


def test_strict_mode_never_hides_the_error_that_failed_the_session(
    ledger: Path, make_config: Any, hooks: Hooks
) -> None:
    """An observer failing on QUIESCE's outcome (reported when the window closes) while SPLIT
    failed: the session's error is SPLIT's, and every phase of the window is recorded."""
    config = make_config()
    with pytest.raises(SessionFailed) as failure:
        run(config, hooks, FinishFailsIn(Phase.QUIESCE), Fault(Phase.SPLIT))
    assert (failure.value.phase, failure.value.reason) == ("SPLIT", "injected fault in SPLIT")
    recorded = [p.name for p in SqliteCatalog(config.session.catalog).get(failure.value.session_id).phases]
    assert recorded == ["INIT", "MAP", "SYNC", "QUIESCE", "DISCOVER", "PREPARE", "SPLIT"]


def test_strict_plugin_mode_follows_the_environment() -> None:
    from splitmirror.plugins import load_plugins

    assert not Hooks(load_plugins(entry_points_enabled=False)).strict
    assert Hooks(load_plugins({"SPLITMIRROR_STRICT_PLUGINS": "1"}, entry_points_enabled=False)).strict


def test_existing_archive_is_never_overwritten(
    ledger: Path, make_config: Any, hooks: Hooks, root: Path
) -> None:
    squatter = root / "archives" / "ledger-1.tar"
    squatter.write_bytes(b"an older archive with the same name")
    with pytest.raises(SessionFailed) as failure:
        run(make_config(), hooks)
    assert failure.value.phase == "INIT" and "already exists" in failure.value.reason
    assert squatter.read_bytes() == b"an older archive with the same name"
    assert writable_now(ledger)


def test_collected_files_are_read_from_the_primary_after_the_window(
    ledger: Path, write_config: Any, hooks: Hooks
) -> None:
    """Redo written between the split and the end of the mode is not on the mirror: engines
    hand it over as collected files, archived after the database files."""
    import dataclasses

    from splitmirror.config import load_config
    from splitmirror.engine import DatabaseFile, UnquiesceResult
    from splitmirror.engines.sqlite import SqliteEngine

    late = ledger.parent / "late-redo.log"

    class RedoAfterSplit(SqliteEngine):
        name = "sqlite-late-redo"
        url_schemes = ("sqlitelate",)

        def unquiesce(self) -> UnquiesceResult:
            late.write_bytes(b"written after the split")  # by the database, in real life
            result = super().unquiesce()
            return dataclasses.replace(result, collected_files=[DatabaseFile(late, (2, 0), "wal")])

    class Provider:
        @impl
        def splitmirror_register_engines(self, register: Any) -> None:
            register(RedoAfterSplit)

    path = write_config()
    path.write_text(path.read_text().replace('url = "sqlite://', 'url = "sqlitelate://'))
    session = run(load_config(path), hooks, Provider())
    assert session.members[-2].member == "late-redo.log" and session.members[-2].read_method == "collected"
    summary = session.summary()
    with tarfile.open(summary.archive if summary else "") as tar:
        assert tar.extractfile("late-redo.log").read() == b"written after the split"  # type: ignore[union-attr]
        assert not (session.config.mirror.mirror / "late-redo.log").exists()


class MoveAside:
    """In the window, after DISCOVER: moves a database file away (the test puts it back)."""

    def __init__(self, path: Path) -> None:
        self.path, self.aside = path, path.with_name(path.name + ".aside")

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.PREPARE:
            self.path.rename(self.aside)


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_file_vanishing_in_the_window_fails_the_session_with_one_sentence(
    mode: str, ledger: Path, make_config: Any, hooks: Hooks
) -> None:
    """SQLite's files may not vanish (no engine said they may): the image would be incomplete."""
    config = make_config(mode=mode)
    mover = MoveAside(ledger)
    try:
        with pytest.raises(SessionFailed) as failure:
            run(config, hooks, mover)
    finally:
        mover.aside.rename(ledger)
    assert failure.value.phase == "CHECK"
    assert f"{ledger} vanished during the window (1 file(s) in all)" in failure.value.reason
    assert writable_now(ledger)
    assert not list((config.mirror.primary.parent / "archives").iterdir()), "no archive on failure"
    assert Session(config, hooks).run().status == "DONE"


def test_observers_hear_of_a_failed_session_too(ledger: Path, make_config: Any, hooks: Hooks) -> None:
    """An alert built on session_finished must fire for the backup that failed."""
    recorder = Recorder()
    with pytest.raises(SessionFailed) as failure:
        run(make_config(), hooks, recorder, Fault(Phase.BACKUP))
    assert failure.value.phase == "BACKUP"
    assert recorder.summaries == ["FAILED"]
    assert isinstance(failure.value.__cause__, RuntimeError)


def test_the_directory_mirrors_sync_reports_a_total(
    ledger: Path, make_config: Any, hooks: Hooks, root: Path
) -> None:
    """The progress bars' total (and so their time left) for SYNC: every byte of the primary's
    files, which each pass visits."""
    seen: list[tuple[int, int | None]] = []

    class Watch:
        @impl
        def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
            if phase is Phase.SYNC:
                seen.append((done, total))

    before = sum(p.stat().st_size for p in (root / "primary").rglob("*") if p.is_file())
    run(make_config(), hooks, Watch())
    totals = {total for _done, total in seen}
    assert len(totals) == 1 and None not in totals, totals
    (total,) = totals
    assert total >= before and max(done for done, _total in seen) == total  # nothing wrote meanwhile


def test_init_failing_after_the_row_is_inserted_records_it_failed(
    ledger: Path, make_config: Any, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the catalog row and the session's parts (the target, named by the row's id), a
    Ctrl-C or an error must still leave the row FAILED in INIT, not STARTED for the next
    session to guess about."""
    from splitmirror import preflight
    from splitmirror.catalog import SqliteCatalog

    config = make_config()
    real = preflight.make_target

    def interrupted(cfg: Any, target_class: Any, session_id: int) -> Any:
        if session_id:
            raise KeyboardInterrupt
        return real(cfg, target_class, session_id)

    monkeypatch.setattr(preflight, "make_target", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Session(config, hooks).run()
    (row,) = SqliteCatalog(config.session.catalog).sessions()
    assert (row.status, row.failed_phase, row.error) == ("FAILED", "INIT", "KeyboardInterrupt")


class WriteAtQuiesce:
    """Writes ``path`` as QUIESCE starts: after the bulk pass, before the final one."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path, self.data = path, data

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.QUIESCE:
            self.path.write_bytes(self.data)


def test_what_the_engine_collects_after_the_window_is_left_out_of_the_final_pass(
    root: Path, make_config: Callable[..., Config], hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``collected_paths`` (PostgreSQL's pg_wal in HOT_BACKUP): the final pass, inside the window,
    leaves them as they were; the rest of the primary is brought up to date, and the next
    session's passes catch them up."""
    from splitmirror.engines.sqlite import SqliteEngine
    from splitmirror.workload import create_ledger

    create_ledger(root / "primary" / "ledger.db")
    side = root / "primary" / "side"
    side.mkdir()
    (side / "log").write_bytes(b"a" * 4096)
    (root / "primary" / "other").write_bytes(b"a" * 4096)
    config = make_config(mode="hot-backup")
    observers = [
        WriteAtQuiesce(side / "log", b"b" * 4096),
        WriteAtQuiesce(root / "primary" / "other", b"b" * 4096),
    ]
    for i, observer in enumerate(observers):
        hooks.register(observer, f"write-at-quiesce-{i}")
    with monkeypatch.context() as patched:
        patched.setattr(SqliteEngine, "collected_paths", lambda self, mode: [side])
        assert Session(config, hooks).run().status == "DONE"
    assert (root / "mirror" / "other").read_bytes() == b"b" * 4096
    assert (root / "mirror" / "side" / "log").read_bytes() == b"a" * 4096, "the final pass copied it"
    assert Session(config, hooks).run().status == "DONE"  # collects nothing: all of it copied
    assert (root / "mirror" / "side" / "log").read_bytes() == b"b" * 4096


def test_observers_hear_progress_at_most_every_interval_and_at_the_end(
    make_config: Any, hooks: Hooks
) -> None:
    """Synchronizers and the archive report every file (thousands, some inside the window);
    observers hear the first report, then at most one an interval, and the one reaching the total."""
    heard: list[tuple[int, int | None]] = []

    class Listener:
        @impl
        def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
            heard.append((done, total))

    remove = hooks.register(Listener(), "test-listener")
    try:
        report = Session(make_config(), hooks).progress(Phase.BACKUP)
        for done in range(1, 2001):
            report(done, 2000)
    finally:
        remove()
    assert heard[0] == (1, 2000) and heard[-1] == (2000, 2000)
    assert len(heard) <= 3, f"{len(heard)} reports in well under a second"


def test_observers_hear_the_last_progress_of_a_phase_without_a_total(
    ledger: Path, write_config: Any, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final pass reports bytes without a total: its last report, held back by the
    interval, is told when the phase ends, so a progress display does not end on a stale count."""
    from splitmirror.config import load_config
    from splitmirror.mirror.directory import DirectoryMirror

    monkeypatch.setattr("splitmirror.session.PROGRESS_INTERVAL", 1e9)  # only the first goes at once
    raw: list[tuple[int, int | None]] = []
    heard: list[tuple[int, int | None]] = []

    class Recording(DirectoryMirror):
        name = "recording-directory"

        def final_sync(self, first: Any, progress: Any) -> Any:
            def record(done: int, total: int | None) -> None:
                raw.append((done, total))
                progress(done, total)

            return super().final_sync(first, record)

    class Provider:
        @impl
        def splitmirror_register_mirrors(self, register: Any) -> None:
            register(Recording)

        @impl
        def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
            if phase is Phase.SPLIT:
                heard.append((done, total))

    path = write_config()
    path.write_text(path.read_text().replace('provider = "directory"', 'provider = "recording-directory"'))
    run(load_config(path), hooks, Provider())
    assert len(set(raw)) > 1, "the final pass reported once: the test proves nothing"
    assert heard == [raw[0], raw[-1]]


def test_a_file_that_may_vanish_and_does_by_check_is_left_out(
    ledger: Path, write_config: Any, hooks: Hooks
) -> None:
    """A database that writes on through the window (HOT_BACKUP, no freeze) may drop a table
    between DISCOVER and CHECK: a file its engine said may vanish is left out, named in the
    stats, and the session goes on."""
    from splitmirror.config import load_config
    from splitmirror.engine import DatabaseFile
    from splitmirror.engines.sqlite import SqliteEngine

    dropped = ledger.parent / "dropped-table"
    dropped.write_bytes(b"a table the database drops in the window")

    class DropsATable(SqliteEngine):
        name = "sqlite-drops"
        url_schemes = ("sqlitedrops",)

        def discover(self) -> list[DatabaseFile]:
            return [*super().discover(), DatabaseFile(dropped, (1, 0), "data", may_vanish=True)]

    class Provider:
        @impl
        def splitmirror_register_engines(self, register: Any) -> None:
            register(DropsATable)

        @impl(wrapper=True)
        def splitmirror_phase(self, session: Session, phase: Phase) -> Generator[None, object, object]:
            if phase is Phase.CHECK:
                dropped.unlink()
            return (yield)

    path = write_config(mode="hot-backup")
    path.write_text(path.read_text().replace('url = "sqlite://', 'url = "sqlitedrops://'))
    session = run(load_config(path), hooks, Provider())
    summary = session.summary()
    assert summary is not None and summary.status == "DONE"
    assert summary.stats["vanished"] == [str(dropped)]
    assert "dropped-table" not in {m.member for m in session.members}


def test_check_tells_the_files_gone_since_discover_apart_instead_of_failing(tmp_path: Path) -> None:
    """CHECK looks at each file once: a file gone between a separate existence check and its
    fingerprint failed the session with a traceback-worthy FileNotFoundError."""
    from splitmirror.filemap import FileMap

    kept, gone = tmp_path / "kept", tmp_path / "gone"
    kept.write_bytes(b"k")
    gone.write_bytes(b"g")
    files = FileMap()
    files.map([kept, gone])
    gone.unlink()
    result = files.check([kept, gone])
    assert files.vanished == [gone]
    assert result.unchanged == 1 and result.gone_since_map == 1


def test_check_counts_a_file_whose_directory_became_a_file_as_vanished(tmp_path: Path) -> None:
    """A database that drops a tablespace or a schema directory between DISCOVER and CHECK: the
    path's directory is now something else, which ``stat`` reports as ENOTDIR, not ENOENT."""
    from splitmirror.filemap import FileMap

    directory = tmp_path / "tablespace"
    directory.mkdir()
    inside = directory / "16400"
    inside.write_bytes(b"t")
    files = FileMap()
    files.map([inside])
    inside.unlink()
    directory.rmdir()
    directory.write_bytes(b"a file where the directory was")
    files.check([inside])
    assert files.vanished == [inside]
