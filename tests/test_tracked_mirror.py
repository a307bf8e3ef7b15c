"""Change-block tracking on the block mirror, under a random-write workload (a SQLite ledger
being written, and random in-place overwrites of a large preallocated file): the mirror equals
the primary device byte for byte at the split, the final pass copies only what was written, a
forced ring-buffer overrun falls back to the full compare and stays exact, and no tracing
instance is left."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from splitmirror import impl, tracking
from splitmirror.mirror.blocksync import device_size
from splitmirror.phases import Phase
from splitmirror.session import Session
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase
from splitmirror.testing.loopfs import device_digest, device_of, loop_filesystem, loop_filesystem_unavailable
from splitmirror.tracking import left_behind, unavailable

SIZE = 256 << 20


class Overwriter:
    """Random 8 KiB overwrites in place, fsynced every 16th, from a thread, until stopped;
    :meth:`pause` holds it between two writes until :meth:`resume`."""

    def __init__(self, path: Path, size: int) -> None:
        with open(path, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)
            f.write(os.urandom(size))
            os.fsync(f.fileno())
        self.path, self.size, self.writes = path, size, 0
        self._stop = threading.Event()
        self._gate = threading.Lock()
        self._paused = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(8)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            while not self._stop.is_set():
                with self._gate:
                    os.pwrite(fd, os.urandom(8192), rng.randrange(0, self.size // 8192) * 8192)
                    self.writes += 1
                    if self.writes % 16 == 0:
                        os.fsync(fd)
        finally:
            os.close(fd)

    def pause(self) -> None:
        """Hold the writer between two writes, then leave one 8 KiB write in the page cache
        only (never fsynced): the final pass must have it without a freeze."""
        self._gate.acquire()
        self._paused = True
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, os.urandom(8192), 0)
        finally:
            os.close(fd)

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._gate.release()

    def __enter__(self) -> Overwriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.resume()  # a session that failed before UNQUIESCE left it paused
        self._thread.join()


class AtTheSplit:
    """In CHECK (the primary still frozen): is the mirror the primary, byte for byte?"""

    def __init__(self, device: Path, image: Path) -> None:
        self.device, self.image = device, image
        self.equal: bool | None = None

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.CHECK:
            size = device_size(self.device)
            self.equal = device_digest(self.device, size) == device_digest(self.image, size)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    reason = loop_filesystem_unavailable() or unavailable()
    if reason:
        pytest.skip(reason)
    (tmp_path / "disk").mkdir()
    with loop_filesystem(tmp_path / "disk", SIZE) as mount:
        yield mount
    assert not left_behind(), "a tracing instance was left"


class Starve:
    """Stops the tracker's reader from QUIESCE (for half a second of writes) until SPLIT: its
    small ring buffer overruns, and the final take must say so."""

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase in (Phase.QUIESCE, Phase.SPLIT):
            tracker = session.mirror._passes.tracker  # type: ignore[union-attr]
            if phase is Phase.QUIESCE:
                tracker.hold()
                threading.Event().wait(0.5)
            else:
                tracker.hold_reading.clear()


class StillFromSplitToCheck:
    """Pauses the hot file's writer from SPLIT until CHECK has compared: the directory mirror
    does not freeze the primary in HOT_BACKUP (:class:`FilesAtTheSplit`), so without the pause
    the file would differ by whatever was written after the split."""

    def __init__(self, load: Overwriter) -> None:
        self.load = load

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.SPLIT:
            self.load.pause()  # what it wrote before, some of it only in the page cache, counts
        elif phase is Phase.UNQUIESCE:
            self.load.resume()


def loaded(disk: Path, runner: SessionRunner, mode: str, *observers: object, still: bool = False) -> Any:
    """A session of ``mode`` under the workload: the ledger, and the hot file overwritten
    (``still``: not from SPLIT to CHECK)."""
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    with Overwriter(disk / "hot", 64 << 20) as load:
        summary = runner.run(database, mode, *observers, *([StillFromSplitToCheck(load)] if still else []))
        assert load.writes > 100, "the workload did not run"
    return summary


def session(disk: Path, runner: SessionRunner, *observers: object, **options: Any) -> tuple[Any, AtTheSplit]:
    runner.mirror_options = {"provider": "block", **options}
    check = AtTheSplit(device_of(disk), runner.workspace.mirror)
    return loaded(disk, runner, "freeze", check, *observers), check


@pytest.mark.parametrize("completions", [True, False], ids=["request-completions", "queued-only"])
def test_with_tracking_the_final_pass_copies_only_what_was_written(
    disk: Path, splitmirror_session: SessionRunner, completions: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of not missing a write in flight: the next take holds its completion (a disk
    with request completions, as here), or, with queued bios only (as on device-mapper), the
    final pass copies again every range taken since the bulk pass."""
    monkeypatch.setattr(tracking, "RECORD_COMPLETIONS", completions)
    summary, check = session(disk, splitmirror_session)
    assert check.equal, "the mirror differs from the primary at the split"
    bulk, final = summary.stats["bulk_sync"], summary.stats["final_sync"]
    assert bulk["tracking"] == "tracked" and final["tracking"] == "tracked", (bulk, final)
    assert len(bulk["passes"]) >= 2, "pre-copy ran after the bulk pass"
    print(f"final pass read {final['bytes_read'] >> 20} MiB of a {SIZE >> 20} MiB device")
    assert final["bytes_read"] < SIZE // 2, "the final pass read the delta, not the device"


def test_a_lost_event_falls_back_to_the_full_compare_and_stays_exact(
    disk: Path, splitmirror_session: SessionRunner
) -> None:
    summary, check = session(disk, splitmirror_session, Starve(), tracking_buffer="4KiB")
    assert check.equal, "the fallback must keep the mirror exact"
    final = summary.stats["final_sync"]
    assert final["tracking"] == "lost events: compared everything", final
    assert final["bytes_read"] >= SIZE


def test_without_tracking_the_final_pass_compares_the_whole_device(
    disk: Path, splitmirror_session: SessionRunner
) -> None:
    summary, check = session(disk, splitmirror_session, tracking="off")
    assert check.equal
    final = summary.stats["final_sync"]
    assert final["tracking"] == 'untracked: tracking = "off"' and final["bytes_read"] >= SIZE


@pytest.mark.parametrize(
    ("tracking", "said"),
    [("auto", "change tracking: on (/dev/loop"), ("off", 'change tracking: off (tracking = "off")')],
)
def test_check_says_whether_tracking_will_be_used(
    tracking: str, said: str, disk: Path, splitmirror_session: SessionRunner
) -> None:
    from click.testing import CliRunner

    from splitmirror.cli import main

    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    splitmirror_session.mirror_options = {"provider": "block", "tracking": tracking}
    config = splitmirror_session.config(database, "freeze")
    result = CliRunner().invoke(main, ["check", str(config.source)])
    assert result.exit_code == 0 and said in result.output, result.output


NO_TRACEPOINT = "this kernel has no block:block_bio_queue tracepoint"


@pytest.fixture
def no_tracepoint(disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without the tracepoint (what tracefs offers is looked up by this path), once
    the disk fixture found tracking available."""
    monkeypatch.setattr(tracking, "EVENT", Path("events/block/splitmirror_no_such_event"))


def test_where_tracking_is_unavailable_one_line_says_so_and_everything_is_compared(
    no_tracepoint: None, disk: Path, splitmirror_session: SessionRunner, caplog: pytest.LogCaptureFixture
) -> None:
    from click.testing import CliRunner

    from splitmirror.cli import main

    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    splitmirror_session.mirror_options = {"provider": "block"}
    config = splitmirror_session.config(database, "freeze")
    said = CliRunner().invoke(main, ["check", str(config.source)])
    assert said.exit_code == 0 and f"change tracking: off ({NO_TRACEPOINT})" in said.output, said.output
    summary, check = session(disk, splitmirror_session)
    assert check.equal
    final = summary.stats["final_sync"]
    assert final["tracking"] == f"untracked: {NO_TRACEPOINT}" and final["bytes_read"] >= SIZE
    lines = [r.getMessage() for r in caplog.records if "change tracking is off" in r.getMessage()]
    assert lines == [f"change tracking is off ({NO_TRACEPOINT}): the final pass compares everything"]


def test_tracking_on_where_it_is_unavailable_is_refused_before_anything_happens(
    no_tracepoint: None, disk: Path, splitmirror_session: SessionRunner
) -> None:
    from splitmirror.errors import PreflightError

    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    splitmirror_session.mirror_options = {"provider": "block", "tracking": "on"}
    with pytest.raises(PreflightError, match=f"change tracking is unavailable: {NO_TRACEPOINT}"):
        splitmirror_session.run(database, "freeze")
    assert not splitmirror_session.workspace.mirror.exists(), "the mirror was touched"


def test_without_root_tracking_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking.os, "geteuid", lambda: 1000)
    assert tracking.unavailable() == "change tracking needs root (the kernel's tracing filesystem)"


# -- the directory mirror -------------------------------------------------------------------


class FilesAtTheSplit:
    """In CHECK, the hot file's writer paused since SPLIT started (the tracked directory mirror
    writes the primary back before its final pass, but does not freeze it in HOT_BACKUP): does
    every file of the mirror hold what the primary's does?"""

    def __init__(self, primary: Path, mirror: Path) -> None:
        self.primary, self.mirror = primary, mirror
        self.different: list[str] | None = None

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.CHECK:
            names = sorted(p.relative_to(self.primary) for p in self.primary.rglob("*") if p.is_file())
            self.different = [
                str(name)
                for name in names
                if "lost+found" not in str(name)
                and (self.mirror / name).read_bytes() != (self.primary / name).read_bytes()
            ]


def directory_session(
    disk: Path, runner: SessionRunner, *observers: object, **options: Any
) -> tuple[Any, FilesAtTheSplit]:
    runner.mirror_options = {"provider": "directory", "tracking": "on", **options}
    check = FilesAtTheSplit(disk, runner.workspace.mirror)
    return loaded(disk, runner, "hot-backup", check, *observers, still=True), check


@pytest.mark.parametrize("completions", [True, False], ids=["request-completions", "queued-only"])
def test_a_tracked_directory_mirror_copies_only_the_written_ranges(
    disk: Path, splitmirror_session: SessionRunner, completions: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HOT_BACKUP on SQLite needs no freeze: the primary is written back, never frozen."""
    monkeypatch.setattr(tracking, "RECORD_COMPLETIONS", completions)
    summary, check = directory_session(disk, splitmirror_session)
    assert check.different == [], f"the mirror differs from the primary at the split: {check.different}"
    assert summary.blocked_ms == 0.0, "the tracked directory mirror froze the primary"
    bulk, final = summary.stats["bulk_sync"], summary.stats["final_sync"]
    assert bulk["tracking"] == "tracked" and final["tracking"] == "tracked", (bulk, final)
    assert final["bytes_read"] < 16 << 20, "the final pass read the written ranges, not the 64 MiB file"


def test_a_tracked_directory_mirror_falls_back_when_events_are_lost(
    disk: Path, splitmirror_session: SessionRunner
) -> None:
    summary, check = directory_session(disk, splitmirror_session, Starve(), tracking_buffer="4KiB")
    assert check.different == []
    assert summary.stats["final_sync"]["tracking"] == "lost events: compared everything"


def test_directory_tracking_on_the_root_filesystem_is_refused_when_asked_for(
    splitmirror_session: SessionRunner,
) -> None:
    from splitmirror.errors import PreflightError

    database = SqliteLedgerDatabase(splitmirror_session.workspace.primary)
    database.create_ledger()
    splitmirror_session.mirror_options = {"provider": "directory", "tracking": "on"}
    with pytest.raises(PreflightError, match="change tracking is unavailable: the primary is"):
        splitmirror_session.run(database, "hot-backup")
