"""Signals and the window limit, turned into exceptions at the right moments.

SIGTERM and SIGINT become :class:`~splitmirror.errors.SessionInterrupted` so the ordinary
``finally`` blocks unquiesce and thaw.  The window limit is armed as SIGALRM (main thread only;
the session also checks the deadline cooperatively at phase boundaries and on progress).  While
the session is releasing the database (:meth:`SignalGuard.deferred`), a signal is remembered
instead of raised, so a second Ctrl-C cannot interrupt the unquiesce it is waiting for.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

from .errors import SessionInterrupted, WindowExceeded

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)


class SignalGuard:
    def __init__(self, max_window: float) -> None:
        self.max_window = max_window
        self.pending: BaseException | None = None
        self._deferring = 0  # how many deferred() blocks are open
        self._previous: dict[int, Any] = {}
        self._timer: tuple[float, float] = (0.0, 0.0)

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            self._timer = signal.getitimer(signal.ITIMER_REAL)
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disarm()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous and self._timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *self._timer)  # the caller's own alarm, if any
        self._previous.clear()

    def arm(self) -> None:
        """Start the window clock: SIGALRM after ``max_window`` seconds."""
        if self.installed:
            signal.setitimer(signal.ITIMER_REAL, self.max_window)

    def disarm(self) -> None:
        if self.installed:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        error: BaseException
        if signum == signal.SIGALRM:
            error = WindowExceeded(f"the window passed max_window ({self.max_window:g}s)")
        else:
            error = SessionInterrupted(signal.Signals(signum).name)
        if self._deferring:
            self.pending = self.pending or error
            return
        raise error

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals while releasing the database; they are kept in :attr:`pending`.

        Blocks nest (the session's failure path releases the window inside its own block):
        signals are held until the outermost one ends.
        """
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def raise_pending(self) -> None:
        error, self.pending = self.pending, None
        if error is not None:
            raise error
