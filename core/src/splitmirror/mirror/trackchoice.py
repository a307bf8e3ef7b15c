"""Whether a mirror's passes are change-tracked: the settings, and one decision per session.

The mirrors that can track writes (``block`` and ``directory``) take the ``tracking``
setting ("auto", "on", "off") and the primary's device, or why there is none that can be traced,
and :meth:`TrackingOptions.decide` turns them into a :class:`TrackingChoice`: the device to
track, or why not.  A provider decides the first time anyone asks — preflight, ``splitmirror
check``'s notes, SPLIT's freeze or write-back (inside the window, where no ``findmnt`` may run), SYNC's bulk
pass — and keeps the answer for the session, so they all agree, the device is looked up once,
and ``tracking = "on"`` that cannot be honoured is refused in one wording, whichever mirror.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import pydantic

from ..config import Duration, Size
from ..engine import PreflightProblem
from ..tracking import DEFAULT_BUFFER_KB, WriteTracker
from ..tracking import unavailable as tracking_unavailable
from .precopy import Synchronizer, TrackedPasses

log = logging.getLogger("splitmirror.mirror.trackchoice")

Setting = Literal["auto", "on", "off"]
#: How a mirror finds the device to track: ``(device, "")``, or ``(None, why there is none)``.
DeviceLookup = Callable[[], tuple[Path | None, str]]
#: The fix for ``tracking = "on"`` where tracking cannot run (what is wrong comes before it).
REFUSAL_FIX = 'remove the cause, or set [mirror] tracking = "auto" or "off" to run without it'


@dataclasses.dataclass(frozen=True)
class TrackingChoice:
    """One session's answer: ``device`` is tracked, or it is None and ``why_not`` says why."""

    setting: Setting
    device: Path | None
    why_not: str = ""

    @property
    def tracked(self) -> bool:
        return self.device is not None

    def problems(self) -> list[PreflightProblem]:
        """``tracking = "on"`` where it cannot run is refused before anything happens."""
        if self.setting != "on" or self.tracked:
            return []
        return [PreflightProblem(f"change tracking is unavailable: {self.why_not}", REFUSAL_FIX)]


class TrackingOptions(pydantic.BaseModel):
    """``[mirror]`` keys of change tracking, shared by the mirrors that can use it."""

    model_config = pydantic.ConfigDict(extra="forbid")

    #: "auto" (when the kernel's tracing allows), "on" (refuse without), "off" (compare all).
    tracking: Setting = "auto"
    #: Pre-copy: at most this many catch-up passes before QUIESCE ...
    precopy_passes: int = pydantic.Field(default=8, ge=0, le=100)
    #: ... and for at most this long.
    precopy_budget: Annotated[Duration, pydantic.Field(le=3600)] = 60.0
    #: The tracer's ring buffer, per CPU: enough for the writes between two passes.
    tracking_buffer: Size = DEFAULT_BUFFER_KB * 1024

    def decide(self, lookup: DeviceLookup) -> TrackingChoice:
        """The session's choice; ``lookup`` (the mirror's device lookup) is not called when
        tracking is off, and the kernel is asked only about a device that can be traced."""
        if self.tracking == "off":
            return TrackingChoice(self.tracking, None, 'tracking = "off"')
        device, why = lookup()
        if device is None:
            return TrackingChoice(self.tracking, None, why or "the primary is not on a block device")
        why = tracking_unavailable() or ""
        return TrackingChoice(self.tracking, None if why else device, why)

    def passes(self, sync: Synchronizer, choice: TrackingChoice) -> TrackedPasses:
        """One session's passes over ``sync`` with this pre-copy's bounds; the tracker started
        when ``choice`` tracks (:meth:`TrackedPasses.close` stops it).  Untracked where tracking
        was wanted, one line says so."""
        tracker = None
        if choice.device is not None:
            tracker = WriteTracker(choice.device, buffer_kb=max(4, self.tracking_buffer // 1024))
            tracker.__enter__()
        elif choice.setting != "off":
            log.warning("change tracking is off (%s): the final pass compares everything", choice.why_not)
        return TrackedPasses(
            sync,
            tracker,
            passes=self.precopy_passes,
            budget=self.precopy_budget,
            why_untracked=choice.why_not,
        )
