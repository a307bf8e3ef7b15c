"""``[session] io_limit``, ``io_priority`` and ``cpu_nice``: how they are written, what they set on
which threads, and what they do to SYNC and (not) to the window, against a real SQLite database.

Timing assertions are lower bounds only (a capped pass takes at least so long): a busy machine
makes things slower, never faster.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import WriteConfig
from splitmirror import impl, priority
from splitmirror.budget import Budget, start_unbudgeted
from splitmirror.budget import current as current_budget
from splitmirror.cli import main
from splitmirror.config import load_config
from splitmirror.errors import SessionInterrupted
from splitmirror.hooks import Hooks
from splitmirror.mirror.base import SyncStats
from splitmirror.mirror.precopy import Report, TrackedPasses
from splitmirror.phases import Phase
from splitmirror.session import Session
from splitmirror.testing.loopfs import device_of
from splitmirror.throttle import Cancelled, Throttle
from splitmirror.tracking import WriteTracker
from splitmirror.workload import create_ledger

MiB = 1 << 20
IDLE = priority.IDLE << priority.CLASS_SHIFT
needs_ioprio = pytest.mark.skipif(
    not priority.supported(), reason="I/O priorities need Linux on x86_64/aarch64"
)


def with_session_keys(path: Path, keys: str) -> Path:
    """The config at ``path`` with ``keys`` added to its ``[session]``."""
    path.write_text(path.read_text().replace("[session]\n", f"[session]\n{keys}\n", 1))
    return path


# -- the keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ("", "budget: none; SYNC and BACKUP run at full speed (see [session] io_limit)"),
        (
            'io_limit = "200MiB/s"\nio_priority = "idle"\ncpu_nice = 10',
            "budget: SYNC and BACKUP read at most 200.0 MiB/s, at I/O priority idle, at CPU nice 10; "
            "the window runs at full speed",
        ),
    ],
    ids=["none", "all"],
)
def test_check_says_what_the_budget_holds_sync_and_backup_to(
    keys: str, said: str, ledger: Path, write_config: WriteConfig
) -> None:
    config = with_session_keys(write_config(), keys)
    result = CliRunner().invoke(main, ["check", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["notes"][-1] == said
    shown = CliRunner().invoke(main, ["check", str(config)])
    assert said.split(";")[0] in shown.output, shown.output


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("", (None, "normal", 0)),
        ('io_limit = "200MiB/s"', (200 * MiB, "normal", 0)),
        ('io_limit = "50MB"', (50_000_000, "normal", 0)),
        ("io_limit = 1048576", (MiB, "normal", 0)),
        ('io_priority = "idle"\ncpu_nice = 19', (None, "idle", 19)),
        ('io_priority = "best-effort:7"', (None, "best-effort:7", 0)),
    ],
)
def test_the_keys_are_read(keys: str, expected: tuple[Any, ...], write_config: WriteConfig) -> None:
    session = load_config(with_session_keys(write_config(), keys)).session
    assert (session.io_limit, session.io_priority, session.cpu_nice) == expected


BAD = [
    (
        "io_limit = 0",
        "[session] io_limit: a rate must be more than zero bytes per second; leave the key out",
    ),
    ('io_limit = "0MiB/s"', "[session] io_limit: a rate must be more than zero"),
    ('io_limit = "-5MiB/s"', "[session] io_limit: a rate must be more than zero"),
    ('io_limit = "fast"', "[session] io_limit: 'fast' is not a rate; write it like \"200MiB/s\""),
    ('io_limit = "5MiB/h"', "[session] io_limit: '5MiB/h' is not a rate"),
    ('io_priority = "low"', '[session] io_priority: \'low\' is not an I/O priority; write "normal", "idle"'),
    ('io_priority = "best-effort:8"', "[session] io_priority: 'best-effort:8' is not an I/O priority"),
    ("cpu_nice = 20", "[session] cpu_nice: 20 is not a nice value; write a whole number from 0"),
    ("cpu_nice = -5", "[session] cpu_nice: -5 is not a nice value"),
    ("cpu_nice = true", "[session] cpu_nice: true is not a nice value"),
    ("io_limt = 5", "[session] has no key 'io_limt'; did you mean 'io_limit'?"),
]


@pytest.mark.parametrize(("keys", "expected"), BAD, ids=[keys for keys, _ in BAD])
def test_a_bad_value_is_one_sentence_exit_2(keys: str, expected: str, write_config: WriteConfig) -> None:
    path = with_session_keys(write_config(), keys)
    result = CliRunner().invoke(main, ["check", str(path)])
    message = result.output.strip()
    assert result.exit_code == 2, message
    assert message.startswith(f"error: {path}: ") and expected in message, message
    assert "Traceback" not in message and len(message.splitlines()) == 1, message


# -- the throttle ---------------------------------------------------------------------------


def test_two_threads_share_one_rate() -> None:
    """3 s worth of the rate, moved by two threads at once, takes at least 2.5 s."""
    rate, chunk = 4 * MiB, 64 * 1024
    throttle = Throttle(rate)

    def move(total: int) -> None:
        for _ in range(total // chunk):
            throttle.consume(chunk)

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(move, [3 * rate // 2, 3 * rate // 2]))
    assert time.monotonic() - started >= 2.5


def test_a_stopped_throttle_wakes_its_sleepers() -> None:
    throttle = Throttle(1)  # one byte a second: a MiB would take twelve days
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(throttle.consume, MiB)
        time.sleep(0.1)
        throttle.stopped.set()
        with pytest.raises(Cancelled):
            waiting.result(timeout=10)


# -- priorities -----------------------------------------------------------------------------


def in_a_thread(work: Any) -> Any:
    """``work()`` in a fresh thread, so that the test's own thread keeps its priorities even
    if what is tested fails to restore them."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result(timeout=60)


@needs_ioprio
@pytest.mark.parametrize(
    ("name", "value"), [("idle", IDLE), ("best-effort:7", priority.BEST_EFFORT << 13 | 7)]
)
def test_applied_sets_the_io_priority_of_the_thread_and_restores_it(name: str, value: int) -> None:
    def work() -> tuple[int, int, int]:
        before = priority.get_io_priority()
        with Budget(io_priority=name).applied():
            inside = priority.get_io_priority()
        return before, inside, priority.get_io_priority()

    before, inside, after = in_a_thread(work)
    assert inside == value
    assert after == before


def test_applied_sets_the_nice_value_of_the_thread_and_restores_it() -> None:
    if not priority.may_lower_nice(0):
        pytest.skip("lowering a nice value again needs CAP_SYS_NICE or RLIMIT_NICE here")

    def work() -> tuple[int, int, int]:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        with Budget(cpu_nice=19).applied():
            inside = os.getpriority(os.PRIO_PROCESS, tid)
        return before, inside, os.getpriority(os.PRIO_PROCESS, tid)

    before, inside, after = in_a_thread(work)
    assert (inside, after) == (19, before), "set inside, the thread's own value again after"


@needs_ioprio
def test_run_sets_the_work_thread_and_the_threads_it_starts_never_the_callers() -> None:
    caller = threading.get_native_id(), priority.get_io_priority(), priority.get_nice()

    def settings() -> tuple[int, int]:
        return priority.get_io_priority(), priority.get_nice()

    def work() -> dict[str, Any]:
        seen: dict[str, Any] = {"work": settings(), "tid": threading.get_native_id()}
        with ThreadPoolExecutor(2) as pool:  # as the block mirror's workers and BACKUP's read-ahead
            seen["pool"] = pool.submit(settings).result()
        tracker = threading.Thread(target=lambda: seen.update(unbudgeted=settings()))
        start_unbudgeted(tracker)  # as the write tracker's reader, which the window waits for
        tracker.join()
        return seen

    seen = Budget(io_priority="idle", cpu_nice=19).run(work)
    assert seen["tid"] != caller[0]
    assert seen["work"] == seen["pool"] == (IDLE, 19)
    assert seen["unbudgeted"] == caller[1:]
    assert (threading.get_native_id(), priority.get_io_priority(), priority.get_nice()) == caller


def test_run_raises_what_the_work_raised() -> None:
    with pytest.raises(ZeroDivisionError):
        Budget(cpu_nice=10).run(lambda: 1 // 0)


@contextmanager
def alarm_raising(seconds: float, error: BaseException) -> Iterator[None]:
    """``error`` raised in this (the main) thread after ``seconds``, as SIGTERM is in a session."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise error

    previous = signal.signal(signal.SIGALRM, handle)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("cpu_nice", [0, 19], ids=["a rate alone", "a rate and a nice value"])
def test_an_interrupted_run_stops_its_work_before_raising(cpu_nice: int) -> None:
    """With a rate, the work runs in a thread of its own even without priorities to set: an
    interrupt stops its throttled reads at once instead of waiting for them."""
    budget = Budget(io_limit=1, cpu_nice=cpu_nice)
    ended: list[BaseException] = []

    def work() -> None:
        try:
            budget.throttle.consume(MiB)  # twelve days at one byte a second
        except BaseException as error:
            ended.append(error)
            raise

    with pytest.raises(SessionInterrupted), alarm_raising(0.2, SessionInterrupted("SIGTERM")):
        budget.run(work)
    assert len(ended) == 1 and isinstance(ended[0], Cancelled), "the work was stopped and waited for"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_without_cap_sys_nice_run_still_nices_the_work_and_nothing_is_left_niced(tmp_path: Path) -> None:
    """A user who could not lower a nice value again: the work's thread is niced, the calling
    thread never is, and applied() leaves the nice value alone rather than fail to undo it."""
    code = textwrap.dedent(
        """
        import json, os
        from splitmirror import priority
        from splitmirror.budget import Budget
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)  # nobody, without capabilities from here on
        budget = Budget(cpu_nice=19)
        with budget.applied():
            applied = priority.get_nice()
        print(json.dumps({
            "may_lower": priority.may_lower_nice(0),
            "work": budget.run(priority.get_nice),
            "applied": applied,
            "caller": priority.get_nice(),
        }))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    start = os.getpriority(os.PRIO_PROCESS, 0)  # the child's starting value: this process's
    assert seen == {"may_lower": False, "work": 19, "applied": start, "caller": start}
    assert "cpu_nice is not applied" in done.stderr


class RateSeen:
    """A synchronizer that copies nothing and remembers the rate each pass would read at."""

    def __init__(self) -> None:
        self.rates: list[int | None] = []

    def full(self, report: Report) -> SyncStats:
        self.rates.append(current_budget().throttle.rate)
        return SyncStats()

    def delta(self, ranges: list[tuple[int, int]], report: Report) -> SyncStats:
        return self.full(report)

    def finish(self) -> None:
        pass


def test_tracked_sync_under_a_budget_leaves_the_window_nothing_of_it(tracked_disk: Path) -> None:
    """The write tracker started in SYNC reads at the caller's priority (the final pass waits
    for it in the window), and the last pre-copy pass before QUIESCE (the mirror's ``catch_up``,
    after the engine's ``before_window``) copies its delta at full speed."""
    budget, caller_nice = Budget(io_limit=64 * MiB, cpu_nice=19), priority.get_nice()
    sync = RateSeen()

    def bulk() -> tuple[int, int]:
        tracker = WriteTracker(device_of(tracked_disk)).__enter__()  # as TrackingOptions.passes does
        passes = TrackedPasses(sync, tracker, passes=2, budget=60)
        try:
            passes.bulk(lambda done, total: None)
            passes.last_precopy(lambda done, total: None)
            assert tracker._reader is not None and tracker._reader.native_id is not None
            return priority.get_nice(), os.getpriority(os.PRIO_PROCESS, tracker._reader.native_id)
        finally:
            passes.close()

    work_nice, reader_nice = budget.run(bulk)
    assert (work_nice, reader_nice) == (19, caller_nice)
    assert sync.rates[0] == 64 * MiB, "the bulk pass is throttled"
    assert sync.rates[-1] is None, "the last catch-up is not"
    assert all(rate == 64 * MiB for rate in sync.rates[:-1]), "only the last catch-up is unthrottled"
    assert len(sync.rates) >= 3  # bulk, at least one throttled catch-up, the full-speed one


# -- sessions -------------------------------------------------------------------------------


def add_ballast(db: Path, mib: int) -> None:
    """``mib`` MiB of incompressible rows in the database."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ballast (data BLOB)")
        conn.executemany("INSERT INTO ballast VALUES (?)", [(os.urandom(MiB),) for _ in range(mib)])
        conn.commit()


@pytest.fixture
def big_ledger(root: Path) -> Path:
    db = root / "primary" / "ledger.db"
    create_ledger(db, rows=200)
    add_ballast(db, 12)
    return db


def phase_ms(summary: dict[str, Any], name: str) -> float:
    return float(next(p["duration_ms"] for p in summary["phases"] if p["name"] == name))


def test_backup_with_io_limit_reads_the_primary_no_faster_than_the_limit(
    big_ledger: Path, write_config: WriteConfig
) -> None:
    """``splitmirror backup`` of a 12 MiB database at 4MiB/s: SYNC and BACKUP each take at least
    what their bytes cost at that rate (less one burst), and SYNC so at least 2 s."""
    rate = 4 * MiB
    config = with_session_keys(write_config(), 'io_limit = "4MiB/s"')
    done = subprocess.run(
        [sys.executable, "-m", "splitmirror", "backup", str(config), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    copied = summary["stats"]["bulk_sync"]["bytes_read"]  # a new mirror: all read from the primary
    assert copied >= big_ledger.stat().st_size
    sync_s = phase_ms(summary, "SYNC") / 1000
    assert sync_s >= (copied - rate * Throttle.BURST) / rate
    assert sync_s >= 2.0
    backup_s = phase_ms(summary, "BACKUP") / 1000  # BACKUP's read-ahead spends the same budget
    assert backup_s >= (summary["bytes"] - rate * Throttle.BURST) / rate, (backup_s, summary["bytes"])


class GrowAfterSync:
    """Adds ``mib`` MiB to the database once SYNC has ended: the final pass, in the window, has
    that much more to read than SYNC had."""

    def __init__(self, db: Path, mib: int) -> None:
        self.db, self.mib = db, mib

    @impl
    def splitmirror_phase_finished(
        self, session: Session, phase: Phase, duration_s: float, error: BaseException | None
    ) -> None:
        if phase is Phase.SYNC:
            add_ballast(self.db, self.mib)


def test_the_window_is_not_throttled(big_ledger: Path, write_config: WriteConfig, hooks: Hooks) -> None:
    """After SYNC, the database doubles: the final pass reads twice what SYNC read, yet the
    window stays shorter than SYNC (throttled, that pass alone would take twice as long)."""
    rate = 4 * MiB
    config = load_config(with_session_keys(write_config(), f"io_limit = {rate}"))
    remove = hooks.register(GrowAfterSync(big_ledger, 12), "grow-after-sync")
    try:
        session = Session(config, hooks)
        summary = session.run().to_json()
    finally:
        remove()
    bulk, final = summary["stats"]["bulk_sync"], summary["stats"]["final_sync"]
    assert final["bytes_read"] >= 2 * bulk["bytes_read"] - MiB  # the whole grown file, both sides
    assert phase_ms(summary, "SYNC") >= 2000  # SYNC was throttled ...
    assert summary["window_ms"] < phase_ms(summary, "SYNC")  # ... the window was not
