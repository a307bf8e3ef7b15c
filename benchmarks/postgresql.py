"""pgbench during a HOT_BACKUP session against pgbench alone: the window splitmirror holds and the
throughput the database keeps while a session runs (issue 4's benchmark, not a test).

A throw-away cluster from the host's binaries (``HostPostgres``) in a scratch directory under
/var/tmp; baseline and session runs are interleaved in one run, and the directory mirror persists
between repetitions, so the first session is a full copy and the later ones are incremental.  The
result replaces its own section (``<!-- postgresql -->``) of docs/performance.md.  Run as root:
``.venv/bin/python benchmarks/postgresql.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import splitmirror
from report import replace_section
from splitmirror.catalog.base import SessionSummary
from splitmirror.testing.drill import SessionRunner, Workspace
from splitmirror_postgresql.testing import (
    HostLedgerDatabase,
    HostPostgres,
    PostgresLedgerDatabase,
    run_as_postgres,
    unavailable,
)

MARKER = "<!-- postgresql -->"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
SCALE, CLIENTS, THREADS, SECONDS, LEAD = 20, 4, 2, 15, 3.0
PROGRESS = re.compile(r"^progress: ([\d.]+) s, ([\d.]+) tps", re.M)
TOTAL = re.compile(r"^tps = ([\d.]+)", re.M)


@dataclasses.dataclass
class Run:
    """One pgbench run; ``session`` set when a HOT_BACKUP session ran during it."""

    tps: float
    progress: list[tuple[float, float]]  # (seconds since start, tps of the second ending there)
    session: SessionSummary | None = None
    span: tuple[float, float] = (0.0, 0.0)  # the session, in seconds since pgbench started

    def phase_ms(self, name: str) -> float:
        assert self.session is not None
        return sum(p.duration_ms for p in self.session.phases if p.name == name)

    @property
    def min_tps(self) -> float:
        """The lowest per-second TPS among the seconds that overlap the session."""
        start, end = self.span
        seen = [tps for t, tps in self.progress if start < t <= end + 1.0]
        return min(seen) if seen else float("nan")


def pgbench(server: HostPostgres, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_as_postgres([server.bin("pgbench"), *args, server.conninfo], timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} failed: {(result.stdout + result.stderr).strip()}")
    return result


def bench(server: HostPostgres, runner: SessionRunner | None, database: PostgresLedgerDatabase) -> Run:
    """pgbench for SECONDS; with a runner, one HOT_BACKUP session starts LEAD seconds in."""
    out: list[subprocess.CompletedProcess[str] | BaseException] = []

    def work() -> None:
        try:
            out.append(pgbench(server, "-c", str(CLIENTS), "-j", str(THREADS), "-T", str(SECONDS), "-P", "1"))
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            out.append(error)

    thread = threading.Thread(target=work, name="pgbench")
    t0 = time.monotonic()
    thread.start()
    summary, span = None, (0.0, 0.0)
    try:
        if runner is not None:
            time.sleep(LEAD)
            start = time.monotonic() - t0
            summary = runner.run(database, "hot-backup")
            span = (start, time.monotonic() - t0)
    finally:
        thread.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    found = TOTAL.search(out[0].stdout)
    if found is None:
        raise RuntimeError(f"no 'tps =' line in pgbench's output: {out[0].stdout.strip()}")
    progress = [(float(t), float(tps)) for t, tps in PROGRESS.findall(out[0].stderr)]
    return Run(float(found[1]), progress, summary, span)


def machine(scratch: Path, server: HostPostgres) -> list[str]:
    cpu = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln), ":?")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / (1 << 20)
    fs = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(scratch)], capture_output=True, text=True
    ).stdout.strip()
    version = run_as_postgres([server.bin("postgres"), "--version"]).stdout.strip()
    return [
        f"machine: {os.cpu_count()} × {cpu.split(':')[1].strip()}, {mem:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}; shared with other work",
        f"server: {version} from {server.bindir}, default settings (shared_buffers 128 MB, "
        f"max_wal_size 1 GB), data directory and mirror on {fs} under {scratch.parent}, page cache warm",
        f"tools: Python {platform.python_version()}, splitmirror {splitmirror.__version__}",
    ]


def med(values: list[float]) -> float:
    return statistics.median(values)


def render(facts: list[str], base: list[Run], during: list[Run], size_mib: float) -> str:
    base_tps, tps = med([r.tps for r in base]), med([r.tps for r in during])
    rows = [
        "| run | pgbench TPS | min TPS/s during session | window ms | SYNC ms | SPLIT ms | BACKUP ms "
        "| session s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    rows += [f"| baseline {i + 1} | {r.tps:.0f} | | | | | | |" for i, r in enumerate(base)]
    for i, r in enumerate(during):
        note = " (full copy)" if i == 0 else ""
        rows.append(
            f"| session {i + 1}{note} | {r.tps:.0f} | {r.min_tps:.0f} | {r.session.window_ms or 0:.0f} "  # type: ignore[union-attr]
            f"| {r.phase_ms('SYNC'):.0f} | {r.phase_ms('SPLIT'):.0f} | {r.phase_ms('BACKUP'):.0f} "
            f"| {r.span[1] - r.span[0]:.1f} |"
        )
    windows = [r.session.window_ms or 0.0 for r in during]  # type: ignore[union-attr]
    lengths = [r.span[1] - r.span[0] for r in during]
    dips = [r.min_tps for r in during]
    rows.append(
        f"| **median** baseline / session | {base_tps:.0f} / {tps:.0f} | {med(dips):.0f} "
        f"| {med(windows):.0f} | {med([r.phase_ms('SYNC') for r in during]):.0f} "
        f"| {med([r.phase_ms('SPLIT') for r in during]):.0f} "
        f"| {med([r.phase_ms('BACKUP') for r in during]):.0f} | {med(lengths):.1f} |"
    )
    prose = (
        f"With a session running, pgbench kept {tps / base_tps:.2f}× its baseline throughput over the "
        f"whole {SECONDS} s run (median {tps:.0f} against {base_tps:.0f} TPS), although the session "
        f"covered only a median {med(lengths):.1f} s of it. The window (QUIESCE through UNQUIESCE: "
        f"backup start, the mirror's split, backup stop) took a median {med(windows):.0f} ms; SYNC "
        "before it and BACKUP (archiving the split copy) after it take the rest of the session. "
        "HOT_BACKUP blocks no writer: the slowest second that "
        f"overlapped a session did a median {med(dips):.0f} TPS, {med(dips) / base_tps:.2f}× the "
        "baseline average, the cost of the session's reading, hashing and writing sharing the "
        f"machine's {os.cpu_count()} CPUs and disk with the server. Only the first session copied "
        "the whole data directory; the later ones copied what pgbench had changed."
    )
    head = [
        MARKER,
        "## PostgreSQL: pgbench during a HOT_BACKUP session",
        "Generated by `benchmarks/postgresql.py` (as root); rerun it rather than editing the numbers. "
        f"`pgbench -i -s {SCALE}` ({size_mib:.0f} MiB data directory), then `pgbench -c {CLIENTS} -j "
        f"{THREADS} -T {SECONDS} -P 1` alone (baseline) and with one HOT_BACKUP session started "
        f"{LEAD:.0f} s into the run, {len(base)} repetitions each, interleaved in one run. The mirror "
        "persists between sessions: the first is a full copy, the later ones are incremental. The "
        "per-second minimum counts only the seconds that overlap the session.",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\n"
        + "\n".join(f"- {fact}" for fact in facts),
    ]
    wrapped = [p if p[0] in "<#-|" else textwrap.fill(p, 100, break_on_hyphens=False) for p in head]
    return "\n\n".join([*wrapped, "\n".join(rows), textwrap.fill(prose, 100)]) + "\n"


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each variant (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="page (default docs/performance.md)")
    args = parser.parse_args()
    reason = unavailable()
    if reason is not None:
        sys.exit(f"cannot run the PostgreSQL benchmark: {reason}.")
    scratch = Path(tempfile.mkdtemp(prefix="splitmirror-pgbench-", dir="/var/tmp"))
    server = HostPostgres(scratch / "pg")
    try:
        if not Path(server.bin("pgbench")).is_file():
            sys.exit(f"cannot run the PostgreSQL benchmark: {server.bin('pgbench')} is missing.")
        ws = Workspace(scratch / "ws").create()
        server.init(scratch / "pgdata").start()
        print(f"pgbench -i -s {SCALE} ...", flush=True)
        pgbench(server, "-i", "-s", str(SCALE), "-q")
        size_mib = du_mib(scratch / "pgdata")
        database, runner = HostLedgerDatabase(server), SessionRunner(ws)
        base: list[Run] = []
        during: list[Run] = []
        for rep in range(args.reps):
            for variant in ("baseline", "session")[:: 1 if rep % 2 == 0 else -1]:
                run = bench(server, runner if variant == "session" else None, database)
                (during if run.session else base).append(run)
                extra = (
                    f", min {run.min_tps:.0f} TPS/s, window {run.session.window_ms:.0f} ms, session "
                    f"{run.span[1] - run.span[0]:.1f} s"
                    if run.session
                    else ""
                )
                print(f"  rep {rep + 1} {variant:<8} {run.tps:8.0f} TPS{extra}", flush=True)
                for archive in ws.archives.iterdir():  # only the mirror needs to persist
                    archive.unlink()
        facts = machine(scratch, server)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    section = render(facts, base, during, size_mib)
    print("\n" + section)
    replace_section(args.out, MARKER, section)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
