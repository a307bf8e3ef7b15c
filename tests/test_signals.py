"""SIGTERM inside the window and SIGKILL of a whole session, on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import writable_now
from splitmirror.catalog import SqliteCatalog
from splitmirror.config import load_config
from splitmirror.errors import SessionInterrupted
from splitmirror.hooks import Hooks
from splitmirror.plugins import load_plugins
from splitmirror.session import Session
from splitmirror.window import SignalGuard

# A session that signals the test (a marker file) once it is inside PHASE, then sleeps there.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from splitmirror import impl
    from splitmirror.cli import main
    from splitmirror.hooks import Hooks
    from splitmirror.phases import Phase
    from splitmirror.session import Session
    from splitmirror.config import load_config

    config, phase, marker = sys.argv[1], Phase[sys.argv[2]], Path(sys.argv[3])

    class Stall:
        @impl
        def splitmirror_phase_started(self, session, phase):
            if phase is wanted:
                marker.write_text(str(session.id))
                time.sleep(60)

    wanted = phase
    hooks = Hooks()
    hooks.register(Stall(), "stall")
    Session(load_config(config), hooks).run()
    """
)


def start_stalled(config: Path, phase: str, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "stalled_session.py"
    script.write_text(SCRIPT)
    marker = tmp_path / "inside"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(config), phase, str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the session never reached the phase"
        time.sleep(0.02)
    return proc, marker


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_sigterm_in_the_window_unquiesces_and_records(
    mode: str, ledger: Path, write_config: Any, tmp_path: Path
) -> None:
    config = write_config(mode=mode)
    proc, marker = start_stalled(config, "DISCOVER", tmp_path)
    if mode == "freeze":
        assert not writable_now(ledger), "FREEZE holds the write lock inside the window"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "interrupted by SIGTERM" in err
    assert writable_now(ledger)
    cfg = load_config(config)
    row = SqliteCatalog(cfg.session.catalog).get(int(marker.read_text()))  # type: ignore[arg-type]
    assert (row.status, row.failed_phase, row.error) == ("FAILED", "DISCOVER", "interrupted by SIGTERM")
    hooks = Hooks(load_plugins(entry_points_enabled=False))
    assert Session(cfg, hooks).run().status == "DONE", "the lock was released"


def test_sigkilled_session_leaves_no_stuck_lock_and_is_never_done(
    ledger: Path, write_config: Any, tmp_path: Path
) -> None:
    config = write_config(mode="freeze")
    proc, marker = start_stalled(config, "SPLIT", tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    # The kernel dropped the killed process's SQLite lock and our session flock.
    assert writable_now(ledger)
    cfg = load_config(config)
    hooks = Hooks(load_plugins(entry_points_enabled=False))
    assert Session(cfg, hooks).run().status == "DONE"
    killed = SqliteCatalog(cfg.session.catalog).get(int(marker.read_text()))  # type: ignore[arg-type]
    # The watchdog saw the pipe close and recorded why (tests/faults/ covers every phase).
    assert (killed.status, killed.failed_phase) == ("FAILED", "SPLIT"), "a killed session is never shown DONE"
    assert killed.error and "died in SPLIT" in killed.error


def test_a_signal_after_a_nested_deferred_block_is_still_deferred() -> None:
    """The failure path holds signals for its bookkeeping and, inside that, while it releases
    the window: the inner block ending must not let a second Ctrl-C through the outer one."""
    with SignalGuard(max_window=30) as guard:
        assert guard.installed, "the guard installs its handlers in the main thread only"
        with guard.deferred():
            with guard.deferred():
                pass  # the release, done
            os.kill(os.getpid(), signal.SIGINT)  # the bookkeeping still runs
            time.sleep(0.05)  # the handler has run by now
            assert isinstance(guard.pending, SessionInterrupted)
        with pytest.raises(SessionInterrupted, match="SIGINT"):
            guard.raise_pending()
        with pytest.raises(SessionInterrupted, match="SIGTERM"):  # outside every block: raised
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
