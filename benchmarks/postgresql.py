"""pgbench during a HOT_BACKUP session against pgbench alone: the window splitmirror holds and the
throughput the database keeps while a session runs (issue 4's benchmark, not a test).

Each server (``--server``, repeatable) is a throw-away cluster: ``host``, from the host's binaries
(``HostPostgres``) in a scratch directory under /var/tmp, or ``container-VERSION``, in a container
of the image the tests use (``ContainerPostgres``), its data directory on a loop-device ext4 of
its own; by default both, the container on the newest PostgreSQL the images know.  pgbench is the
server's own: the host's binaries, or the container's run by ``docker exec``, so both talk to the
server over its Unix socket (the host's pgbench over TCP would go through the engine's port proxy,
a process of its own competing for the 2 CPUs, which the host run does not have).  Baseline and
session runs are interleaved in one run, and the directory mirror persists between repetitions, so
the first session is a full copy and the later ones are incremental.  Each server's result replaces
its own section (``<!-- postgresql: container-18 -->``) of docs/performance.md.  Run as root
(with a Docker engine for a container): ``.venv/bin/python benchmarks/postgresql.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from report import (
    each_server,
    replace_section,
    server_arguments,
    server_section,
    shared_machine,
    tools,
    tracking_of,
    window_medians,
    window_phases,
)
from splitmirror.catalog.base import SessionSummary
from splitmirror.testing.containers import newest, versions
from splitmirror.testing.drill import SessionRunner, Workspace
from splitmirror.testing.loopfs import loop_filesystem
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres, write_pgpass
from splitmirror_postgresql.testing import (
    HostLedgerDatabase,
    HostPostgres,
    PostgresLedgerDatabase,
    run_as_postgres,
    unavailable,
)

#: Every server's section starts with ``<!-- postgresql: host-15 -->`` (or ``container-18``).
GROUP = "<!-- postgresql"
SCALE, CLIENTS, THREADS, SECONDS, LEAD, DISK = 20, 4, 2, 15, 3.0, 4 << 30
#: The budget of the third variant: what a DBA sets for a session the server should barely feel.
BUDGET = {"io_priority": "idle", "cpu_nice": 19}
PROGRESS = re.compile(r"^progress: ([\d.]+) s, ([\d.]+) tps", re.M)
TOTAL = re.compile(r"^tps = ([\d.]+)", re.M)


@dataclasses.dataclass
class Run:
    """One pgbench run; ``session`` set when a HOT_BACKUP session ran during it."""

    tps: float
    progress: list[tuple[float, float]]  # (seconds since start, tps of the second ending there)
    session: SessionSummary | None = None
    span: tuple[float, float] = (0.0, 0.0)  # the session, in seconds since pgbench started
    budgeted: bool = False  # the session ran under :data:`BUDGET`
    #: CPU seconds (user + system, every thread) the session took, and the share of the
    #: machine's CPU time left idle over the whole pgbench run.
    session_cpu: float = 0.0
    idle: float = 0.0

    def phase_ms(self, name: str) -> float:
        assert self.session is not None
        return sum(p.duration_ms for p in self.session.phases if p.name == name)

    @property
    def min_tps(self) -> float:
        """The lowest per-second TPS among the seconds that overlap the session."""
        start, end = self.span
        seen = [tps for t, tps in self.progress if start < t <= end + 1.0]
        return min(seen) if seen else float("nan")


@dataclasses.dataclass
class Cluster:
    """A started cluster to measure: the contract suite's database on it, how to run its
    pgbench (arguments → output, RuntimeError when it fails) and what the page says of it."""

    database: PostgresLedgerDatabase
    pgbench: Callable[..., str]
    #: Where it runs and its pgbench comes from, for the server fact.
    where: str
    #: Where its data directory and the mirror are, for the server fact.
    disks: str
    #: ``host`` or ``container``: with the major version, the section's marker.
    kind: str


def checked(args: tuple[str, ...], code: int, output: str) -> str:
    if code != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} failed: {output.strip()}")
    return output


@contextlib.contextmanager
def host_cluster(scratch: Path) -> Iterator[Cluster]:
    """A cluster from the host's binaries, data directory and mirror on the filesystem of /var/tmp."""
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    server = HostPostgres(scratch / "pg")
    try:
        if not Path(server.bin("pgbench")).is_file():
            raise RuntimeError(f"{server.bin('pgbench')} is missing")
        server.init(scratch / "pgdata").start()

        def pgbench(*args: str) -> str:
            result = run_as_postgres([server.bin("pgbench"), *args, server.conninfo], timeout=900)
            return checked(args, result.returncode, result.stdout + result.stderr)

        fs = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE", "--target", str(scratch)], capture_output=True, text=True
        ).stdout.strip()
        where = f"from {server.bindir}, pgbench from the same directory"
        disks = f"data directory and mirror on {fs} under {scratch.parent}"
        yield Cluster(HostLedgerDatabase(server), pgbench, where, disks, "host")
    finally:
        server.stop()


@contextlib.contextmanager
def container_cluster(scratch: Path, version: str) -> Iterator[Cluster]:
    """PostgreSQL ``version`` in a container, its data directory on a loop-device ext4 of its
    own (as the tests run it); splitmirror reads the password from ``$PGPASSFILE``."""
    password = secrets.token_urlsafe(16)
    os.environ["PGPASSFILE"] = str(write_pgpass(scratch / "pgpass", password))
    os.environ.pop("PGPASSWORD", None)
    try:
        with loop_filesystem(scratch, DISK) as disk:
            server = ContainerPostgres(version, disk / "pgdata", password)
            try:  # stopped before the disk under its bind mount goes away
                server.start()
                container = server.container
                assert container is not None

                def pgbench(*args: str) -> str:
                    return checked(args, *container.exec(["pgbench", *args], user="postgres"))

                where = f"in a container ({server.image}), its own pgbench run by `docker exec`"
                disks = "data directory on a loop-device ext4, mirror and archives on /var/tmp"
                yield Cluster(ContainerLedgerDatabase(server), pgbench, where, disks, "container")
            finally:
                server.stop()
    finally:
        os.environ.pop("PGPASSFILE", None)


def bench(cluster: Cluster, runner: SessionRunner | None) -> Run:
    """pgbench for SECONDS; with a runner, one HOT_BACKUP session starts LEAD seconds in."""
    out: list[str | BaseException] = []

    def work() -> None:
        try:
            out.append(cluster.pgbench("-c", str(CLIENTS), "-j", str(THREADS), "-T", str(SECONDS), "-P", "1"))
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            out.append(error)

    thread = threading.Thread(target=work, name="pgbench")
    t0, idle0 = time.monotonic(), cpu_idle()
    thread.start()
    summary, span, cpu = None, (0.0, 0.0), 0.0
    try:
        if runner is not None:
            time.sleep(LEAD)
            start, cpu0 = time.monotonic() - t0, own_cpu()
            summary = runner.run(cluster.database, "hot-backup")
            span, cpu = (start, time.monotonic() - t0), own_cpu() - cpu0
    finally:
        thread.join()
    idle1 = cpu_idle()
    if isinstance(out[0], BaseException):
        raise out[0]
    found = TOTAL.search(out[0])
    if found is None:
        raise RuntimeError(f"no 'tps =' line in pgbench's output: {out[0].strip()}")
    progress = [(float(t), float(tps)) for t, tps in PROGRESS.findall(out[0])]
    idle = (idle1[0] - idle0[0]) / max(idle1[1] - idle0[1], 1)
    return Run(float(found[1]), progress, summary, span, session_cpu=cpu, idle=idle)


def own_cpu() -> float:
    """CPU seconds this process (the session's every thread) has used.  Not its children: the
    host's pgbench is one, and would count whole if it ended during a session."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def cpu_idle() -> tuple[int, int]:
    """The machine's idle (and I/O wait) and total CPU ticks so far (``/proc/stat``)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def describe(cluster: Cluster) -> tuple[str, str, list[str]]:
    """The section's marker and heading, named from the server's own version, and the run's facts."""
    with psycopg.connect(cluster.database.url, connect_timeout=5) as conn:
        version, buffers, wal, checksums = conn.execute(
            "SELECT current_setting('server_version'), current_setting('shared_buffers'), "
            "current_setting('max_wal_size'), current_setting('data_checksums')"
        ).fetchone() or ("?", "?", "?", "?")
    major = str(version).split(".")[0]
    marker = f"{GROUP}: {cluster.kind}-{major} -->"
    place = "in a container" if cluster.kind == "container" else "from the host's binaries"
    heading = f"## PostgreSQL {major} {place}: pgbench during a HOT_BACKUP session"
    return (
        marker,
        heading,
        [
            shared_machine(),
            f"server: PostgreSQL {version} {cluster.where}; default settings (shared_buffers {buffers}, "
            f"max_wal_size {wal}), data checksums {checksums}; {cluster.disks}, page cache warm",
            tools(),
        ],
    )


def med(values: list[float]) -> float:
    return statistics.median(values)


def render(
    marker: str,
    heading: str,
    facts: list[str],
    base: list[Run],
    during: list[Run],
    budgeted: list[Run],
    size_mib: float,
) -> str:
    base_tps, tps = med([r.tps for r in base]), med([r.tps for r in during])
    cpu_budget = SECONDS * (os.cpu_count() or 1)
    rows = [
        "| run | pgbench TPS | min TPS/s during session | window ms | writes blocked ms | SYNC ms "
        "| SPLIT ms | BACKUP ms | session s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    rows += [f"| baseline {i + 1} | {r.tps:.0f} | | | | | | | |" for i, r in enumerate(base)]
    first = min([*during, *budgeted], key=lambda r: r.session.started_at if r.session else "")
    for name, runs in (("session", during), ("budgeted session", budgeted)):
        for i, r in enumerate(runs):
            note = " (full copy)" if r is first else ""
            rows.append(
                f"| {name} {i + 1}{note} | {r.tps:.0f} | {r.min_tps:.0f} | {r.session.window_ms or 0:.0f} "  # type: ignore[union-attr]
                f"| {r.session.blocked_ms or 0:.0f} | {r.phase_ms('SYNC'):.0f}"  # type: ignore[union-attr]
                f" | {r.phase_ms('SPLIT'):.0f} | {r.phase_ms('BACKUP'):.0f} "
                f"| {r.span[1] - r.span[0]:.1f} |"
            )
    windows = [r.session.window_ms or 0.0 for r in during]  # type: ignore[union-attr]
    blocked = [r.session.blocked_ms or 0.0 for r in during]  # type: ignore[union-attr]
    lengths = [r.span[1] - r.span[0] for r in during]
    dips = [r.min_tps for r in during]
    rows.append(
        f"| **median** baseline / session | {base_tps:.0f} / {tps:.0f} | {med(dips):.0f} "
        f"| {med(windows):.0f} | {med(blocked):.0f} | {med([r.phase_ms('SYNC') for r in during]):.0f} "
        f"| {med([r.phase_ms('SPLIT') for r in during]):.0f} "
        f"| {med([r.phase_ms('BACKUP') for r in during]):.0f} | {med(lengths):.1f} |"
    )
    b_tps, b_dips = med([r.tps for r in budgeted]), [r.min_tps for r in budgeted]
    b_lengths = [r.span[1] - r.span[0] for r in budgeted]
    rows.append(
        f"| **median** budgeted session | {b_tps:.0f} | {med(b_dips):.0f} "
        f"| {med([r.session.window_ms or 0.0 for r in budgeted]):.0f} "  # type: ignore[union-attr]
        f"| {med([r.session.blocked_ms or 0.0 for r in budgeted]):.0f} "  # type: ignore[union-attr]
        f"| {med([r.phase_ms('SYNC') for r in budgeted]):.0f} "
        f"| {med([r.phase_ms('SPLIT') for r in budgeted]):.0f} "
        f"| {med([r.phase_ms('BACKUP') for r in budgeted]):.0f} | {med(b_lengths):.1f} |"
    )
    prose = (
        f"With a session running, pgbench kept {tps / base_tps:.2f}× its baseline throughput over the "
        f"whole {SECONDS} s run (median {tps:.0f} against {base_tps:.0f} TPS), although the session "
        f"covered only a median {med(lengths):.1f} s of it. The window (QUIESCE through UNQUIESCE: "
        f"backup start, the mirror's split, backup stop) took a median {med(windows):.0f} ms "
        f"({window_medians(r.session for r in during)}; final passes: "
        f"{tracking_of(r.session for r in during)}); SYNC before it and BACKUP "
        "(archiving the split copy) after it take the rest of the session. HOT_BACKUP holds no "
        "writer except while a mirror freezes the data filesystem for its final pass (the block "
        "mirror does; the tracked directory mirror only writes it back): writes were "
        f"blocked a median {med(blocked):.0f} ms per session. The slowest second that "
        f"overlapped a session did a median {med(dips):.0f} TPS, {med(dips) / base_tps:.2f}× the "
        "baseline average, the cost of the session's reading, hashing and writing sharing the "
        f"machine's {os.cpu_count()} CPUs and disk with the server. Only the first session copied "
        "the whole data directory; the later ones copied what pgbench had changed. With "
        f'`io_priority = "{BUDGET["io_priority"]}"` and `cpu_nice = {BUDGET["cpu_nice"]}` '
        f"(the budgeted sessions), pgbench kept {b_tps / base_tps:.2f}× its throughput and its "
        f"slowest second {med(b_dips) / base_tps:.2f}×, the session taking a median "
        f"{med(b_lengths):.1f} s. Where the CPU went: the baseline runs left the machine's CPUs "
        f"{med([r.idle for r in base]):.0%} idle or waiting for the disk; a session used a median "
        f"{med([r.session_cpu for r in during]):.1f} CPU-seconds (user and system, all its "
        f"threads), {med([r.session_cpu for r in during]) / cpu_budget:.0%} of the "
        f"{cpu_budget:.0f} the machine had over a run. Were all of it taken from a pgbench that "
        f"needed every CPU, pgbench would keep about "
        f"{1 - med([r.session_cpu for r in during]) / cpu_budget:.2f}× of its throughput; a "
        "loss beyond that is not CPU the session used (its disk traffic, the checkpoints and the "
        "page cache are candidates this benchmark does not tell apart)."
    )
    intro = (
        "Generated by `benchmarks/postgresql.py` (as root); rerun it rather than editing the numbers. "
        f"`pgbench -i -s {SCALE}` ({size_mib:.0f} MiB data directory), then `pgbench -c {CLIENTS} -j "
        f"{THREADS} -T {SECONDS} -P 1` alone (baseline), with one HOT_BACKUP session started "
        f"{LEAD:.0f} s into the run, and with one under a budget, {len(base)} repetitions each, "
        "interleaved in one run. The mirror "
        "persists between sessions: the first is a full copy, the later ones are incremental. The "
        "per-second minimum counts only the seconds that overlap the session."
    )
    return server_section(marker, heading, intro, facts, "\n".join(rows), prose)


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / (1 << 20)


def server_name(text: str) -> str:
    """``host`` or ``container-VERSION`` with a version the images know (``--server``'s type)."""
    kind, _, version = text.partition("-")
    if text != "host" and (kind != "container" or version not in versions("postgres")):
        known = ", ".join(f"container-{v}" for v in versions("postgres"))
        raise argparse.ArgumentTypeError(f"{text!r} is neither host nor one of {known}")
    return text


def measure(server: str, reps: int, out: Path) -> None:
    """Run both variants ``reps`` times on ``server`` (``host``, ``container-18``) and write its section."""
    scratch = Path(tempfile.mkdtemp(prefix="splitmirror-pgbench-", dir="/var/tmp"))
    kind, _, version = server.partition("-")
    try:
        started = host_cluster(scratch) if kind == "host" else container_cluster(scratch, version)
        with started as cluster:
            print(f"pgbench -i -s {SCALE} ...", flush=True)
            cluster.pgbench("-i", "-s", str(SCALE), "-q")
            size_mib = du_mib(cluster.database.datadir)
            base, during, budgeted = interleaved(cluster, Workspace(scratch / "ws").create(), reps)
            marker, heading, facts = describe(cluster)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    section = render(marker, heading, facts, base, during, budgeted, size_mib)
    print("\n" + section)
    replace_section(out, marker, section, group=GROUP)
    print(f"wrote {out}")


def interleaved(cluster: Cluster, ws: Workspace, reps: int) -> tuple[list[Run], list[Run], list[Run]]:
    """``reps`` rounds of a baseline, a session and a session under :data:`BUDGET`, the order
    rotating from round to round."""
    runner = SessionRunner(ws)
    base: list[Run] = []
    during: list[Run] = []
    budgeted: list[Run] = []
    variants = ["baseline", "session", "budgeted"]
    for rep in range(reps):
        for variant in variants[rep % 3 :] + variants[: rep % 3]:
            runner.session_options = BUDGET if variant == "budgeted" else {}
            run = bench(cluster, runner if variant != "baseline" else None)
            run.budgeted = variant == "budgeted"
            {"baseline": base, "session": during, "budgeted": budgeted}[variant].append(run)
            extra = (
                f", min {run.min_tps:.0f} TPS/s, window {run.session.window_ms:.0f} ms, session "
                f"{run.span[1] - run.span[0]:.1f} s {window_phases(run.session)}"
                if run.session
                else ""
            )
            print(f"  rep {rep + 1} {variant:<8} {run.tps:8.0f} TPS{extra}", flush=True)
            for archive in ws.archives.iterdir():  # only the mirror needs to persist
                archive.unlink()
    return base, during, budgeted


def main() -> None:
    args = server_arguments(
        __doc__,
        server_name,
        "host (the host's binaries, $SPLITMIRROR_PG_BINDIR) or container-VERSION, repeatable "
        f"(default: host and container-{newest('postgres')})",
    )
    if os.geteuid() != 0:
        sys.exit("cannot run the PostgreSQL benchmark: it needs root (the server's files, a loop device).")
    servers = args.server or ["host", f"container-{newest('postgres')}"]
    each_server(servers, lambda server: measure(server, args.reps, args.out))


if __name__ == "__main__":
    main()
