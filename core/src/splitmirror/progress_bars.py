"""The command line's observer plugin: rich progress bars for the phases that move bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from . import impl
from .phases import Phase

if TYPE_CHECKING:
    from .session import Session

_LABELS = {Phase.SYNC: "sync (bulk)", Phase.SPLIT: "sync (final)", Phase.BACKUP: "backup"}


class ProgressBars:
    """Registered by ``splitmirror backup`` for the duration of the session."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[Phase, TaskID] = {}

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if self.enabled and phase in _LABELS:
            if not self._tasks:
                self._progress.start()
            self._tasks[phase] = self._progress.add_task(_LABELS[phase], total=None)

    @impl
    def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
        task = self._tasks.get(phase)
        if task is not None:
            self._progress.update(task, completed=done, total=total)

    @impl
    def splitmirror_phase_finished(
        self, session: Session, phase: Phase, duration_s: float, error: BaseException | None
    ) -> None:
        task = self._tasks.pop(phase, None)
        if task is not None:
            self._progress.remove_task(task)

    def stop(self) -> None:
        self._progress.stop()
