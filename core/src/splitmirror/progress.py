"""The progress callback type shared by synchronizers and the archive writer."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called with bytes done so far and the total when known; must be cheap."""

    def __call__(self, done: int, total: int | None) -> None: ...


def no_progress(done: int, total: int | None) -> None:
    """A :class:`Progress` that reports nowhere."""
