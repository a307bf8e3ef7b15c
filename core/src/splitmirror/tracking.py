"""Change-block tracking: every write to a block device, recorded while the database runs.

A mirror's final pass inside the window should copy what changed since the previous pass, not
read the whole device.  Hardware mirrors track dirty blocks; this does it in user space with the
kernel's ``block:block_bio_queue`` tracepoint, in a private tracing instance::

    /sys/kernel/tracing/instances/splitmirror-<pid>-<n>/
        buffer_size_kb                       per-CPU ring buffer, sized for the write rate
        events/block/block_bio_queue/filter  dev == (major << 20) | minor
        trace_pipe                           read by a thread: "7,0 WS 17410 + 586 [python]"
        trace_marker                         written by take(): everything before it was read
        per_cpu/cpu*/stats                   "overrun" / "dropped events": events were lost

Every bio queued for the device is recorded as a sector range if it changes data (its ``rwbs``
holds W, D, E or Z: write, discard, secure erase, write zeroes).  :meth:`WriteTracker.take`
writes a marker and waits until the reader has seen it, so every write submitted before the
call is in what it returns: called with the filesystem frozen (FIFREEZE waits for writeback),
it returns everything up to the freeze.  When the ring buffer overran in between, the result
says ``lost``, and the caller must fall back to a full compare.

The instance is removed when the tracker stops, on every path; one left by a killed process is
removed by the watchdog or, failing that, by the next tracker (its pid is in its name).
Mounting tracefs and creating instances need root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import os
import re
import select
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

TRACEFS = Path("/sys/kernel/tracing")
PREFIX = "splitmirror-"
EVENT = Path("events/block/block_bio_queue")
SECTOR = 512
#: Per-CPU ring buffer by default: about 100,000 events per CPU between two reads.
DEFAULT_BUFFER_KB = 8192
_EVENT_LINE = re.compile(rb"block_bio_queue: (\d+),(\d+) (\S+) (\d+) \+ (\d+)")
_CHANGES = frozenset(b"WDEZ")
_names = itertools.count()


class TrackingUnavailable(Exception):
    """Tracking cannot run here; the message says why, in one sentence."""


@dataclasses.dataclass
class Dirty:
    """What :meth:`WriteTracker.take` hands over: sector ranges written since the last take."""

    ranges: list[tuple[int, int]]  # (first sector, sector count), relative to the device
    events: int
    lost: bool  # the ring buffer overran: ranges are incomplete

    @property
    def bytes(self) -> int:
        return sum(count for _start, count in merge(self.ranges)) * SECTOR

    def chunks(self, chunk: int) -> list[int]:
        """The indices of the ``chunk``-byte chunks these ranges touch, sorted."""
        touched: set[int] = set()
        for start, count in merge(self.ranges):
            first, last = start * SECTOR // chunk, ((start + count) * SECTOR - 1) // chunk
            touched.update(range(first, last + 1))
        return sorted(touched)


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping and adjacent ranges as one, sorted."""
    merged: list[tuple[int, int]] = []
    for start, count in sorted(ranges):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            first, length = merged[-1]
            merged[-1] = (first, max(first + length, start + count) - first)
        elif count > 0:
            merged.append((start, count))
    return merged


def ensure_tracefs() -> Path:
    """The tracing filesystem, mounted if it is not (root only)."""
    if (TRACEFS / "instances").is_dir():
        return TRACEFS
    if os.geteuid() != 0:
        raise TrackingUnavailable("change tracking needs root (the kernel's tracing filesystem)")
    mounted = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0 or not (TRACEFS / "instances").is_dir():
        why = mounted.stderr.strip() or "no tracefs in this kernel"
        raise TrackingUnavailable(f"the tracing filesystem cannot be mounted at {TRACEFS} ({why})")
    return TRACEFS


def unavailable() -> str | None:
    """Why change tracking cannot run here, or None when it can (nothing is left behind)."""
    if os.geteuid() != 0:
        return "change tracking needs root (the kernel's tracing filesystem)"
    try:
        root = ensure_tracefs()
    except TrackingUnavailable as why:
        return str(why)
    if not (root / EVENT).is_dir():
        return "this kernel has no block:block_bio_queue tracepoint"
    return None


def _device_numbers(device: Path) -> tuple[int, int, int, int]:
    """(major, minor) to filter on and the partition's first sector and length in sectors:
    a partition's bios are traced against its whole disk."""
    info = os.stat(device)
    major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
    sysfs = Path(f"/sys/dev/block/{major}:{minor}")
    if (sysfs / "partition").exists():
        start = int((sysfs / "start").read_text())
        length = int((sysfs / "size").read_text())
        parent = (sysfs.resolve().parent / "dev").read_text().strip()
        pmajor, pminor = (int(n) for n in parent.split(":"))
        return pmajor, pminor, start, length
    return major, minor, 0, -1


def _alive(pid: int) -> bool:
    """A running process (a zombie, killed but not yet reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def left_behind(root: Path = TRACEFS) -> list[str]:
    """Instances of ours that belong to no running session: this process's (a test asking after
    its sessions ended) and those of processes that are gone.  Other running sessions' instances
    are theirs."""
    instances = root / "instances"
    if not instances.is_dir():
        return []
    found = []
    for instance in instances.glob(PREFIX + "*"):
        pid = instance.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            found.append(instance.name)
    return sorted(found)


def remove_stale_instances(root: Path = TRACEFS) -> list[str]:
    """Instances of ours whose process is gone (killed before it could remove them)."""
    removed = []
    for instance in (root / "instances").glob(PREFIX + "*"):
        pid = instance.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            remove_instance(instance)
            removed.append(instance.name)
    return removed


def remove_instance(instance: Path) -> None:
    """Stop tracing in ``instance`` and remove it; nothing if it is already gone."""
    with contextlib.suppress(FileNotFoundError):
        (instance / "tracing_on").write_text("0")
        (instance / EVENT / "enable").write_text("0")
    for attempt in range(50):  # EBUSY while a reader still has trace_pipe open
        try:
            instance.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or attempt == 49:
                raise
            time.sleep(0.02)


class WriteTracker:
    """Records the writes to ``device`` from entering until leaving (see the module docstring)."""

    def __init__(self, device: Path, *, buffer_kb: int = DEFAULT_BUFFER_KB) -> None:
        self.device = device
        self.buffer_kb = buffer_kb
        self.instance: Path | None = None
        self._major, self._minor, self._offset, self._length = _device_numbers(device)
        self._lock = threading.Lock()
        self._ranges: list[tuple[int, int]] = []
        self._events = 0
        self._lost_seen = 0
        self._markers: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        #: Set, the reader stops reading (the ring buffer fills): for tests of lost events.
        self.hold_reading = threading.Event()
        self._reader: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> WriteTracker:
        root = ensure_tracefs()
        remove_stale_instances(root)
        self.instance = root / "instances" / f"{PREFIX}{os.getpid()}-{next(_names)}"
        try:
            self.instance.mkdir()
            (self.instance / "buffer_size_kb").write_text(str(self.buffer_kb))
            event = self.instance / EVENT
            if not event.is_dir():
                raise TrackingUnavailable("this kernel has no block:block_bio_queue tracepoint")
            (event / "filter").write_text(f"dev == {(self._major << 20) | self._minor}")
            (event / "enable").write_text("1")
            (self.instance / "tracing_on").write_text("1")
            self._pipe = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except BaseException:
            self._teardown()
            raise
        self._reader = threading.Thread(target=self._read, name="write-tracker", daemon=True)
        self._reader.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._teardown()

    def _teardown(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._pipe)
        if self.instance is not None:
            remove_instance(self.instance)
            self.instance = None

    def _read(self) -> None:
        pending = b""
        try:
            while not self._stop.is_set():
                if self.hold_reading.is_set():
                    self._stop.wait(0.01)
                    continue
                ready, _w, _x = select.select([self._pipe], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data = os.read(self._pipe, 1 << 20)
                except BlockingIOError:
                    continue
                *lines, pending = (pending + data).split(b"\n")
                self._parse(lines)
        except BaseException as error:  # noqa: BLE001 - take() re-raises it in the session
            self._error = error

    def _parse(self, lines: list[bytes]) -> None:
        ranges = []
        marks = []
        for line in lines:
            match = _EVENT_LINE.search(line)
            if match is None:
                if b"tracing_mark_write: " in line:
                    marks.append(line.rsplit(b"tracing_mark_write: ", 1)[1].strip().decode())
                continue
            rwbs, sector, count = match.group(3), int(match.group(4)), int(match.group(5))
            if count and _CHANGES.intersection(rwbs):
                ranges.append((sector - self._offset, count))
        with self._lock:
            self._ranges.extend(ranges)
            self._events += len(ranges)
            for mark in marks:
                if mark in self._markers:
                    self._markers[mark].set()

    def _lost(self) -> int:
        """Events the ring buffers overran or dropped so far, over every CPU."""
        assert self.instance is not None
        total = 0
        for stats in (self.instance / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                name, _colon, value = line.partition(":")
                if name.strip() in ("overrun", "dropped events"):
                    total += int(value.split()[0])
        return total

    def take(self, timeout: float = 10.0) -> Dirty:
        """Every write queued before this call and not yet taken; see the module docstring."""
        if self.instance is None:
            raise RuntimeError("take() outside the tracker's with block")
        mark = f"splitmirror-take-{os.getpid()}-{next(_names)}"
        seen = threading.Event()
        with self._lock:
            self._markers[mark] = seen
        (self.instance / "trace_marker").write_text(mark)
        if not seen.wait(timeout):
            raise TrackingUnavailable(f"the write tracker did not keep up with {self.device} ({timeout:g} s)")
        if self._error is not None:
            raise self._error
        lost = self._lost()
        with self._lock:
            del self._markers[mark]
            ranges, self._ranges = self._ranges, []
            events, self._events = self._events, 0
        dirty = Dirty(self._clip(ranges), events, lost > self._lost_seen)
        self._lost_seen = lost
        return dirty

    def _clip(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """A partition's ranges within the partition (bios of its neighbours are not ours)."""
        if self._length < 0:
            return ranges
        clipped = []
        for start, count in ranges:
            first, last = max(start, 0), min(start + count, self._length)
            if last > first:
                clipped.append((first, last - first))
        return clipped
