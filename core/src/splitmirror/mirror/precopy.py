"""Change-tracked passes, for either mirror: a bulk pass, pre-copy catch-up, a final delta.

A mirror gives :class:`TrackedPasses` its :class:`Synchronizer` (the block mirror's
:class:`~.block.BlockPasses` over the device, the directory mirror's over its files) and, when
the session's :class:`~.trackchoice.TrackingChoice` tracks, a started write tracker
(:meth:`~.trackchoice.TrackingOptions.passes` does both).  Without tracking,
every pass compares everything, and the final one does it inside the window: the window grows
with the primary.  With a :class:`~splitmirror.tracking.WriteTracker` running from the start of
the bulk pass until SPLIT has frozen the primary (the block mirror) or written it back (the
directory mirror, :meth:`~.base.MirrorProvider.write_back_paths`):

1. the bulk pass (SYNC) compares everything, as before, while the tracker records every write
   made meanwhile;
2. pre-copy (still SYNC, the database running): short passes each copy only what was written
   since the previous one, repeated while that shrinks, up to ``passes`` times and ``budget``
   seconds, like live migration's pre-copy, so the window starts with the smallest delta.  Under
   the session's ``io_limit`` (:mod:`splitmirror.budget`) they are throttled, and one more pass
   follows at full speed: what it leaves for the window is what an uncapped pass would leave;
3. the final pass (SPLIT, after the freeze or write-back): one more take, which returns every
   write queued before it, so every write completed before the quiesce, and only those ranges
   are copied.  What a database that the mode lets write on (never frozen) writes meanwhile is
   the mode's to repair (WAL, redo), as it is when an untracked pass reads a file being written.
   Tracking stops at once; the tracing instance is removed, and the mirror's bookkeeping
   finished (:meth:`Synchronizer.finish`), when the session closes, outside the window.

A write may still be in flight when a pass reads its range.  Where the tracker records request
completions too (``Dirty.settled``), such a write is in a later take by its completion, and
nothing more is needed.  Elsewhere (bio-based devices) a pre-copy pass copies its own take and
the previous one again, and the final pass copies every range taken since the last full compare
(after the freeze or write-back, nothing the image needs is still in flight); before a full
compare, the tracker waits until no write is in flight
(:meth:`~splitmirror.tracking.WriteTracker.drain`), and if none came, the final pass compares
everything.  Nothing is missed by construction: the tracker ran without a gap from before the
bulk pass read the device until after the freeze or write-back. When the kernel's ring buffer
overran (``lost``), that pass compares everything instead, and the pass's ``tracking`` says so."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ..budget import current as current_budget
from ..tracking import SECTOR, WriteTracker
from .base import SyncStats

log = logging.getLogger("splitmirror.mirror.precopy")
Report = Callable[[int, int | None], None]


class Synchronizer(Protocol):
    """What a mirror gives :class:`TrackedPasses`: a pass over everything, a pass over byte
    ranges of the primary's device (those written since the last take, and those to copy again:
    see the module docstring), and what to do once tracking ends."""

    def full(self, report: Report) -> SyncStats: ...

    def delta(self, ranges: list[tuple[int, int]], report: Report) -> SyncStats: ...

    def finish(self) -> None: ...


class TrackedPasses:
    """The passes of one session; :meth:`close` always (it removes the tracing instance)."""

    def __init__(
        self,
        sync: Synchronizer,
        tracker: WriteTracker | None,
        *,
        passes: int,
        budget: float,
        why_untracked: str = "",
    ) -> None:
        self.sync = sync
        self.tracker = tracker
        self.max_passes, self.budget = passes, budget
        self.why_untracked = why_untracked
        # Without completions (takes not settled): ranges to copy again.
        self._previous: list[tuple[int, int]] = []  # the last take's, for the next pre-copy pass
        self._since_full: list[tuple[int, int]] = []  # every take's since the last full compare
        #: Why the final pass cannot trust the takes (a write in flight may be in none of them).
        self._unsure = ""

    def bulk(self, report: Report) -> SyncStats:
        """SYNC: everything, then pre-copy while the delta shrinks."""
        stats = self._full(report)
        stats.passes.append(stats.bytes_written)
        stats.tracking = "tracked" if self.tracker is not None else f"untracked: {self.why_untracked}"
        if self.tracker is None:
            return stats
        started, previous = time.monotonic(), None
        for _ in range(self.max_passes):
            if time.monotonic() - started > self.budget:
                break
            dirty = self._catch_up_into(stats, report)
            if dirty is None:
                previous = None
                continue
            if dirty == 0 or (previous is not None and dirty >= previous):
                break  # converged, or no longer shrinking: more passes would not shorten the window
            previous = dirty
        return stats

    def _catch_up_into(self, stats: SyncStats, report: Report) -> int | None:
        """One pre-copy pass, added to ``stats``: the bytes written since the last take, or
        None when the pass could not trust the take (it compared everything)."""
        copied, dirty, how = self.catch_up(report)
        stats.add(copied)
        stats.passes.append(dirty)
        if how != "tracked":
            stats.tracking = how
            return None
        return dirty

    def final(self, report: Report) -> SyncStats:
        """SPLIT, primary frozen or written back: the last delta, or everything when untracked
        or lost."""
        if self.tracker is None:
            stats = self.sync.full(report)
            stats.passes.append(stats.bytes_written)
            stats.tracking = f"untracked: {self.why_untracked}"
            return stats
        copied, dirty, how = self._delta(report, last=True)
        copied.passes.append(dirty)
        copied.tracking = how
        return copied

    def last_precopy(self, report: Report) -> SyncStats | None:
        """One more pre-copy pass (:meth:`~splitmirror.mirror.base.MirrorProvider.catch_up`);
        None when untracked: then only the final pass can copy, comparing everything."""
        if self.tracker is None:
            return None
        copied, dirty, how = self._delta(report, unthrottled=True)
        copied.passes.append(dirty)
        copied.tracking = how
        return copied

    def catch_up(self, report: Report) -> tuple[SyncStats, int, str]:
        """One pre-copy pass, as :meth:`bulk` repeats them: (what it did, the bytes written
        since the last take, how it knew what to copy)."""
        return self._delta(report)

    def _full(self, report: Report, *, final: bool = False) -> SyncStats:
        """Compare everything.  Without completions, a write queued before the tracker started
        or lost with an overrun could be in flight while this reads and in no take: wait until
        none is in flight first (not in the final pass: the freeze or write-back waited for every
        write the image needs), or the final pass must compare everything."""
        if self.tracker is not None and not self.tracker.completions and not final:
            drained = self.tracker.drain()
            self._unsure = "" if drained else "writes stayed in flight before a full compare"
            self._previous, self._since_full = [], []
        return self.sync.full(report)

    def _delta(
        self, report: Report, *, last: bool = False, unthrottled: bool = False
    ) -> tuple[SyncStats, int, str]:
        """One tracked pass: (what it did, the bytes written since the last take, how).
        ``unthrottled``: its copy of the take is not held to ``io_limit`` (the last pass before
        the window: what a capped pass leaves behind, the window would copy); a full compare
        after lost events still is."""
        assert self.tracker is not None
        dirty = self.tracker.take()
        if last:
            self.tracker.pause()
        why_full = "lost events" if dirty.lost else (self._unsure if last else "")
        if why_full:
            log.warning("change tracking: %s; comparing everything", why_full)
            stats = self._full(report, final=last)
            return stats, stats.bytes_written, f"{why_full}: compared everything"
        ranges = [(start * SECTOR, count * SECTOR) for start, count in dirty.ranges]
        again: list[tuple[int, int]] = []
        if not dirty.settled:  # the next pass copies these again; the final one, all of them
            again = self._since_full if last else self._previous
            self._previous, self._since_full = ranges, self._since_full + ranges
        with current_budget().throttle.paused() if unthrottled else contextlib.nullcontext():
            copied = self.sync.delta(ranges + again, report)
        return copied, dirty.bytes, "tracked"

    def stop(self) -> None:
        """Stop tracking (the instance is removed); idempotent."""
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            tracker.__exit__(None, None, None)

    def close(self) -> None:
        """After the session: no tracker, and the mirror's bookkeeping right for the next one.
        A tracing instance that cannot be removed does not fail the session (its archive is
        made by now): it is logged, and the next tracker removes it once this process is gone."""
        try:
            self.stop()
        except OSError as error:
            log.warning("the write tracker's tracing instance could not be removed: %s", error)
        finally:
            self.sync.finish()
