"""The fault matrix's tools: a session SIGKILLed in a chosen phase, and the checks that follow.

A plugin's fault tests (and core's, in ``tests/faults/``) run a real session in a child process
that kills itself with SIGKILL at a chosen point, so nothing of the session's own cleanup runs:
only the watchdog (:mod:`splitmirror.watchdog`) and the kernel are left to release what was
held.  Then they check what a DBA would: the database takes writes within a second, no
filesystem is frozen, the catalog row is ``FAILED`` with the phase, no archive is left that
looks good, and the next session succeeds.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..fsfreeze import FIFREEZE, FITHAW, _ioctl, mount_point
from ..watchdog import DISABLE_ENV

#: Where the child kills itself: after the body of the phase, or ``BACKUP-mid`` once BACKUP has
#: written its first bytes.
KILL_POINTS = ("QUIESCE", "DISCOVER", "PREPARE", "SPLIT", "CHECK", "UNQUIESCE", "BACKUP-mid", "BACKUP")

_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from splitmirror import impl
    from splitmirror.config import load_config
    from splitmirror.hooks import Hooks
    from splitmirror.phases import Phase
    from splitmirror.session import Session

    config, point, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    def die(session):
        marker.write_text(str(session.id))
        os.kill(os.getpid(), signal.SIGKILL)

    class Killer:
        @impl(wrapper=True)
        def splitmirror_phase(self, session, phase):
            result = yield
            if phase.name == point:
                die(session)
            return result

        @impl
        def splitmirror_progress(self, session, phase, done, total):
            if point == "BACKUP-mid" and phase is Phase.BACKUP and done > 0:
                die(session)

    hooks = Hooks()
    hooks.register(Killer(), "killer")
    Session(load_config(config), hooks).run()
    """
)


@dataclasses.dataclass(frozen=True)
class Killed:
    """A session killed at ``point``: its id, and when it died (monotonic clock)."""

    session_id: int
    point: str
    died_at: float
    stderr: str


def run_killed(
    config: Path, point: str, scratch: Path, *, watchdog: bool = True, timeout: float = 120
) -> Killed:
    """Run the session of ``config`` in a child process that SIGKILLs itself at ``point``."""
    if point not in KILL_POINTS:
        raise ValueError(f"{point} is not one of {KILL_POINTS}")
    script, marker = scratch / "killed_session.py", scratch / f"killed-{point}"
    script.write_text(_SCRIPT)
    marker.unlink(missing_ok=True)
    env = {**os.environ, DISABLE_ENV: "0" if watchdog else "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(config), point, str(marker)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    died_at = time.monotonic()
    if proc.returncode != -9 or not marker.exists():
        raise AssertionError(
            f"the session did not die at {point} (exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    return Killed(int(marker.read_text()), point, died_at, proc.stderr)


def is_frozen(path: Path) -> bool:
    """Whether the filesystem holding ``path`` is frozen: FIFREEZE answers EBUSY on a frozen one
    (otherwise it froze it, and it is thawed at once)."""
    mount = mount_point(path)
    try:
        _ioctl(mount, FIFREEZE)
    except OSError as error:
        if error.errno == errno.EBUSY:
            return True
        raise
    _ioctl(mount, FITHAW)
    return False


def thaw(path: Path) -> None:
    """Thaw the filesystem holding ``path`` if it is frozen (a test's own cleanup)."""
    try:
        _ioctl(mount_point(path), FITHAW)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise


def seconds_until(check: Callable[[], bool], limit: float = 10.0) -> float:
    """Seconds until ``check()`` first returns True (polled); ``limit`` when it never does."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    return limit


def archives_left(directory: Path) -> list[str]:
    """Archive files (complete or partial) in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if ".tar" in p.name)


def failure_of(catalog: Path, session_id: int) -> Mapping[str, object]:
    """The catalog's record of how a session ended."""
    from ..catalog.sqlite import SqliteCatalog

    db = SqliteCatalog(catalog)
    try:
        row = db.get(session_id)
        return {"status": row.status, "failed_phase": row.failed_phase, "error": row.error}
    finally:
        db.close()
