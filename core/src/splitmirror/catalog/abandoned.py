"""Catalog rows that say ``STARTED`` for sessions that are gone, closed as ``FAILED``.

INIT calls :func:`fail_abandoned` while it holds the configuration's lock: no other session of
that configuration runs, so a row of it still ``STARTED`` belongs to a process that ended
without recording an outcome, and that no watchdog closed for it (the machine went down, or the
watchdog was killed too).  Saying so beats showing it running forever.
"""

from __future__ import annotations

from ..hostname import host
from ..phases import PHASE_ORDER
from .base import FAILED, STARTED, Catalog, utc_now


def fail_abandoned(catalog: Catalog, config_source: str) -> None:
    """Mark every ``STARTED`` row of the configuration at ``config_source`` ``FAILED``, in the
    earliest phase it can have been in."""
    names = [phase.name for phase in PHASE_ORDER]
    handed_over = {split.session_id for split in catalog.handovers(outstanding=True)}
    # A catalog many hosts share holds other hosts' sessions of a configuration at the same path;
    # the lock INIT holds is this host's, so only rows this host recorded a phase of are its own.
    shared, here = catalog.address.url is not None, host()
    for stale in catalog.sessions(status=STARTED):
        if stale.config != config_source or stale.id in handed_over:  # a backup host has those
            continue
        if shared and not any(phase.host == here for phase in stale.phases):
            continue
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
