"""``blocked_ms``: how long the database's writers were held, beside the window (issue 19).

FREEZE holds the writers from the engine's quiesce to its unquiesce or release; HOT_BACKUP only
while a filesystem holding the primary is frozen.  The sessions here run the real SQLite engine;
the frozen filesystems are loop-device ext4s (root only: skipped, saying why, otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import writable_now
from splitmirror import impl
from splitmirror.archive.pax import MANIFEST_NAME
from splitmirror.blocked import Span, held_ms
from splitmirror.catalog import SqliteCatalog
from splitmirror.config import load_config
from splitmirror.engines.sqlite import SqliteEngine
from splitmirror.errors import SessionFailed
from splitmirror.fsfreeze import Freezer
from splitmirror.hooks import Hooks
from splitmirror.phases import Phase
from splitmirror.session import Session
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase
from splitmirror.testing.contract import Fault
from splitmirror.testing.faults import is_frozen
from splitmirror.testing.loopfs import loop_filesystem, loop_filesystem_unavailable
from splitmirror.tracking import unavailable as tracking_unavailable

HOLD = 0.3  # seconds a test keeps a phase open: far above the clock's and the machine's noise


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitmirror", *args], capture_output=True, text=True, timeout=120
    )


def untracked(write_config: Any, mode: str) -> Path:
    """A config of the directory mirror with change tracking off: nothing is ever frozen."""
    path = write_config(mode=mode)
    text = path.read_text()
    path.write_text(text.replace('provider = "directory"\n', 'provider = "directory"\ntracking = "off"\n'))
    return path


class Hold:
    """Keeps ``phase`` from starting for :data:`HOLD` seconds, and notes whether another
    connection could write to the ledger meanwhile (what the writers felt)."""

    def __init__(self, phase: Phase, ledger: Path | None = None, mount: Path | None = None) -> None:
        self.phase, self.ledger, self.mount = phase, ledger, mount
        self.writable: bool | None = None
        self.frozen: bool | None = None

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is not self.phase:
            return
        if self.mount is not None:
            self.frozen = is_frozen(self.mount)
        time.sleep(HOLD)
        if self.ledger is not None:
            self.writable = writable_now(self.ledger)


def run(config_path: Path, hooks: Hooks, *plugins: object) -> Session:
    removers = [hooks.register(plugin, f"test-plugin-{i}") for i, plugin in enumerate(plugins)]
    try:
        session = Session(load_config(config_path), hooks)
        session.run()
        return session
    finally:
        for remove in removers:
            remove()


# -- the arithmetic -----------------------------------------------------------------------------


def test_overlapping_holds_count_once_and_an_open_one_counts_up_to_now() -> None:
    spans = [Span(10.0, 10.5), Span(10.2, 10.3), Span(11.0, 11.1), Span(10.4, 10.6)]
    assert held_ms(spans) == pytest.approx(700)  # 10.0-10.6 and 11.0-11.1
    assert held_ms([Span(20.0)], now=20.25) == pytest.approx(250)
    assert held_ms([]) == 0.0


# -- the directory mirror: nothing frozen -----------------------------------------------------


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_freeze_holds_writers_for_the_window_and_hot_backup_not_at_all(
    mode: str, ledger: Path, write_config: Any, hooks: Hooks
) -> None:
    hold = Hold(Phase.DISCOVER, ledger=ledger)
    session = run(untracked(write_config, mode), hooks, hold)
    summary = session.summary()
    assert summary is not None and summary.status == "DONE" and summary.window_ms is not None
    assert summary.blocked_ms is not None
    if mode == "freeze":
        assert hold.writable is False, "FREEZE held the write lock while DISCOVER waited"
        assert HOLD * 1000 <= summary.blocked_ms <= summary.window_ms
        # The engine's hold is the window but for two notes to the watchdog.
        assert summary.window_ms - summary.blocked_ms < 50
    else:
        assert hold.writable is True, "HOT_BACKUP let the writer in"
        assert summary.blocked_ms == 0.0, "nothing was frozen, so nothing held the writers"
        assert summary.window_ms >= HOLD * 1000
    with tarfile.open(summary.archive or "") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST_NAME).read())  # type: ignore[union-attr]
    assert manifest["blocked_ms"] == summary.blocked_ms, "the archive says it too"


def test_a_freeze_session_failing_in_the_window_counts_up_to_the_release(
    ledger: Path, write_config: Any, hooks: Hooks
) -> None:
    path = untracked(write_config, "freeze")
    with pytest.raises(SessionFailed) as failure:
        run(path, hooks, Hold(Phase.PREPARE), Fault(Phase.PREPARE))
    row = SqliteCatalog(load_config(path).session.catalog).get(failure.value.session_id)
    assert row.status == "FAILED" and row.window_ms is not None and row.blocked_ms is not None
    assert HOLD * 1000 <= row.blocked_ms <= row.window_ms
    assert writable_now(ledger)


def test_a_session_failing_before_quiesce_held_nobody(ledger: Path, write_config: Any, hooks: Hooks) -> None:
    path = untracked(write_config, "freeze")
    with pytest.raises(SessionFailed) as failure:
        run(path, hooks, Fault(Phase.SYNC))
    row = SqliteCatalog(load_config(path).session.catalog).get(failure.value.session_id)
    assert (row.window_ms, row.blocked_ms) == (None, None)
    assert (
        json.loads(
            cli("show", str(row.id), "--catalog", str(load_config(path).session.catalog), "--json").stdout
        )["blocked_ms"]
        is None
    )


def test_blocked_ms_in_the_summary_the_json_and_the_catalog(
    ledger: Path, write_config: Any, root: Path
) -> None:
    """The command line as a DBA runs it: ``backup --json`` and ``backup``, ``show`` (text and
    JSON) and ``list --json`` all carry the value the catalog row holds."""
    catalog = str(root / "catalog.db")
    freeze = cli("backup", str(untracked(write_config, "freeze")), "--json")
    assert freeze.returncode == 0, freeze.stderr
    data = json.loads(freeze.stdout)
    assert data["mode"] == "freeze" and 0 < data["blocked_ms"] <= data["window_ms"]
    row = SqliteCatalog(root / "catalog.db").get(data["id"])
    assert row.blocked_ms == data["blocked_ms"]
    shown = cli("show", str(data["id"]), "--catalog", catalog)
    assert f"window {data['window_ms']:.1f} ms  blocked {data['blocked_ms']:.1f} ms" in shown.stdout

    hot = cli("backup", str(untracked(write_config, "hot-backup")))
    assert hot.returncode == 0, hot.stderr
    assert "  blocked 0.0 ms  " in hot.stdout, hot.stdout
    listed = json.loads(cli("list", "--catalog", catalog, "--json").stdout)
    assert [(s["mode"], s["blocked_ms"]) for s in listed] == [
        ("freeze", data["blocked_ms"]),
        ("hot-backup", 0.0),
    ]
    assert (
        json.loads(cli("show", str(data["id"]), "--catalog", catalog, "--json").stdout)["blocked_ms"]
        == (data["blocked_ms"])
    )
    table = cli("list", "--catalog", catalog)
    assert "blocked" in table.stdout and f"{data['blocked_ms']:.1f} ms" in table.stdout


# -- a frozen primary (root, loop devices) --------------------------------------------------------


def test_the_freezer_records_the_time_a_filesystem_was_frozen(disk: Path) -> None:
    """A writer started while the filesystem is frozen waits until the thaw: the recorded span
    covers that wait."""
    freezer = Freezer()
    written = threading.Event()

    def write() -> None:
        fd = os.open(disk / "written-while-frozen", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        written.set()

    freezer.freeze(disk)
    writer = threading.Thread(target=write)
    try:
        writer.start()
        time.sleep(HOLD)
        assert not written.is_set(), "the write went through a frozen filesystem"
    finally:
        assert freezer.thaw_all() == []
    waited = time.monotonic()
    writer.join(10)
    assert written.is_set()
    (span,) = freezer.spans
    assert span.end is not None and span.end <= waited
    assert held_ms(freezer.spans) >= HOLD * 1000
    assert held_ms(freezer.spans) == held_ms(freezer.spans, now=span.end + 100), "closed at the thaw"


def test_a_freeze_that_fails_records_no_span(disk: Path) -> None:
    ours = Freezer()
    ours.freeze(disk)
    try:
        other = Freezer()
        with pytest.raises(OSError):
            other.freeze(disk)
        assert other.spans == [] and other.frozen == []
    finally:
        assert ours.thaw_all() == []


@pytest.mark.parametrize("mode", ["hot-backup", "freeze"])
def test_a_block_mirror_session_counts_the_frozen_primary(
    mode: str, disk: Path, splitmirror_session: SessionRunner
) -> None:
    """SPLIT freezes a block mirror's primary in every mode, CHECK thaws it: held open here with
    the primary frozen, CHECK's wait is writers' time in HOT_BACKUP too, and nothing outside
    SPLIT and CHECK is (the engine lets the database write)."""
    splitmirror_session.mirror_options = {"provider": "block"}
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    hold = Hold(Phase.CHECK, mount=disk)
    summary = splitmirror_session.run(database, mode, hold)
    assert hold.frozen is True, "the primary was frozen while CHECK waited"
    assert summary.status == "DONE" and summary.window_ms is not None and summary.blocked_ms is not None
    assert HOLD * 1000 <= summary.blocked_ms <= summary.window_ms
    frozen_phases = sum(p.duration_ms for p in summary.phases if p.name in ("SPLIT", "CHECK"))
    if mode == "hot-backup":
        assert summary.blocked_ms <= frozen_phases + 5
    else:
        assert summary.window_ms - summary.blocked_ms < 50


@pytest.fixture
def tracked_primary(tmp_path: Path) -> Iterator[Path]:
    reason = loop_filesystem_unavailable() or tracking_unavailable()
    if reason:
        pytest.skip(reason)
    (tmp_path / "disk").mkdir()
    with loop_filesystem(tmp_path / "disk", 64 << 20) as mount:
        yield mount


class DirtyAtTheSplit:
    """As SPLIT starts (the database quiesced), overwrites part of a file of the primary in
    place and leaves it in the page cache (no fsync): the tracker cannot have seen it yet."""

    def __init__(self, path: Path) -> None:
        self.path, self.written = path, os.urandom(4096)
        with open(path, "wb") as f:  # placed on the disk now: its extents are settled, so the
            f.write(os.urandom(64 << 10))  # final pass copies the taken ranges, not all of it
            os.fsync(f.fileno())

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.SPLIT:
            with open(self.path, "r+b") as f:
                f.seek(8192)
                f.write(self.written)


def test_a_tracked_directory_mirror_in_hot_backup_writes_the_primary_back_without_freezing_it(
    tracked_primary: Path, splitmirror_session: SessionRunner
) -> None:
    """The final pass copies what the tracker took, which holds a write only once the page
    cache wrote it back: SPLIT writes the primary back (syncfs) instead of freezing it, so a
    HOT_BACKUP session holds no writer, and the write made just before still reaches the mirror
    (without the write-back it stays behind: the file's fingerprint changed, but no sector of it
    was taken)."""
    splitmirror_session.mirror_options = {"provider": "directory", "tracking": "on"}
    database = SqliteLedgerDatabase(tracked_primary)
    database.create_ledger()
    dirty = DirtyAtTheSplit(tracked_primary / "notes")
    hold = Hold(Phase.CHECK, mount=tracked_primary)
    summary = splitmirror_session.run(database, "hot-backup", dirty, hold)
    assert summary.stats["final_sync"]["tracking"] == "tracked"
    assert hold.frozen is False, "HOT_BACKUP on SQLite needs no freeze, nor does the tracker"
    assert summary.blocked_ms == 0.0
    copy = (splitmirror_session.workspace.mirror / "notes").read_bytes()
    assert copy[8192 : 8192 + 4096] == dirty.written, "the write before the split is not in the mirror"


def test_a_hot_backup_engine_that_holds_writers_counts_its_hold(
    ledger: Path, write_config: Any, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``holds_writers``: an engine whose HOT_BACKUP locks some tables all the same (MySQL's
    tables outside InnoDB) has its span counted as in FREEZE."""
    monkeypatch.setattr(SqliteEngine, "holds_writers", lambda self, mode: True)
    hold = Hold(Phase.DISCOVER, ledger=ledger)
    summary = run(untracked(write_config, "hot-backup"), hooks, hold).summary()
    assert summary is not None and summary.window_ms is not None and summary.blocked_ms is not None
    assert HOLD * 1000 <= summary.blocked_ms <= summary.window_ms
