"""Catalog crash safety: sessions SIGKILLed at random moments, catalog writes included.  The
catalog still opens and passes SQLite's integrity check, ``list`` works, every ``DONE`` session's
archive is there and verifies, and no row stays ``STARTED`` once the next session has run."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from splitmirror.catalog import SqliteCatalog
from splitmirror.cli import main
from splitmirror.config import load_config
from splitmirror.workload import create_ledger


def test_sessions_killed_at_random_leave_a_sound_catalog(root: Path, write_config: Any) -> None:
    create_ledger(root / "primary" / "ledger.db", rows=100_000)
    config = write_config(mode="hot-backup")
    catalog = Path(load_config(config).session.catalog or "")
    argv = [sys.executable, "-m", "splitmirror", "backup", "--quiet", str(config)]
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    whole = time.monotonic() - start  # a whole run, interpreter start included
    phases = sum(p.duration_ms for p in SqliteCatalog(catalog).get(1).phases) / 1000
    startup = whole - phases
    rng = random.Random(7)
    delay, inside = startup * 0.9, 0  # adapted as we go: a loaded machine starts Python slower
    for _ in range(40):
        rows = len(SqliteCatalog(catalog).sessions())
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay + rng.uniform(0, phases))  # anywhere from INIT's catalog row on
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.1)  # the watchdog records the death
        new = SqliteCatalog(catalog).sessions()[rows:]
        if not new:
            delay += 0.05  # killed before its row existed: later
        elif new[0].status == "DONE":
            delay *= 0.8  # it finished first: earlier
        else:
            inside += 1
            if inside == 8:
                break
    assert inside >= 3, f"only {inside} sessions were killed after their row existed"
    final = CliRunner().invoke(main, ["backup", "--quiet", str(config)])
    assert final.exit_code == 0, final.output
    with closing(sqlite3.connect(catalog)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    listed = CliRunner().invoke(main, ["list", "--catalog", str(catalog)])
    assert listed.exit_code == 0, listed.output
    sessions = SqliteCatalog(catalog).sessions()
    assert not [s.id for s in sessions if s.status == "STARTED"], "rows of dead sessions left STARTED"
    done = [s for s in sessions if s.status == "DONE"]
    failed = [s for s in sessions if s.status == "FAILED"]
    assert done and len(failed) >= 3
    for session in done:
        assert session.archive and Path(session.archive).exists(), (
            f"session {session.id} is DONE without an archive"
        )
        verified = CliRunner().invoke(main, ["verify", str(session.id), "--catalog", str(catalog)])
        assert verified.exit_code == 0, verified.output
    assert all(s.failed_phase and s.error for s in failed)
    for session in failed:
        assert not session.archive or not Path(session.archive).exists(), "a FAILED session left its archive"
