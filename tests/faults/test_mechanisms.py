"""Each row of the fault matrix fails when the mechanism behind it is switched off: the tests
here switch it off and show the damage (tests/faults/test_faults_sqlite.py shows the watchdog's).

- the archive is discarded on failure (a full target would otherwise leave a partial archive);
- a file missing from the split image fails BACKUP (tolerating it archives an incomplete set
  that does not restore);
- ``max_window`` is enforced by an alarm in the window (without it, and without the watchdog
  that would SIGKILL the session a second later, a blocked quiesce keeps the database waiting as
  long as the blocker likes).
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from pathlib import Path

import pytest

from splitmirror.errors import SessionFailed, SplitmirrorError
from splitmirror.phases import Phase
from splitmirror.restore import restore_archive
from splitmirror.session import Session
from splitmirror.targets.builtin import FileTarget
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase
from splitmirror.testing.faults import _Act, archives_left
from splitmirror.watchdog import DISABLE_ENV
from splitmirror.window import SignalGuard


@pytest.fixture
def database(splitmirror_session: SessionRunner) -> SqliteLedgerDatabase:
    db = SqliteLedgerDatabase(splitmirror_session.workspace.primary)
    db.create_ledger()
    return db


def test_without_discard_a_full_target_leaves_a_partial_archive(
    database: SqliteLedgerDatabase, splitmirror_session: SessionRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("a small target filesystem (tmpfs) needs root")

    def close_only(self: FileTarget) -> None:  # the switch: close the file, remove nothing
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    monkeypatch.setattr(FileTarget, "discard", close_only)
    archives = splitmirror_session.workspace.archives
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4096", "tmpfs", str(archives)], check=True)
    try:
        with pytest.raises(SessionFailed, match="is full"):
            splitmirror_session.run(database, "hot-backup")
        assert archives_left(archives), "without discard the partial archive stays"
    finally:
        subprocess.run(["umount", str(archives)], check=True)


def test_tolerating_a_file_lost_from_the_image_archives_a_set_that_does_not_restore(
    database: SqliteLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    def lose_and_tolerate(session: Session) -> None:
        # The switch: every file "may vanish", so none is required.
        session.files = [dataclasses.replace(f, may_vanish=True) for f in session.files]
        (session.config.mirror.mirror / "ledger.db").unlink()

    summary = splitmirror_session.run(database, "hot-backup", _Act(Phase.BACKUP, lose_and_tolerate))
    assert summary.status == "DONE", "tolerated: the session calls an incomplete archive good"
    restored = restore_archive(Path(summary.archive or ""), splitmirror_session.workspace.root / "restored")
    assert not (restored.directory / "ledger.db").exists(), "the database itself is not in it"


def test_without_the_window_alarm_a_blocked_quiesce_lasts_as_long_as_the_blocker(
    database: SqliteLedgerDatabase, splitmirror_session: SessionRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SignalGuard, "arm", lambda self: None)
    # The watchdog is the second line: at max_window + 1 s it would SIGKILL this very process.
    monkeypatch.setenv(DISABLE_ENV, "1")
    blocker = database.blocker("freeze")
    assert blocker is not None
    started = time.monotonic()
    with blocker:
        done = threading.Event()

        def run() -> None:
            try:
                splitmirror_session.run(database, "freeze", max_window="1s")
            except (SessionFailed, SplitmirrorError):
                pass
            finally:
                done.set()

        session = threading.Thread(target=run)
        session.start()
        assert not done.wait(2.5), "with max_window 1s and no alarm, the session is still waiting"
    session.join(30)
    assert time.monotonic() - started > 2.5
