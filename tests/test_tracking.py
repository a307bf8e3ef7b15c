"""The write tracker on a real loop device: every write between two takes is reported (checked
against FIEMAP's placement of the data), lost events are noticed, and the tracing instance is
gone afterwards, whatever happened."""

from __future__ import annotations

import mmap
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from splitmirror import tracking
from splitmirror.extents import Extent, map_file
from splitmirror.testing.loopfs import device_of, loop_device, loop_filesystem_unavailable
from splitmirror.tracking import (
    PREFIX,
    SECTOR,
    TRACEFS,
    Dirty,
    WriteTracker,
    left_behind,
    merge,
    remove_stale_instances,
    unavailable,
)


def ours() -> list[str]:
    return left_behind()


@pytest.fixture
def disk(tracked_disk: Path) -> Path:
    return tracked_disk


def written(path: Path, size: int) -> list[Extent]:
    """``size`` random bytes written to ``path`` and fsynced; where FIEMAP placed them."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        os.fsync(f.fileno())
    return list(map_file(path).extents)


def covers(dirty: Dirty, extents: list[Extent]) -> bool:
    """Whether the dirty ranges cover every one of ``extents``."""
    return all(covered(dirty, extent.physical, extent.length) for extent in extents)


def covered(dirty: Dirty, offset: int, length: int) -> bool:
    """Whether the dirty ranges cover device bytes [offset, offset + length)."""
    for start, count in merge(dirty.ranges):
        if start * SECTOR <= offset and offset + length <= (start + count) * SECTOR:
            return True
    return False


def test_every_write_between_takes_is_reported(disk: Path) -> None:
    device = device_of(disk)
    with WriteTracker(device) as tracker:
        first = tracker.take()
        extents = written(disk / "data", 3 << 20)
        dirty = tracker.take()
        assert covers(dirty, extents), (extents, dirty.ranges[:5])
        assert not dirty.lost and dirty.events > 0 and dirty.bytes >= 3 << 20
        assert tracker.take().bytes < dirty.bytes, "what was taken is not reported again"
    assert first.bytes < 1 << 20


def inflight_writes(device: Path) -> int:
    """Write requests the disk has not completed (``/sys/block/<disk>/inflight``)."""
    return int((Path("/sys/class/block") / device.name / "inflight").read_text().split()[1])


@pytest.mark.parametrize("completions", [True, False], ids=["request-completions", "queued-only"])
def test_a_write_in_flight_at_a_take_is_in_the_next_one(
    disk: Path, completions: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The property the final pass relies on when takes are ``settled``: a write queued before a
    take but still in flight (a pass reading its range then may get the old data) is in the next
    take.  The write is held in flight by freezing the filesystem that holds the loop device's
    image: the loop driver's write to it waits for the thaw.  Recording queued bios only (as on
    a bio-based disk), the next take misses it, and the take says it is not settled."""
    monkeypatch.setattr(tracking, "RECORD_COMPLETIONS", completions)
    image = disk / "inner.img"
    with open(image, "wb") as f:
        f.write(bytes(16 << 20))
        os.fsync(f.fileno())
    offset, length = 4 << 20, 64 << 10
    with loop_device(image) as device, WriteTracker(device) as tracker:
        tracker.take()
        buffer = mmap.mmap(-1, length)  # page-aligned, for O_DIRECT
        buffer.write(os.urandom(length))
        fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
        writer = threading.Thread(target=os.pwrite, args=(fd, buffer, offset))
        subprocess.run(["fsfreeze", "-f", str(disk)], check=True)
        try:
            writer.start()
            deadline = time.monotonic() + 10
            while inflight_writes(device) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert inflight_writes(device) > 0, "the write never got in flight"
            queued = tracker.take()
            assert not tracker.drain(0.2), "drained with a write in flight"
        finally:
            subprocess.run(["fsfreeze", "-u", str(disk)], check=True)
            writer.join()
            os.close(fd)
        assert tracker.drain()
        after = tracker.take()
    assert covered(queued, offset, length), "the write was not recorded when it was queued"
    assert queued.settled is after.settled is completions
    assert covered(after, offset, length) is completions


def test_a_take_holds_nothing_written_after_its_marker(disk: Path) -> None:
    """The reader may read a take's marker and later writes in one batch: those writes belong to
    the next take (a pass reading right after this take may have read their ranges too early)."""
    with WriteTracker(device_of(disk)) as tracker:
        tracker.take()
        tracker.hold()
        taken: list[Dirty] = []
        taker = threading.Thread(target=lambda: taken.append(tracker.take()))
        taker.start()
        time.sleep(0.2)  # the marker is written; the reader is held, so the take waits
        extents = written(disk / "late", 1 << 20)
        tracker.hold_reading.clear()
        taker.join()
        after = tracker.take()
    assert extents and not any(covered(taken[0], e.physical, e.length) for e in extents)
    assert covers(after, extents)


def test_zeroing_and_discarding_are_writes(disk: Path) -> None:
    """BLKZEROOUT (write zeroes: ``N`` in the trace on kernels that do not name it) and BLKDISCARD
    change what the device reads back, so both are recorded."""
    image = disk / "zeroed.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    with loop_device(image) as device, WriteTracker(device) as tracker:
        tracker.take()
        subprocess.run(["blkdiscard", "-z", "-o", str(1 << 20), "-l", str(1 << 20), str(device)], check=True)
        zeroed = tracker.take()
        subprocess.run(["blkdiscard", "-o", str(4 << 20), "-l", str(1 << 20), str(device)], check=True)
        discarded = tracker.take()
    assert covered(zeroed, 1 << 20, 1 << 20), zeroed.ranges
    assert covered(discarded, 4 << 20, 1 << 20), discarded.ranges


def test_an_overrun_is_reported_as_lost(disk: Path) -> None:
    with WriteTracker(device_of(disk), buffer_kb=4) as tracker:
        tracker.hold()  # the reader stops: the 4 KiB buffers fill and wrap
        with open(disk / "many", "wb") as f:
            for i in range(400):
                os.pwrite(f.fileno(), os.urandom(4096), i * 8192)
                os.fsync(f.fileno())
        tracker.hold_reading.clear()
        assert tracker.take().lost
        assert not tracker.take().lost, "the next take starts clean"


def test_the_instance_is_removed_on_failure_and_stale_ones_are_cleared(disk: Path) -> None:
    with pytest.raises(RuntimeError), WriteTracker(device_of(disk)):
        assert len(ours()) == 1
        raise RuntimeError("boom")
    assert not ours()
    stale = TRACEFS / "instances" / f"{PREFIX}999999999-0"  # no such pid
    stale.mkdir()
    assert remove_stale_instances() == [stale.name] and not stale.exists()


def test_chunks_cover_the_ranges() -> None:
    dirty = Dirty([(0, 1), (2047, 2), (8192, 8)], events=3, lost=False)
    assert dirty.chunks(1 << 20) == [0, 1, 4]
    assert merge([(10, 5), (0, 10), (30, 1)]) == [(0, 15), (30, 1)]


def mbr(path: Path, size: int, start: int = 2048) -> None:
    """An image of ``size`` bytes with an MBR holding one Linux partition from sector ``start``."""
    sectors = size // SECTOR - start
    entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + start.to_bytes(4, "little") + sectors.to_bytes(4, "little")
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")


def test_a_partition_is_traced_on_its_disk_and_shifted_back(tmp_path: Path) -> None:
    """A partition's bios reach the tracepoint as its whole disk's, at the disk's sectors; the
    tracker filters on the disk and gives back sectors of the partition (where FIEMAP counts)."""
    reason = loop_filesystem_unavailable() or unavailable()
    if reason:
        pytest.skip(reason)
    image, mount = tmp_path / "disk.img", tmp_path / "mnt"
    mbr(image, 64 << 20)
    disk = subprocess.run(
        ["losetup", "-f", "-P", "--show", str(image)], capture_output=True, text=True, check=True
    )
    loop = disk.stdout.strip()
    made: list[Path] = []
    try:
        partition = Path(f"{loop}p1")
        sysfs = Path("/sys/class/block") / partition.name
        for _ in range(100):  # the kernel scans the table when the device is attached
            if sysfs.exists():
                break
            time.sleep(0.02)
        else:  # no partition scanning here: add the table's partitions by hand (BLKPG)
            subprocess.run(["partx", "-a", loop], capture_output=True, check=False)
        if not sysfs.exists():
            pytest.skip("the kernel made no partition of a partitioned loop device here, nor with partx -a")
        if not partition.exists():  # no udev: make the node from what sysfs says
            major, minor = (int(n) for n in (sysfs / "dev").read_text().split(":"))
            os.mknod(partition, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
            made.append(partition)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(partition)], check=True)
        mount.mkdir()
        subprocess.run(["mount", str(partition), str(mount)], check=True)
        try:
            with WriteTracker(partition) as tracker:
                tracker.take()
                extents = written(mount / "data", 2 << 20)
                dirty = tracker.take()
            assert covers(dirty, extents), (extents, dirty.ranges[:5])
            assert all(start + count <= (62 << 20) // SECTOR for start, count in dirty.ranges)
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
        for node in made:
            node.unlink()


def test_an_instance_being_removed_by_another_process_is_left_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead session's instance is removed by its watchdog and by the next tracker, maybe at
    once; tracefs then answers ENODEV for the files of the instance going away (seen in CI)."""
    import errno

    from splitmirror import tracking

    instance = tmp_path / "splitmirror-1-0"
    instance.mkdir()

    def going(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError(errno.ENODEV, "No such device", str(self))

    monkeypatch.setattr(Path, "write_text", going)
    tracking.remove_instance(instance)
    assert not instance.exists()
