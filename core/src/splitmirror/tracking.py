"""Change-block tracking: every write to a block device, recorded while the database runs.

A mirror's final pass inside the window should copy what changed since the previous pass, not
read the whole device.  Hardware mirrors track dirty blocks; this does it in user space with the
kernel's ``block:block_bio_queue`` tracepoint, in a private tracing instance::

    /sys/kernel/tracing/instances/splitmirror-<pid>-<n>/
        buffer_size_kb                       per-CPU ring buffer, sized for the write rate
        events/block/block_bio_queue/filter  dev == (major << 20) | minor
        trace_pipe                           read by a thread: "7,0 WS 17410 + 586 [python]"
        events/block/block_rq_complete/      the same device's completed requests (see below)
        trace_marker                         written by take(): everything before it was read
        per_cpu/cpu*/stats                   "overrun" / "dropped events": events were lost

Every bio queued for the device is recorded as a sector range if it is not a read (its ``rwbs``
has no R: writes, discards, secure erases, and write zeroes, which older kernels print as N;
flushes carry no sectors).  :meth:`WriteTracker.take` writes a marker and waits until the reader
has seen it, and returns what was recorded before the marker: every write submitted before the
call.  Called with the filesystem frozen (FIFREEZE waits for writeback), it returns everything
up to the freeze; called after syncfs, everything written before it.  When the ring buffer
overran in between, the result says ``lost``, and the caller must fall back to a full compare.
The instance's clock is ``mono`` (or ``global``): the pipe merges the per-CPU buffers by
timestamp, so the marker must be ordered against events on every CPU.

A write recorded when it was queued may still be in flight when a pass reads its range just
after the take: the pass may copy the old data, and the next take does not hold that write.  On
a request-based disk (it has ``/sys/block/<disk>/mq``: SCSI, virtio, loop, NVMe without native
multipath) the tracker therefore also records every completed write request
(``block_rq_complete``).  A write completed before take *k*'s marker was on the disk before
pass *k* reads; one completing after it has its completion event in take *k + 1*, so pass
*k + 1* reads it after it landed.  Each take is then enough on its own (``settled``), and so is
a full compare: a write in flight while it reads is in a later take by its completion.

On bio-based devices (device-mapper, md, NVMe multipath heads) there are no request completions:
a take is not ``settled``.  The caller then copies, in the final pass, every range taken since
its last full compare (frozen or written back, nothing before it is in flight), and before a
full compare waits with :meth:`WriteTracker.drain` until the device had no write in flight: a
write queued before the tracker started, or lost with an overrun, has then completed.

The instance is removed when the tracker stops, on every path; one left by a killed process is
removed by the watchdog or, failing that, by the next tracker (its pid is in its name).
Mounting tracefs and creating instances need root.  A tracker mounts tracefs where it is not
mounted, and leaves it mounted; :func:`unavailable`, which ``splitmirror check`` asks, leaves
nothing.
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

from .budget import start_unbudgeted

TRACEFS = Path("/sys/kernel/tracing")
PREFIX = "splitmirror-"
EVENT = Path("events/block/block_bio_queue")
COMPLETION = Path("events/block/block_rq_complete")
SECTOR = 512
#: False: queued bios only, as on a bio-based disk, whatever the disk (for tests of that path).
RECORD_COMPLETIONS = True
#: Per-CPU ring buffer by default: about 100,000 events per CPU between two reads.
DEFAULT_BUFFER_KB = 8192
#: "block_bio_queue: 7,0 WS 17410 + 586 [python]", "block_rq_complete: 7,0 WS () 17410 + 586 ..."
_EVENT_LINE = re.compile(rb"block_(?:bio_queue|rq_complete): \d+,\d+ (\S+) (?:\(.*?\) )?(\d+) \+ (\d+)")
_names = itertools.count()


class TrackingUnavailable(Exception):
    """Tracking cannot run here; the message says why, in one sentence."""


@dataclasses.dataclass
class Dirty:
    """What :meth:`WriteTracker.take` hands over: sector ranges written since the last take."""

    ranges: list[tuple[int, int]]  # (first sector, sector count), of the traced device or partition
    events: int
    lost: bool  # the ring buffer overran: ranges are incomplete
    #: Completions were recorded too: no write in these ranges can be missed by a pass reading
    #: them after the take.  When False the next pass must copy these ranges again.
    settled: bool = False

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


NEEDS_ROOT = "change tracking needs root (the kernel's tracing filesystem)"
NO_TRACEPOINT = "this kernel has no block:block_bio_queue tracepoint"


def _cannot_mount(stderr: str) -> str:
    why = stderr.strip() or "no tracefs in this kernel"
    return f"the tracing filesystem cannot be mounted at {TRACEFS} ({why})"


def ensure_tracefs() -> Path:
    """The tracing filesystem, mounted if it is not (root only); a tracker's, left mounted."""
    if (TRACEFS / "instances").is_dir():
        return TRACEFS
    if os.geteuid() != 0:
        raise TrackingUnavailable(NEEDS_ROOT)
    mounted = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0 or not (TRACEFS / "instances").is_dir():
        raise TrackingUnavailable(_cannot_mount(mounted.stderr))
    return TRACEFS


#: Run by :func:`unavailable` in a mount namespace of its own: mount tracefs as
#: :func:`ensure_tracefs` would (exit 2 if it cannot), then look for the event (exit 3 if none).
_PROBE = 'mount -t tracefs nodev "$1" && test -d "$1/instances" || exit 2; test -d "$1/$2" || exit 3'
_NAMESPACE = ["unshare", "--mount", "--propagation", "private"]


def unavailable() -> str | None:
    """Why change tracking cannot run here, or None when it can.  Changes nothing (``splitmirror
    check`` asks): where tracefs is not mounted, it is mounted to look only in a private mount
    namespace (``unshare``), whose mounts go when its one process exits, so no mount is left
    behind and none that another session's tracker finds can be taken away under it.  Where
    namespaces are refused, it mounts tracefs as a tracker would, rather than answer wrongly."""
    if os.geteuid() != 0:
        return NEEDS_ROOT
    if (TRACEFS / "instances").is_dir():
        return None if (TRACEFS / EVENT).is_dir() else NO_TRACEPOINT
    try:
        probe = subprocess.run(
            [*_NAMESPACE, "sh", "-c", _PROBE, "sh", str(TRACEFS), str(EVENT)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:  # no unshare (util-linux, as mount and findmnt)
        return _looked_at_by_mounting()
    if probe.returncode == 3:
        return NO_TRACEPOINT
    if probe.returncode == 2:
        return _cannot_mount(probe.stderr)
    if probe.returncode:  # unshare refused (a sandbox forbidding namespaces, not mounts)
        return _looked_at_by_mounting()
    return None


def _looked_at_by_mounting() -> str | None:
    """Where no private namespace can be had, ask as a tracker would: mount tracefs (left
    mounted, as a tracker leaves it), then look for the event."""
    try:
        root = ensure_tracefs()
    except TrackingUnavailable as why:
        return str(why)
    return None if (root / EVENT).is_dir() else NO_TRACEPOINT


@dataclasses.dataclass(frozen=True)
class _Disk:
    """What to filter on: a partition's bios and requests are traced against its whole disk."""

    major: int
    minor: int
    offset: int  # the partition's first sector on the disk (0 for a whole disk)
    length: int  # the partition's length in sectors (-1 for a whole disk)
    request_based: bool  # blk-mq: its write requests complete through block_rq_complete
    sysfs: Path  # the whole disk's directory in sysfs

    @property
    def dev(self) -> int:
        """The kernel's dev_t, as the tracepoints' ``dev`` field holds it."""
        return (self.major << 20) | self.minor


def _disk_of(device: Path) -> _Disk:
    info = os.stat(device)
    major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
    sysfs = Path(f"/sys/dev/block/{major}:{minor}").resolve()
    offset, length = 0, -1
    if (sysfs / "partition").exists():
        offset, length = int((sysfs / "start").read_text()), int((sysfs / "size").read_text())
        sysfs = sysfs.parent
        major, minor = (int(n) for n in (sysfs / "dev").read_text().split(":"))
    return _Disk(major, minor, offset, length, (sysfs / "mq").is_dir(), sysfs)


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


def remove_stale_instances(root: Path = TRACEFS, *, dead: int | None = None) -> list[str]:
    """Instances of ours whose process is gone (killed before it could remove them), and those
    of ``dead``: a process known to be dying (its pipe closed before it became a zombie)."""
    removed = []
    for instance in (root / "instances").glob(PREFIX + "*"):
        pid = instance.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and (int(pid) == dead or not _alive(int(pid))):
            remove_instance(instance)
            removed.append(instance.name)
    return removed


def remove_instance(instance: Path) -> None:
    """Stop tracing in ``instance`` and remove it; nothing if it is already gone, or going: a
    dead process's instance may be removed by its watchdog and by the next tracker at once, and
    tracefs answers ENODEV for the files of an instance being removed."""
    try:
        (instance / "tracing_on").write_text("0")
        (instance / EVENT / "enable").write_text("0")
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENODEV):
            raise
    for attempt in range(50):  # EBUSY while a reader still has trace_pipe open
        try:
            instance.rmdir()
            return
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as error:
            if error.errno == errno.ENODEV:
                return
            if error.errno != errno.EBUSY or attempt == 49:
                raise
            time.sleep(0.02)


class WriteTracker:
    """Records the writes to ``device`` from entering until leaving (see the module docstring)."""

    def __init__(self, device: Path, *, buffer_kb: int = DEFAULT_BUFFER_KB) -> None:
        self.device = device
        self.buffer_kb = buffer_kb
        self.instance: Path | None = None
        self._disk = _disk_of(device)
        #: Completed requests are recorded too (see the module docstring); known once entered.
        self.completions = False
        self._lock = threading.Lock()
        self._ranges: list[tuple[int, int]] = []
        self._lost_seen = 0
        self._markers: dict[str, threading.Event] = {}
        self._cuts: dict[str, int] = {}  # marker -> how many of _ranges were recorded before it
        self._stop = threading.Event()
        #: Set, the reader stops reading (the ring buffer fills): for tests; see :meth:`hold`.
        self.hold_reading = threading.Event()
        self._parked = threading.Event()
        self._reader: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> WriteTracker:
        root = ensure_tracefs()
        remove_stale_instances(root)
        self.instance = root / "instances" / f"{PREFIX}{os.getpid()}-{next(_names)}"
        try:
            self.instance.mkdir()
            (self.instance / "buffer_size_kb").write_text(str(self.buffer_kb))
            clocks = (self.instance / "trace_clock").read_text().replace("[", "").replace("]", "").split()
            (self.instance / "trace_clock").write_text("mono" if "mono" in clocks else "global")
            if not (self.instance / EVENT).is_dir():
                raise TrackingUnavailable(NO_TRACEPOINT)
            self.completions = (
                RECORD_COMPLETIONS and self._disk.request_based and (self.instance / COMPLETION).is_dir()
            )
            for event in [EVENT, COMPLETION] if self.completions else [EVENT]:
                (self.instance / event / "filter").write_text(f"dev == {self._disk.dev}")
                (self.instance / event / "enable").write_text("1")
            (self.instance / "tracing_on").write_text("1")
            self._pipe = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except BaseException:
            self._teardown()
            raise
        self._reader = threading.Thread(target=self._read, name="write-tracker", daemon=True)
        start_unbudgeted(self._reader)  # the final pass, in the window, waits for it: never niced
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._teardown()

    def drain(self, timeout: float = 1.0) -> bool:
        """Wait until the disk has no write in flight (``/sys/block/<disk>/inflight``), which
        proves every write queued before this call has completed; False when it never got
        there within ``timeout`` seconds.  Only needed without completions (not ``settled``)."""
        inflight = self._disk.sysfs / "inflight"
        deadline = time.monotonic() + timeout
        while True:
            if int(inflight.read_text().split()[1]) == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def hold(self) -> None:
        """For tests: stop the reader, and return once it has stopped (``hold_reading.clear()``
        lets it go on)."""
        self._parked.clear()
        self.hold_reading.set()
        if not self._parked.wait(5):
            raise RuntimeError("the write tracker's reader did not stop")

    def pause(self) -> None:
        """Stop recording (one write to tracefs): after the last take, before the slower
        teardown, which can wait until the window has closed."""
        if self.instance is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.instance / "tracing_on").write_text("0")

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
                ready, _w, _x = select.select([self._pipe], [], [], 0.05)
                if self.hold_reading.is_set():
                    self._parked.set()
                    self._stop.wait(0.01)
                    continue
                self._parked.clear()
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
        ranges: list[tuple[int, int]] = []
        marks: list[tuple[str, int]] = []  # (marker, how many of ranges came before it)
        for line in lines:
            match = _EVENT_LINE.search(line)
            if match is None:
                if b"tracing_mark_write: " in line:
                    mark = line.rsplit(b"tracing_mark_write: ", 1)[1].strip().decode()
                    marks.append((mark, len(ranges)))
                continue
            rwbs, sector, count = match.group(1), int(match.group(2)), int(match.group(3))
            if count and b"R" not in rwbs:
                ranges.append((sector - self._disk.offset, count))
        with self._lock:
            before = len(self._ranges)
            self._ranges.extend(ranges)
            for mark, cut in marks:
                if mark in self._markers:
                    self._cuts[mark] = before + cut
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
            cut = self._cuts.pop(mark)
            ranges, self._ranges = self._ranges[:cut], self._ranges[cut:]
        dirty = Dirty(self._clip(ranges), len(ranges), lost > self._lost_seen, settled=self.completions)
        self._lost_seen = lost
        return dirty

    def _clip(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """A partition's ranges within the partition (bios of its neighbours are not ours)."""
        if self._disk.length < 0:
            return ranges
        clipped = []
        for start, count in ranges:
            first, last = max(start, 0), min(start + count, self._disk.length)
            if last > first:
                clipped.append((first, last - first))
        return clipped
