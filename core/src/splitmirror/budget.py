"""What a session may take from the server: a read rate, and lower I/O and CPU priorities, for
SYNC and BACKUP, never for the window.

The bulk pass and the archive read every byte of the database while it serves its users; on a
busy server a DBA caps that (docs/configuration.md, ``[session]``):

* ``io_limit``: bytes per second read (SYNC from the primary, BACKUP from the split mirror).
  A :class:`~.throttle.Throttle`, one token bucket shared by every reader thread of the phase,
  holds each read until the rate allows it; readers take it from :func:`current` when a pass
  starts.
* ``io_priority`` and ``cpu_nice`` (:mod:`.priority`): Linux keeps both per *thread*, and a
  nice value once raised cannot be lowered again without CAP_SYS_NICE.  :meth:`Budget.run`
  therefore runs the phase's work in a thread of its own, set when it starts and gone when the
  work ends: nothing has to be restored, for root or not.  The threads it starts (the block
  mirror's workers, BACKUP's read-ahead) inherit its settings; the session's thread never
  changes.

The window (QUIESCE..UNQUIESCE, SPLIT's final pass in it) runs in the session's thread, outside
:meth:`Budget.run`: :func:`current` is unlimited there, and the priorities are the server's, so
a capped session never lengthens it.  Two things would otherwise carry the budget into the
window, and do not: a thread started in SYNC that the window needs (the write tracker's reader)
is started by the session's thread (:func:`start_unbudgeted`); and the last pre-copy pass
before QUIESCE (the mirror's ``catch_up``) copies its delta without waiting for ``io_limit``
(:meth:`~.throttle.Throttle.paused`), so that what a capped pass left behind is not left to the
window.  It still runs at the budget's priorities, and a full compare that replaces it (after
lost events) is still held to the rate.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from . import priority
from .throttle import Cancelled, Throttle
from .units import format_size

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("splitmirror.budget")
P = ParamSpec("P")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class _Scope:
    budget: Budget
    #: Served by the thread that called :meth:`Budget.run` (None: the work runs in that thread).
    requests: queue.SimpleQueue[Callable[[], None] | None] | None


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("splitmirror_budget", default=None)


class Budget:
    """One session's budget: :meth:`run` SYNC's and BACKUP's work under it."""

    def __init__(self, io_limit: int | None = None, io_priority: str = "normal", cpu_nice: int = 0) -> None:
        self.throttle = Throttle(io_limit)
        #: The ``ioprio`` value to set (None: left as it is), and the nice value (0: left).
        self.io_priority, self.cpu_nice = priority.ioprio_of(io_priority), cpu_nice

    @classmethod
    def from_config(cls, config: Config) -> Budget:
        """``[session] io_limit``, ``io_priority`` and ``cpu_nice``."""
        session = config.session
        return cls(session.io_limit, session.io_priority, session.cpu_nice)

    @staticmethod
    def describe(config: Config) -> str:
        """What ``splitmirror check`` says of the budget: what SYNC and BACKUP are held to."""
        session = config.session
        held = [
            *([f"read at most {format_size(session.io_limit)}/s"] if session.io_limit else []),
            *([f"at I/O priority {session.io_priority}"] if session.io_priority != "normal" else []),
            *([f"at CPU nice {session.cpu_nice}"] if session.cpu_nice else []),
        ]
        if not held:
            return "budget: none; SYNC and BACKUP run at full speed (see [session] io_limit)"
        return f"budget: SYNC and BACKUP {', '.join(held)}; the window runs at full speed"

    def run(self, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(*args, **kwargs)`` under this budget; with priorities to set or a rate to keep,
        in a thread of its own while the calling thread waits (and starts threads for
        :func:`start_unbudgeted`).  Interrupted while waiting, it stops the work at its next
        read, waits for it, re-raises."""
        self.throttle.stopped.clear()
        if self.io_priority is None and self.cpu_nice == 0 and not self.throttle.limited:
            # Nothing to set and nothing to wait for: the work may as well run here.  With a
            # rate it runs in its own thread too, so that an interrupt stops it at its next read
            # (here, the interrupt would wait for the work's pool to finish every throttled read).
            token = _SCOPE.set(_Scope(self, None))
            try:
                return work(*args, **kwargs)
            finally:
                _SCOPE.reset(token)
        requests: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        done: list[T] = []
        failed: list[BaseException] = []

        def body() -> None:
            try:
                self._set_thread(self.io_priority, self.cpu_nice)  # gone with the thread
                _SCOPE.set(_Scope(self, requests))
                done.append(work(*args, **kwargs))
            except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
                failed.append(error)
            finally:
                requests.put(None)

        worker = threading.Thread(target=body, name="splitmirror-budget", daemon=True)
        worker.start()
        try:
            while (request := requests.get()) is not None:
                request()
        except BaseException:
            self.throttle.stopped.set()
            worker.join()
            raise
        worker.join()
        if failed:
            raise failed[0]
        return done[0]

    @contextlib.contextmanager
    def applied(self) -> Iterator[Budget]:
        """The calling thread under this budget, and as it was again afterwards.  Its nice value
        is raised only where the kernel lets it be lowered back (:func:`.priority.may_lower_nice`);
        elsewhere, :meth:`run` gives the work a thread that needs no restoring."""
        io, nice, nice_before = self.io_priority, self.cpu_nice, priority.get_nice()
        io_before = None if io is None else priority.get_io_priority()
        if nice > nice_before and not priority.may_lower_nice(nice_before):
            log.warning(
                "cpu_nice is not applied to %s: it could not be undone", threading.current_thread().name
            )
            nice = 0
        token = _SCOPE.set(_Scope(self, None))
        try:
            self._set_thread(io, nice)
            yield self
        finally:
            _SCOPE.reset(token)
            if priority.get_nice() != nice_before:
                priority.set_nice(nice_before)
            if io_before is not None:
                priority.set_io_priority(io_before)

    @staticmethod
    def _set_thread(io_priority: int | None, nice: int) -> None:
        if io_priority is not None:
            priority.set_io_priority(io_priority)
        if nice > priority.get_nice():  # never below what the process has
            priority.set_nice(nice)


_UNLIMITED = Budget()


def current() -> Budget:
    """The budget the calling code runs under (:meth:`Budget.run`, :meth:`Budget.applied`), or
    an unlimited one.  Readers take ``current().throttle`` when a pass starts and hand it to the
    threads they start: a thread does not inherit it."""
    scope = _SCOPE.get()
    return _UNLIMITED if scope is None else scope.budget


def start_unbudgeted(thread: threading.Thread) -> None:
    """Start ``thread`` at the priorities the session had before any budget: under
    :meth:`Budget.run`, the thread that called it, which never changed, starts it."""
    scope = _SCOPE.get()
    if scope is None or scope.requests is None:
        thread.start()
        return
    started = threading.Event()
    failed: list[BaseException] = []

    def start() -> None:
        try:
            thread.start()
        except BaseException as error:  # noqa: BLE001 - raised again where it was asked for
            failed.append(error)
        finally:
            started.set()

    scope.requests.put(start)
    while not started.wait(0.05):
        if scope.budget.throttle.stopped.is_set():
            raise Cancelled("the budgeted work was stopped")
    if failed:
        raise failed[0]


__all__ = ["Budget", "Cancelled", "Throttle", "current", "start_unbudgeted"]
