"""A read rate shared by several reader threads: the token bucket behind ``[session] io_limit``.

Readers call :meth:`Throttle.consume` with a read's length before issuing it.  Each takes its
bytes under the lock, going into debt if the bucket is short, and sleeps the debt off outside
it, so any number of threads together stay at the rate over the long run while a single read of
any size still goes through.  A burst of :attr:`Throttle.BURST` seconds' worth is allowed, so a
pass that pauses (a file skipped, a hash) does not lose its share; no more, so the server never
sees more than a tenth of a second at full speed.  :mod:`.budget` says who gets one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from .errors import SplitmirrorError


class Cancelled(SplitmirrorError):
    """The throttled work was told to stop: the session is failing for another reason."""


class Throttle:
    """At most ``rate`` bytes per second (None: unlimited, :meth:`consume` only checks
    :attr:`stopped`).  Safe to share between threads."""

    BURST = 0.1

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        #: Set: every :meth:`consume` raises :class:`Cancelled`, and a sleeping one wakes to.
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._tokens, self._stamp = (rate or 0) * self.BURST, time.monotonic()

    @property
    def limited(self) -> bool:
        return self.rate is not None

    def consume(self, count: int) -> None:
        """Return once ``count`` more bytes keep the long-run rate (a read follows)."""
        rate = self.rate
        if self.stopped.is_set():
            raise Cancelled("the throttled work was stopped")
        if rate is None:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(rate * self.BURST, self._tokens + (now - self._stamp) * rate) - count
            self._stamp, debt = now, -self._tokens
        if debt > 0 and self.stopped.wait(debt / rate):
            raise Cancelled("the throttled work was stopped")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Reads in this block do not wait, and are not owed afterwards."""
        rate, self.rate = self.rate, None
        try:
            yield
        finally:
            with self._lock:
                self.rate, self._stamp = rate, time.monotonic()
