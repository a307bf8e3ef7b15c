"""How long the database's writers were held by the session: ``blocked_ms``, beside the window.

The window (QUIESCE through UNQUIESCE) is what the session costs; it is not what the
application feels.  In HOT_BACKUP the database keeps writing through the window, and is held
only while the session has a filesystem holding it frozen; in FREEZE the engine holds writers
from its quiesce until its unquiesce (or the release on a failure path) lets them go.  The
two kinds of hold are recorded as spans of the monotonic clock and counted once where they
overlap: a filesystem frozen inside a FREEZE hold adds nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fsfreeze import Freezer


@dataclasses.dataclass(eq=False)  # each hold is itself: two may start in one clock tick
class Span:
    """A stretch of :func:`time.monotonic` during which writers were held; ``end`` is None
    while they still are (a thaw that failed keeps its span open until one succeeds)."""

    start: float
    end: float | None = None


def held_ms(spans: Iterable[Span], now: float | None = None) -> float:
    """The time covered by at least one span, in milliseconds; an open span counts up to
    ``now``.  Overlaps count once: two filesystems frozen together hold writers once."""
    now = time.monotonic() if now is None else now
    total, reach = 0.0, float("-inf")
    for start, end in sorted((s.start, now if s.end is None else s.end) for s in spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total * 1000


class BlockedTime:
    """The session's record of its holds on the writers: the engine's (FREEZE, and a HOT_BACKUP
    that locks some tables all the same: the engine says so once its quiesce returned) and the
    freezer's."""

    def __init__(self, freezer: Freezer, *, engine_holds: bool) -> None:
        self._freezer = freezer
        self._engine_holds = engine_holds
        self._engine: Span | None = None

    def quiescing(self) -> None:
        """Just before the engine's quiesce: from here the engine may hold writers."""
        if self._engine is None:
            self._engine = Span(time.monotonic())

    def quiesced(self, holds: bool) -> None:
        """The engine's quiesce returned, and says whether its mode holds writers (until it
        answers, a FREEZE engine is taken to: a quiesce that failed half-way may have)."""
        self._engine_holds = holds

    def released(self) -> None:
        """Just after the engine's unquiesce or abort returned (or raised: the watchdog retries
        a failed release, and the session has no better moment to name)."""
        if self._engine is not None and self._engine.end is None:
            self._engine.end = time.monotonic()

    def ms(self) -> float:
        engine = [] if self._engine is None or not self._engine_holds else [self._engine]
        return held_ms([*engine, *self._freezer.spans])
