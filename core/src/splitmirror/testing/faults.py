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
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from .. import impl
from ..errors import SessionFailed
from ..fsfreeze import FIFREEZE, FITHAW, _ioctl, mount_point
from ..phases import Mode, Phase
from ..session import Session
from ..tracking import left_behind
from ..watchdog import DISABLE_ENV
from .contract import declared_modes_guard, modes_fixture
from .database import LedgerDatabase
from .drill import SessionRunner

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
    (otherwise it froze it, and it is thawed at once).  The root filesystem is never asked:
    splitmirror refuses to freeze it, and freezing it even for a moment is no test's business."""
    mount = mount_point(path)
    if mount == Path("/"):
        return False
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


def tracing_instances() -> list[str]:
    """Change-tracking instances left behind: this process's, or of sessions that are gone
    (other sessions running on the machine keep theirs)."""
    return left_behind()


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


class _Act:
    """An observer that does ``action(session)`` once, at the start of ``phase`` (or, with
    ``on_progress``, at BACKUP's first progress report, once bytes are being written)."""

    def __init__(self, phase: Phase, action: Callable[[Session], None], *, on_progress: bool = False) -> None:
        self.phase, self.action, self.on_progress, self.done = phase, action, on_progress, False

    def _once(self, session: Session) -> None:
        if not self.done:
            self.done = True
            self.action(session)

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is self.phase and not self.on_progress:
            self._once(session)

    @impl
    def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
        if phase is self.phase and self.on_progress and done > 0:
            self._once(session)


class FaultMatrix:
    """The reliability guarantees (docs/reliability.md) under faults, against your
    ``splitmirror_database``: subclass it in your plugin's tests, as
    :class:`~splitmirror.testing.contract.DatabaseContract`.

    After every fault: the database takes a write within a second, nothing of the session is
    left held (:meth:`LedgerDatabase.leftovers`) or frozen, the catalog row is ``FAILED`` with
    the phase and a one-line reason, no archive is left, and the next session is ``DONE``.
    Rows that need something of the database (a server connection to kill, a statement that
    makes the quiesce wait) skip with the reason where it has none.
    """

    #: Modes the matrix runs its window faults in, if fewer than the engine declares
    #: (:attr:`~splitmirror.engine.DatabaseEngine.modes`); override to narrow a slow suite.
    fault_modes: tuple[str | Mode, ...] | None = None

    fault_mode = modes_fixture("fault_modes")
    _declared_modes_only = declared_modes_guard("fault_mode")

    def _after(
        self, database: LedgerDatabase, runner: SessionRunner, session_id: int, phase: str, mode: str
    ) -> str:
        """The checks every row shares; returns the recorded reason."""
        assert seconds_until(database.accepts_writes) < 1.0, "the database did not take a write within 1 s"
        assert not is_frozen(database.primary), "the primary's filesystem is still frozen"
        assert seconds_until(lambda: not database.leftovers(), 2.0) < 2.0, database.leftovers()
        row = failure_of(runner.workspace.catalog, session_id)
        assert (row["status"], row["failed_phase"]) == ("FAILED", phase), row
        reason = str(row["error"])
        assert reason and "\n" not in reason and "Traceback" not in reason, reason
        assert archives_left(runner.workspace.archives) == [], "an archive of a failed session is left"
        assert not tracing_instances(), "a tracing instance of the session is left"
        assert runner.run(database, mode).status == "DONE", "the next session must run"
        return reason

    @pytest.mark.parametrize("point", ["QUIESCE", "SPLIT", "UNQUIESCE", "BACKUP-mid"])
    def test_the_session_killed(
        self,
        point: str,
        splitmirror_database: LedgerDatabase,
        splitmirror_session: SessionRunner,
        fault_mode: str,
        tmp_path: Path,
    ) -> None:
        splitmirror_database.create_ledger()
        config = splitmirror_session.config(splitmirror_database, fault_mode)
        killed = run_killed(config.source, point, tmp_path)
        phase = point.split("-")[0]
        reason = self._after(splitmirror_database, splitmirror_session, killed.session_id, phase, fault_mode)
        assert f"died in {phase}" in reason

    def test_the_connection_killed_from_the_server_side(
        self, splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, fault_mode: str
    ) -> None:
        splitmirror_database.create_ledger()
        try:
            splitmirror_database.kill_connections()
        except NotImplementedError as why:
            pytest.skip(str(why))
        killed: list[int] = []
        killer = _Act(Phase.SPLIT, lambda _s: killed.append(splitmirror_database.kill_connections()))
        try:
            summary = splitmirror_session.run(splitmirror_database, fault_mode, killer)
        except SessionFailed as failure:
            assert killed and killed[0] > 0, "no connection was killed"
            assert Phase[failure.phase].in_window, failure.phase
            self._after(
                splitmirror_database, splitmirror_session, failure.session_id, failure.phase, fault_mode
            )
            return
        # A mode that needs its connection only to enter (FREEZE's CHECKPOINT) may finish: the
        # filesystem freeze made the image; it must then restore like any other.
        assert summary.status == "DONE" and killed and killed[0] > 0
        restored = splitmirror_session.restore(summary, splitmirror_session.workspace.root / "restored")
        assert splitmirror_database.restored_ledger(restored).integrity_ok

    def test_the_target_filesystem_full(
        self, splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, fault_mode: str
    ) -> None:
        if os.geteuid() != 0:
            pytest.skip("a small target filesystem (tmpfs) needs root")
        splitmirror_database.create_ledger()
        in_use = sum(p.stat().st_size for p in splitmirror_database.files_in_use())
        archives = splitmirror_session.workspace.archives
        size = max(4096, in_use // 2 // 4096 * 4096)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(archives)], check=True
        )
        try:
            with pytest.raises(SessionFailed) as failure:
                splitmirror_session.run(splitmirror_database, fault_mode)
            assert failure.value.phase == "BACKUP" and "is full" in failure.value.reason, failure.value.reason
            assert archives_left(archives) == [], "the partial archive was left on the full filesystem"
        finally:
            subprocess.run(["umount", str(archives)], check=True)
        self._after(splitmirror_database, splitmirror_session, failure.value.session_id, "BACKUP", fault_mode)

    def test_a_file_gone_from_the_split_image(
        self, splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, fault_mode: str
    ) -> None:
        """A file the engine discovered disappears from the split image before BACKUP reads it
        (the mirror lost it): BACKUP stops, naming it, rather than archive an incomplete set."""
        splitmirror_database.create_ledger()
        gone: list[str] = []

        def lose(session: Session) -> None:
            kept = [f for f in session.files if not f.may_vanish]
            target = session.config.mirror.mirror / session.mirror.relative(kept[0].path)  # type: ignore[union-attr]
            target.unlink()
            gone.append(str(session.mirror.relative(kept[0].path)))  # type: ignore[union-attr]

        with pytest.raises(SessionFailed) as failure:
            splitmirror_session.run(splitmirror_database, fault_mode, _Act(Phase.BACKUP, lose))
        assert failure.value.phase == "BACKUP" and gone[0] in failure.value.reason, failure.value.reason
        self._after(splitmirror_database, splitmirror_session, failure.value.session_id, "BACKUP", fault_mode)

    def test_the_mirror_lost_mid_backup(
        self,
        splitmirror_database: LedgerDatabase,
        splitmirror_session: SessionRunner,
        fault_mode: str,
        tmp_path: Path,
    ) -> None:
        """The split mirror deleted once BACKUP has archived its first bytes.  BACKUP reads
        ahead (docs/archive.md): what it had read before the loss is archived, and what it had
        not fails the session, naming the file.  A database small enough to have been read whole
        by then gives a session that is DONE, and then its archive must restore whole."""
        splitmirror_database.create_ledger()
        files: list[Path] = []

        def lose(session: Session) -> None:
            files.extend(f.path for f in session.files)
            if len(files) > 1:  # with one file, BACKUP already holds the only one open
                shutil.rmtree(session.config.mirror.mirror)

        try:
            summary = splitmirror_session.run(
                splitmirror_database, fault_mode, _Act(Phase.BACKUP, lose, on_progress=True)
            )
        except SessionFailed as failed:
            failure = failed
        else:
            if len(files) == 1:
                pytest.skip(f"needs two database files or more; this database has one ({files[0].name})")
            if not files:
                pytest.skip("BACKUP read no byte to act on: create_ledger left the database's files empty")
            restored = splitmirror_database.restored_ledger(
                splitmirror_session.restore(summary, tmp_path / "r")
            )
            assert restored.integrity_ok, f"DONE although the mirror went, and the restore fails: {restored}"
            return
        assert failure.phase == "BACKUP" and "split mirror failed" in failure.reason, failure.reason
        self._after(splitmirror_database, splitmirror_session, failure.session_id, "BACKUP", fault_mode)

    def test_a_lock_held_past_max_window(
        self, splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, fault_mode: str
    ) -> None:
        splitmirror_database.create_ledger()
        blocker = splitmirror_database.blocker(fault_mode)
        if blocker is None:
            pytest.skip(f"nothing a client holds makes {fault_mode}'s quiesce wait on this database")
        with blocker, pytest.raises(SessionFailed) as failure:
            splitmirror_session.run(splitmirror_database, fault_mode, max_window="1s")
        assert failure.value.phase == "QUIESCE", failure.value
        self._after(
            splitmirror_database, splitmirror_session, failure.value.session_id, "QUIESCE", fault_mode
        )
