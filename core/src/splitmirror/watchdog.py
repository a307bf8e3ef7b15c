"""The dead-man watchdog: a separate process that releases the database if the session cannot.

A frozen filesystem outlives the process that froze it, and some quiesce modes outlive the
connection that entered them.  The session's own ``try/finally`` covers every way out except the
ones that skip it: SIGKILL, the OOM killer, a process stopped (SIGSTOP) or wedged in the window.
So before QUIESCE the session starts ``python -m splitmirror.watchdog`` and tells it, one JSON
line at a time over the child's standard input::

    {"hello": {...}}      session id, catalog, config path, max_window, archive files to remove
    {"phase": "SPLIT"}    where the session is
    {"freezing": "/mnt"}  sent *before* FIFREEZE, so a freeze never goes unrecorded
    {"thawed": "/mnt"}    after FITHAW (or a FIFREEZE that failed)
    {"state": {...}}      the engine's emergency state (DatabaseEngine.emergency_state)
    {"released": true}    UNQUIESCE finished: nothing is held any more
    {"release_failed": true}  the engine's abort raised: the database may still be held
    {"beat": true}        every 100 ms, from a thread of the session's process
    {"done": true}        the session ended and recorded its own outcome

The watchdog acts when the pipe reaches end of file without ``done`` (the session's process
died: the kernel closes the pipe at once, so this is noticed within one 50 ms poll), when no
beat came for :data:`STALL_S`, or when the window outlives ``max_window`` by :data:`GRACE_S`
(the session's own alarm should have ended it first).  In the last two cases the session's
process is alive but not doing its job, so it is SIGKILLed first: it must never go on to
report an image the watchdog has already given up.  Then, in order: every filesystem recorded
as frozen is thawed; the engine's :meth:`~splitmirror.engine.DatabaseEngine.emergency_release`
runs in this fresh process with the engine's last emergency state; and the catalog row, if still
``STARTED``, becomes ``FAILED`` with the phase and why, and the archive files the session was
writing (``Target.leftovers``) are removed, unless the session said its archive was complete
(CLEANUP: only the mirror's re-establishing was left, and the archive stays).

The watchdog stays until the session says ``done``, so a death during BACKUP still gets its row
marked.  When the session's own release failed (``release_failed``: the engine's ``abort``
raised, as Oracle's does when no connection could end backup mode), the watchdog runs the
emergency release once more at ``done``, in its own process: a second, independent try.

Set ``SPLITMIRROR_TEST_NO_WATCHDOG=1`` to run without it: the fault tests use that to show what
it prevents.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config
    from .opening import Parts

log = logging.getLogger("splitmirror.watchdog")

#: Without a beat for this long, the session's process is taken for stuck.
STALL_S = 2.0
#: How long past ``max_window`` the session's own alarm has to end the window itself.
GRACE_S = 1.0
BEAT_S = 0.1
POLL_S = 0.05
#: How long the session waits at its end for the watchdog's second try at a failed release.
RETRY_WAIT_S = 180.0
DISABLE_ENV = "SPLITMIRROR_TEST_NO_WATCHDOG"


class Watchdog:
    """The session's side: start the watchdog, tell it what happens, say done."""

    def __init__(self, hello: Mapping[str, Any]) -> None:
        self._hello = dict(hello)
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None
        #: The session's release failed: at done the watchdog tries again, which takes a while.
        self._retrying = False

    @classmethod
    def of_session(cls, parts: Parts, config: Config) -> Watchdog:
        """The watchdog of the session INIT built ``parts`` for: the hello it needs to close the
        session's row and remove a killed session's leftovers."""
        return cls(
            {
                "session": parts.id,
                "catalog": parts.catalog_address.text,
                "config": str(config.source),
                "max_window": config.session.max_window,
                "leftovers": [] if parts.target is None else parts.target.leftovers(),
            }
        )

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        if os.environ.get(DISABLE_ENV) == "1":
            log.warning("%s=1: no watchdog for this session (a test switch)", DISABLE_ENV)
            return
        self._process = subprocess.Popen(
            [sys.executable, "-m", "splitmirror.watchdog"],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C or SIGTERM to the session's group must spare it
            close_fds=True,
        )
        self._pipe = self._process.stdin
        self.tell(hello={**self._hello, "pid": os.getpid()})
        self._beater = threading.Thread(target=self._beat, name="watchdog-beat", daemon=True)
        self._beater.start()

    def tell(self, **message: Any) -> None:
        """Send one message; a watchdog that is gone is not the session's problem."""
        if "release_failed" in message:
            self._retrying = True
        if self._pipe is None:
            return
        line = (json.dumps(message) + "\n").encode()
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._pipe.write(line)
            self._pipe.flush()

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            self.tell(beat=True)

    def finish(self) -> None:
        """The session recorded its own outcome: the watchdog can go."""
        self._stop.set()
        if self._process is None:
            return
        self.tell(done=True)
        with contextlib.suppress(OSError, ValueError):
            assert self._pipe is not None
            self._pipe.close()
        try:
            self._process.wait(timeout=RETRY_WAIT_S if self._retrying else 5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = self._pipe = None


class _Watch:
    """The watchdog process's state and its one job."""

    def __init__(self, hello: Mapping[str, Any]) -> None:
        self.hello = hello
        self.pid: int = hello["pid"]
        self.phase = "INIT"
        self.frozen: list[str] = []
        self.state: Mapping[str, Any] | None = None
        self.released = False
        self.release_failed = False
        #: CLEANUP has begun: the archive is complete and catalogued, not a leftover.
        self.archive_complete = False
        self.window_start: float | None = None
        self.last_beat = time.monotonic()

    def take(self, message: Mapping[str, Any]) -> bool:
        """Apply one message; True when the session said done."""
        if "beat" in message:
            self.last_beat = time.monotonic()
        if "phase" in message:
            self.phase = message["phase"]
            # CLEANUP begins only after BACKUP committed and catalogued the archive: from the
            # first moment of it, a death keeps the archive (only the mirror was left to do).
            self.archive_complete = self.archive_complete or self.phase == "CLEANUP"
            if self.phase == "QUIESCE" and self.window_start is None:
                self.window_start = time.monotonic()
        if "freezing" in message and message["freezing"] not in self.frozen:
            self.frozen.append(message["freezing"])
        if "thawed" in message and message["thawed"] in self.frozen:
            self.frozen.remove(message["thawed"])
        if "state" in message:
            self.state = message["state"]
        if "released" in message:
            self.released = True
        if "release_failed" in message:
            self.release_failed = True
        return bool(message.get("done"))

    def overdue(self) -> str | None:
        """Why the living session's process must be stopped, or None."""
        now = time.monotonic()
        if self.released or self.release_failed:
            return None  # the window is over; a failed release is retried at done or death
        if now - self.last_beat > STALL_S:
            return f"the splitmirror process (pid {self.pid}) stopped responding in {self.phase}"
        limit = float(self.hello.get("max_window", 0)) + GRACE_S
        if self.window_start is not None and now - self.window_start > limit:
            return (
                f"the window passed max_window ({self.hello.get('max_window')}s) in {self.phase} "
                f"and the splitmirror process (pid {self.pid}) did not end it"
            )
        return None

    def act(self, reason: str) -> None:
        """Thaw, release, clean up, record: each step tried whatever the others did."""
        done: list[str] = []
        if not self.released:
            for mount in reversed(self.frozen):
                if _thaw(mount):
                    done.append(f"thawed {mount}")
            if self._release():
                done.append("released the database")
        if _remove_tracing(self.pid):
            done.append("removed its tracing instance")
        if self._record(reason):
            done.append(f"marked session {self.hello['session']} FAILED")
            self._tell_the_site()
            for leftover in [] if self.archive_complete else self.hello.get("leftovers", []):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
                    done.append(f"removed {leftover}")
        print(f"splitmirror watchdog: {reason}; " + ", ".join(done or ["nothing was held"]), file=sys.stderr)

    def retry_release(self) -> None:
        """The session ended, its own release having failed: the engine's and plugins'
        emergency release once more, from this process."""
        outcome = "released the database" if self._release() else "could not release the database either"
        print(f"splitmirror watchdog: the session's release failed; {outcome}", file=sys.stderr)

    def _release(self) -> bool:
        """The engine's emergency release, then every plugin's ``splitmirror_emergency_release``;
        True when all of them went through."""
        from .config import load_config, plugin_options
        from .hooks import Hooks

        failures = []
        try:
            config = load_config(Path(self.hello["config"]))
            hooks = Hooks()
            engine_cls = hooks.engine_for_url(config.database.url)
        except Exception as error:  # noqa: BLE001 - the config or plugins broke meanwhile: report
            print(f"splitmirror watchdog: cannot load the session's plugins: {error}", file=sys.stderr)
            return False
        try:
            options = plugin_options(config, "database", engine_cls.options_model)
            engine_cls.emergency_release(config.database.url, options, self.state)
        except Exception as error:  # noqa: BLE001 - report it, and still call the plugins
            failures.append(f"engine {engine_cls.name}: {error}")
        failures += hooks.emergency_release(config, self.phase, self.state)
        for failure in failures:
            print(f"splitmirror watchdog: emergency release failed: {failure}", file=sys.stderr)
        return not failures

    def _tell_the_site(self) -> None:
        """A killed session's end, told as a finished one's is: the metrics textfile rewritten
        and the notifier run (``[metrics]``, ``[notify]``); a failure is printed, nothing more."""
        from . import metrics, notify
        from .catalog import open_catalog
        from .config import load_config

        try:
            config = load_config(Path(self.hello["config"]))
            catalog = open_catalog(str(self.hello["catalog"]), create=False)
            try:
                metrics.write_quietly(config, catalog)
                problem = notify.notify(config, catalog.get(int(self.hello["session"])))
            finally:
                catalog.close()
        except Exception as error:  # noqa: BLE001 - the config or catalog broke meanwhile: report
            problem = f"cannot tell the metrics and the notifier: {error}"
        if problem:
            print(f"splitmirror watchdog: {problem}", file=sys.stderr)

    def _record(self, reason: str) -> bool:
        from .catalog import open_catalog
        from .catalog.base import FAILED, STARTED, utc_now

        try:
            catalog = open_catalog(str(self.hello["catalog"]), create=False)
            try:
                session_id = int(self.hello["session"])
                if catalog.get(session_id).status != STARTED:
                    return False
                if catalog.handovers(outstanding=True, session_id=session_id):
                    return False  # handed over: a backup host ends it
                catalog.finish_session(
                    session_id, status=FAILED, finished_at=utc_now(), failed_phase=self.phase, error=reason
                )
                return True
            finally:
                catalog.close()
        except Exception as error:  # noqa: BLE001 - a damaged catalog: report, go on
            print(f"splitmirror watchdog: could not record the failure: {error}", file=sys.stderr)
            return False


def _thaw(mount: str) -> bool:
    from .fsfreeze import FITHAW, _ioctl

    try:
        _ioctl(Path(mount), FITHAW)
        return True
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: not frozen
            print(f"splitmirror watchdog: thawing {mount} failed: {error}", file=sys.stderr)
        return False


def _remove_tracing(session: int) -> bool:
    """The dead session's write tracker's tracing instance, and any of processes that are gone.
    The session is named: its pipe closes before the kernel has made it a zombie."""
    from .tracking import TRACEFS, remove_stale_instances

    if not (TRACEFS / "instances").is_dir():
        return False
    try:
        return bool(remove_stale_instances(dead=session))
    except OSError as error:
        print(f"splitmirror watchdog: removing a tracing instance failed: {error}", file=sys.stderr)
        return False


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def watch(source: IO[bytes]) -> int:
    """The watchdog's loop over the session's messages; returns the exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe ends the watch
    fd = source.fileno()
    buffered = b""
    watch_state: _Watch | None = None
    while True:
        readable, _w, _x = select.select([fd], [], [], POLL_S)
        if readable:
            data = os.read(fd, 1 << 16)
            if not data:  # the session's process is gone: the kernel closed its end
                if watch_state is not None:
                    watch_state.act(
                        f"the splitmirror process (pid {watch_state.pid}) died in {watch_state.phase}"
                    )
                return 1
            buffered += data
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                message = json.loads(line)
                if watch_state is None:
                    watch_state = _Watch(message["hello"])
                elif watch_state.take(message):
                    if watch_state.release_failed and not watch_state.released:
                        watch_state.retry_release()
                    return 0
        if watch_state is not None:
            why = watch_state.overdue()
            if why is not None:
                _kill(watch_state.pid)
                watch_state.act(why)
                return 1


if __name__ == "__main__":
    sys.exit(watch(sys.stdin.buffer))
