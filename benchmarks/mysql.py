"""Commits per second during MariaDB and MySQL backup sessions against the same workload alone:
the window splitmirror holds and the write throughput the server keeps (issue 5's benchmark, not
a test).

Each server (``--server NAME-VERSION``, repeatable; by default the newest MariaDB and the newest
MySQL the images know) runs in a container (the image the tests use), its data directory on a
loop-device ext4 of its own (both modes freeze it for InnoDB's atomic split), seeded with a bulk
table.  Ledger writers commit one row per transaction for ``SECONDS``; the baseline runs them
alone, the other runs start one HOT_BACKUP or FREEZE session ``LEAD`` seconds in.  Variants are
interleaved; the mirror persists, so the first session is a full copy.  Each server's result
replaces its own section (``<!-- mysql: mariadb-11.8 -->``) of docs/performance.md.  Run as root
with a Docker engine: ``.venv/bin/python benchmarks/mysql.py [--server mysql-9]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
from splitmirror_mysql.ledger import DATABASE
from splitmirror_mysql.testing import FLAVOURS, ContainerMysql, MysqlLedgerDatabase, write_option_file

#: Every server's section starts with ``<!-- mysql: NAME-VERSION -->``; a new one goes after the others.
GROUP = "<!-- mysql"
WRITERS, SECONDS, LEAD, BULK_MIB, DISK = 4, 12, 3.0, 256, 2 << 30


@dataclasses.dataclass
class Run:
    variant: str
    per_second: list[int]  # commits in each second of the run
    session: SessionSummary | None = None
    span: tuple[float, float] = (0.0, 0.0)  # the session, in seconds since the run started

    @property
    def rate(self) -> float:
        return sum(self.per_second) / len(self.per_second)

    @property
    def worst(self) -> int:
        """The fewest commits in a second that overlaps the session (any second for the baseline)."""
        start, end = self.span if self.session else (0.0, float(SECONDS))
        seen = [n for i, n in enumerate(self.per_second) if i + 1 > start and i < end]
        return min(seen) if seen else 0

    def phase_ms(self, name: str) -> float:
        assert self.session is not None
        return sum(p.duration_ms for p in self.session.phases if p.name == name)


def commits_per_second(server: ContainerMysql, t0: float) -> list[int]:
    """Commits in each second since ``t0`` (host clock, which the container shares), from the
    ledger's own commit-time column."""
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute(
            f"SELECT FLOOR(UNIX_TIMESTAMP(at) - %s), COUNT(*) FROM {DATABASE}.ledger "
            "WHERE UNIX_TIMESTAMP(at) >= %s AND UNIX_TIMESTAMP(at) < %s GROUP BY 1",
            (t0, t0, t0 + SECONDS),
        )
        found = {int(second): int(count) for second, count in cursor.fetchall()}
    return [found.get(second, 0) for second in range(SECONDS)]


def workload(database: MysqlLedgerDatabase, ws: Workspace, runner: SessionRunner | None, mode: str) -> Run:
    """WRITERS ledger writers for SECONDS; with a runner, one session starts LEAD seconds in."""
    acks = {w: ws.root / f"acks-{w}.txt" for w in range(1, WRITERS + 1)}
    t0 = time.time()
    procs = [subprocess.Popen(database.writer_command(w, path)) for w, path in acks.items()]
    summary, span = None, (0.0, 0.0)
    try:
        if runner is not None:
            time.sleep(LEAD)
            start = time.time() - t0
            summary = runner.run(database, mode)
            span = (start, time.time() - t0)
        time.sleep(max(0.0, SECONDS + 0.5 - (time.time() - t0)))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    return Run(mode if runner else "baseline", commits_per_second(database.server, t0), summary, span)


def seed(server: ContainerMysql) -> None:
    """A bulk InnoDB table of about BULK_MIB, so the mirror has a real data set to carry."""
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {DATABASE}.bulk (id INT AUTO_INCREMENT PRIMARY KEY, pad BLOB)")
        cursor.execute(f"INSERT INTO {DATABASE}.bulk (pad) VALUES (RANDOM_BYTES(1000))")
        rows = 1
        while rows * 1100 < BULK_MIB << 20:
            cursor.execute(
                f"INSERT INTO {DATABASE}.bulk (pad) SELECT RANDOM_BYTES(1000) FROM {DATABASE}.bulk"
            )
            rows *= 2


def marker(server: str) -> str:
    return f"{GROUP}: {server} -->"


def server_name(text: str) -> str:
    """``mariadb-11.8``: a flavour and a version the images know (``--server``'s type)."""
    flavour, _, version = text.partition("-")
    if flavour not in FLAVOURS or version not in versions(flavour):
        known = ", ".join(f"{name}-{v}" for name in FLAVOURS for v in versions(name))
        raise argparse.ArgumentTypeError(f"no image of {text!r} is known (known: {known})")
    return text


def describe(server: ContainerMysql, size_mib: float) -> tuple[str, list[str]]:
    """The server as it names itself (``MariaDB 11.8``, ``MySQL 9.7``: its flavour from
    ``VERSION()``, not from the image's name), and the run's facts."""
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, @@log_bin"
        )
        version, pool, flush, log_bin = cursor.fetchone() or ("?", 0, "?", 0)
    flavour = "MariaDB" if "mariadb" in str(version).lower() else "MySQL"
    release = re.match(r"\d+(\.\d+)?", str(version))
    name = f"{flavour} {release[0] if release else version}"
    return name, [
        shared_machine(),
        f"server: {flavour} {version} in a container ({server.image}), innodb_buffer_pool_size "
        f"{int(pool) >> 20} MiB, innodb_flush_log_at_trx_commit {flush}, binary log "
        f"{'on' if int(log_bin) else 'off'}; data directory ({size_mib:.0f} MiB) on a loop-device ext4, "
        "mirror and archives on /var/tmp",
        tools(),
    ]


def render(server: str, name: str, found: list[str], runs: list[Run]) -> str:
    med = statistics.median
    base = [r for r in runs if r.variant == "baseline"]
    base_rate = med([r.rate for r in base])
    rows = [
        "| variant | commits/s (whole run) | fewest commits in a second during the session | window ms "
        "| writes blocked ms | SYNC ms | SPLIT ms | BACKUP ms | session s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for variant in ("baseline", "hot-backup", "freeze"):
        chosen = [r for r in runs if r.variant == variant]
        if not chosen:
            continue
        if variant == "baseline":
            rows.append(f"| baseline (median of {len(chosen)}) | {med([r.rate for r in chosen]):.0f} "
                        f"| {med([r.worst for r in chosen]):.0f} | | | | | | |")  # fmt: skip
            continue
        rows.append(
            f"| {variant} (median of {len(chosen)}) | {med([r.rate for r in chosen]):.0f} "
            f"| {med([r.worst for r in chosen]):.0f} "
            f"| {med([r.session.window_ms or 0 for r in chosen if r.session]):.0f} "
            f"| {med([r.session.blocked_ms or 0 for r in chosen if r.session]):.0f} "
            f"| {med([r.phase_ms('SYNC') for r in chosen]):.0f} "
            f"| {med([r.phase_ms('SPLIT') for r in chosen]):.0f} "
            f"| {med([r.phase_ms('BACKUP') for r in chosen]):.0f} "
            f"| {med([r.span[1] - r.span[0] for r in chosen]):.1f} |"
        )

    def median_of(variant: str, value: Callable[[Run], float]) -> float:
        return med([value(r) for r in runs if r.variant == variant])

    hot_rate, freeze_rate = median_of("hot-backup", lambda r: r.rate), median_of("freeze", lambda r: r.rate)
    hot_window = median_of("hot-backup", lambda r: r.session.window_ms or 0 if r.session else 0)
    freeze_window = median_of("freeze", lambda r: r.session.window_ms or 0 if r.session else 0)
    worst = {
        variant: median_of(variant, lambda r: r.worst) for variant in ("baseline", "hot-backup", "freeze")
    }
    better = "HOT_BACKUP" if worst["hot-backup"] > worst["freeze"] else "FREEZE"
    prose = (
        f"Over the whole {SECONDS} s run the writers kept {hot_rate / base_rate:.2f}× their baseline commit "
        f"rate with a HOT_BACKUP session and {freeze_rate / base_rate:.2f}× with a FREEZE session. "
        f"The window (QUIESCE through UNQUIESCE) took a median {hot_window:.0f} ms in HOT_BACKUP and "
        f"{freeze_window:.0f} ms in FREEZE (HOT_BACKUP's "
        f"{window_medians(r.session for r in runs if r.variant == 'hot-backup')}; FREEZE's "
        f"{window_medians(r.session for r in runs if r.variant == 'freeze').split(': ', 1)[1]}); "
        "the slowest second during a session saw a median "
        f"{worst['hot-backup']:.0f} commits (HOT_BACKUP) and {worst['freeze']:.0f} (FREEZE), against "
        f"{worst['baseline']:.0f} for the baseline's slowest second. Commits stall in both modes for the "
        "final mirror pass in SPLIT, which runs with the data filesystem frozen (InnoDB needs an atomic "
        "image: the writes-blocked column); FREEZE also holds commits for the rest of the window, while "
        "in HOT_BACKUP the writers keep committing up to the split and leave more to copy in that pass. "
        f"The final passes were: {tracking_of(r.session for r in runs)} (with the directory mirror's "
        "default, change tracking wherever the machine allows it; untracked, the final pass re-reads "
        f"every changed file in full, InnoDB's redo log among them). In this run {better} had the "
        "better slowest second."
    )
    intro = (
        "Generated by `benchmarks/mysql.py` (as root, with a Docker engine); rerun it rather than "
        f"editing the numbers. {WRITERS} ledger writers, each committing one row per transaction "
        f"for {SECONDS} s, alone (baseline) and with one session started {LEAD:.0f} s in, "
        f"{len(base)} repetitions of each variant, interleaved in one run. Commits per second come "
        "from the ledger's own commit-time column."
    )
    heading = f"## {name}: commits during HOT_BACKUP and FREEZE sessions"
    return server_section(marker(server), heading, intro, found, "\n".join(rows), prose)


def measure(server: str, reps: int, out: Path) -> None:
    """Run every variant ``reps`` times on ``server`` (``mariadb-11.8``) and write its section."""
    flavour, _, version = server.partition("-")
    scratch = Path(tempfile.mkdtemp(prefix="splitmirror-mysqlbench-", dir="/var/tmp"))
    try:
        with loop_filesystem(scratch, DISK) as disk:
            container = ContainerMysql(flavour, version, disk / "mysql", secrets.token_urlsafe(16))
            try:  # stopped before the disk under its bind mount goes away
                container.start()
                runs = interleaved(container, scratch, reps)
                size_mib = sum(p.stat().st_size for p in (disk / "mysql").rglob("*") if p.is_file())
                name, found = describe(container, size_mib / (1 << 20))
            finally:
                container.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    section = render(server, name, found, runs)
    print("\n" + section)
    replace_section(out, marker(server), section, group=GROUP)
    print(f"wrote {out}")


def interleaved(server: ContainerMysql, scratch: Path, reps: int) -> list[Run]:
    """Seed ``server``, then ``reps`` rounds of every variant, the order rotating each round."""
    ws = Workspace(scratch / "ws").create()
    database = MysqlLedgerDatabase(server, write_option_file(scratch / "my.cnf", server.password))
    database.create_ledger()
    print(f"seeding about {BULK_MIB} MiB ...", flush=True)
    seed(server)
    runner = SessionRunner(ws)
    runs: list[Run] = []
    variants = ["baseline", "hot-backup", "freeze"]
    for rep in range(reps):
        for variant in variants[rep % 3 :] + variants[: rep % 3]:
            run = workload(database, ws, None if variant == "baseline" else runner, variant)
            runs.append(run)
            window = ""
            if run.session:
                window = f", window {run.session.window_ms:.0f} ms {window_phases(run.session)}"
            line = f"  rep {rep + 1} {variant:<10} {run.rate:7.0f} commits/s, worst second {run.worst}"
            print(line + window, flush=True)
            for archive in ws.archives.iterdir():  # only the mirror needs to persist
                archive.unlink()
    return runs


def main() -> None:
    args = server_arguments(
        __doc__,
        server_name,
        "NAME-VERSION of an image the tests know, repeatable (default: "
        f"mariadb-{newest('mariadb')} and mysql-{newest('mysql')})",
    )
    if os.geteuid() != 0:
        sys.exit(
            "cannot run the MySQL benchmark: it needs root (a loop device, freezing, the server's files)."
        )
    servers = args.server or [f"mariadb-{newest('mariadb')}", f"mysql-{newest('mysql')}"]
    each_server(servers, lambda server: measure(server, args.reps, args.out))


if __name__ == "__main__":
    main()
