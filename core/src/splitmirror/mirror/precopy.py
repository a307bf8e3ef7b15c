"""Change-tracked passes of the block mirror: a bulk pass, pre-copy catch-up, a final delta.

Without tracking, every pass compares the whole device, and the final one does it inside the
window: the window grows with the device.  With a :class:`~splitmirror.tracking.WriteTracker`
running from the start of the bulk pass until the primary is frozen:

1. the bulk pass (SYNC) compares the whole device, as before, while the tracker records every
   write made meanwhile;
2. pre-copy (still SYNC, the database running): short passes each copy only what was written
   since the previous one, repeated while that shrinks, up to ``passes`` times and ``budget``
   seconds, like live migration's pre-copy, so the window starts with the smallest delta;
3. the final pass (SPLIT, primary frozen): one more take, which returns every write queued before
   the freeze, and only those ranges are copied.

Each pass copies its own take *and the previous one*: a write recorded when it was queued may
still be in flight when the pass reads that range, and the next pass, which reads it again after
the write completed (the final one with the filesystem frozen, so nothing is in flight), makes
the copy right.  Nothing is missed by construction: the tracker ran without a gap from before
the bulk pass read the device until after the freeze.  When the kernel's ring buffer overran
(``lost``), that pass compares the whole device instead, and the pass's ``tracking`` says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .. import tracking
from .base import SyncStats
from .blocksync import BlockSync, BlockSyncStats

log = logging.getLogger("splitmirror.mirror.precopy")
Report = Callable[[int, int | None], None]


def _as_sync_stats(stats: BlockSyncStats) -> SyncStats:
    return SyncStats(
        bytes_read=stats.bytes_read_primary + stats.bytes_read_mirror, bytes_written=stats.bytes_written
    )


class TrackedPasses:
    """The passes of one session; :meth:`close` always (it removes the tracing instance)."""

    def __init__(
        self,
        sync: BlockSync,
        tracker: tracking.WriteTracker | None,
        *,
        passes: int,
        budget: float,
        why_untracked: str = "",
    ) -> None:
        self.sync = sync
        self.tracker = tracker
        self.max_passes, self.budget = passes, budget
        self.why_untracked = why_untracked
        self._previous: list[tuple[int, int]] = []

    def bulk(self, report: Report) -> SyncStats:
        """SYNC: the whole device, then pre-copy while the delta shrinks."""
        stats = _as_sync_stats(self.sync.sync(report))
        stats.passes.append(stats.bytes_written)
        stats.tracking = "tracked" if self.tracker is not None else f"untracked: {self.why_untracked}"
        if self.tracker is None:
            return stats
        started, previous = time.monotonic(), None
        for _ in range(self.max_passes):
            if time.monotonic() - started > self.budget:
                break
            copied, dirty, how = self._delta(report)
            stats.add(copied)
            stats.passes.append(dirty)
            if how != "tracked":
                stats.tracking = how
                previous = None
                continue
            if dirty == 0 or (previous is not None and dirty >= previous):
                break  # converged, or no longer shrinking: more passes would not shorten the window
            previous = dirty
        return stats

    def final(self, report: Report) -> SyncStats:
        """SPLIT, primary frozen: the last delta, or the whole device when untracked or lost."""
        if self.tracker is None:
            stats = _as_sync_stats(self.sync.sync(report))
            stats.passes.append(stats.bytes_written)
            stats.tracking = f"untracked: {self.why_untracked}"
            return stats
        copied, dirty, how = self._delta(report)
        self.stop()
        copied.passes.append(dirty)
        copied.tracking = how
        return copied

    def _delta(self, report: Report) -> tuple[SyncStats, int, str]:
        """One tracked pass: (what it did, the bytes written since the last take, how)."""
        assert self.tracker is not None
        dirty = self.tracker.take()
        if dirty.lost:
            log.warning("the write tracker lost events (ring buffer overran): comparing the whole device")
            self._previous = []
            stats = _as_sync_stats(self.sync.sync(report))
            return stats, stats.bytes_written, "lost events: compared the whole device"
        ranges = [(start * tracking.SECTOR, count * tracking.SECTOR) for start, count in dirty.ranges]
        stats = _as_sync_stats(self.sync.copy(ranges + self._previous, report))
        self._previous = ranges
        return stats, dirty.bytes, "tracked"

    def stop(self) -> None:
        """Stop tracking (the instance is removed); idempotent."""
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            tracker.__exit__(None, None, None)

    def close(self) -> None:
        """After the session: no tracker, and the checksum map right again for the next bulk pass."""
        self.stop()
        self.sync.refresh_map()
