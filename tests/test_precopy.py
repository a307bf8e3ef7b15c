"""The rules of change-tracked passes (`mirror/precopy.py`) with a real write tracker on a loop
device, and a synchronizer that only records what it was asked to copy: what the final pass copies
with request completions recorded (its own take) and without them, as on device-mapper (every range
taken since the last full compare), and that a full compare whose in-flight writes never drained
makes the final pass compare everything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror import tracking
from splitmirror.extents import map_file
from splitmirror.mirror.base import SyncStats
from splitmirror.mirror.precopy import Report, TrackedPasses
from splitmirror.testing.loopfs import device_of
from splitmirror.tracking import WriteTracker


class Recording:
    """A synchronizer that copies nothing and remembers each pass: "full" or its byte ranges."""

    def __init__(self) -> None:
        self.passes: list[str | list[tuple[int, int]]] = []

    def full(self, report: Report) -> SyncStats:
        self.passes.append("full")
        return SyncStats()

    def delta(self, ranges: list[tuple[int, int]], report: Report) -> SyncStats:
        self.passes.append(sorted(ranges))
        return SyncStats()

    def finish(self) -> None:
        pass


@pytest.fixture
def disk(tracked_disk: Path) -> Path:
    return tracked_disk


def ignore(done: int, total: int | None) -> None:
    pass


def written(path: Path, size: int = 1 << 20) -> list[tuple[int, int]]:
    """Write ``size`` bytes to ``path``, fsynced; their places on the device."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        os.fsync(f.fileno())
    return [(e.physical, e.length) for e in map_file(path).extents]


def copied(passes: list[str | list[tuple[int, int]]], where: list[tuple[int, int]]) -> bool:
    """Whether the last pass copied every byte of ``where``."""
    ranges = passes[-1]
    assert isinstance(ranges, list), passes[-1]
    return all(
        any(start <= offset and offset + length <= start + count for start, count in ranges)
        for offset, length in where
    )


def tracked_passes(disk: Path, monkeypatch: pytest.MonkeyPatch, completions: bool) -> TrackedPasses:
    monkeypatch.setattr(tracking, "RECORD_COMPLETIONS", completions)
    tracker = WriteTracker(device_of(disk)).__enter__()
    return TrackedPasses(Recording(), tracker, passes=4, budget=60)


@pytest.mark.parametrize("completions", [True, False], ids=["request-completions", "queued-only"])
def test_what_the_final_pass_copies(disk: Path, monkeypatch: pytest.MonkeyPatch, completions: bool) -> None:
    passes = tracked_passes(disk, monkeypatch, completions)
    record = passes.sync
    assert isinstance(record, Recording)
    try:
        early = written(disk / "early")  # taken by the first pre-copy pass
        stats = passes.bulk(ignore)
        assert record.passes[0] == "full" and stats.tracking == "tracked"
        assert any(isinstance(p, list) and p for p in record.passes[1:]), record.passes
        late = written(disk / "late")
        final = passes.final(ignore)
    finally:
        passes.close()
    assert final.tracking == "tracked"
    assert copied(record.passes, late)
    # Without completions a write taken early may have been in flight when its pass read it:
    # the final pass, with nothing in flight, copies it again.  With them, it need not.
    assert copied(record.passes, early) is not completions


def test_a_full_compare_that_never_drained_makes_the_final_pass_compare_everything(
    disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WriteTracker, "drain", lambda self, timeout=1.0: False)
    passes = tracked_passes(disk, monkeypatch, completions=False)
    try:
        passes.bulk(ignore)
        final = passes.final(ignore)
    finally:
        passes.close()
    assert passes.sync.passes[-1] == "full"  # type: ignore[attr-defined]
    assert final.tracking == "writes stayed in flight before a full compare: compared everything"
