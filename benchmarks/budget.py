"""What each ``[session]`` budget setting costs the session, and what it spares the server.

A SQLite database of 512 MiB (a ledger and incompressible ballast) on the directory mirror; each
session starts from an empty mirror, so SYNC copies the whole database and BACKUP archives it:
a full session.  Beside each session runs a stand-in for the server's own work on the same
filesystem: random 4 KiB ``O_DIRECT`` reads of a file of its own, and a 4 KiB write with
``fdatasync`` after every four reads, counting operations per second; the same process runs
alone, for comparison, just before each session.  Settings: none, ``io_limit = "100MiB/s"``,
``io_priority = "idle"``, ``cpu_nice = 19``; interleaved (the order rotates each round), every
run from a cold page cache.  Not a test.  The result replaces its own section
(``<!-- budget -->``) of docs/performance.md.  Run as root:
``.venv/bin/python benchmarks/budget.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import closing
from pathlib import Path

from report import replace_section, shared_machine, tools
from splitmirror.config import load_config
from splitmirror.hooks import Hooks
from splitmirror.session import Session
from splitmirror.workload import create_ledger

MARKER = "<!-- budget -->"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
MiB = 1 << 20
SETTINGS = {
    "no budget": "",
    'io_limit = "100MiB/s"': 'io_limit = "100MiB/s"',
    'io_priority = "idle"': 'io_priority = "idle"',
    "cpu_nice = 19": "cpu_nice = 19",
}

#: The server's stand-in: until SIGTERM, four random O_DIRECT 4 KiB reads, then one 4 KiB write
#: and fdatasync; prints "operations seconds" at the end.
COMPETITOR = """
import mmap, os, random, signal, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
reads = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
writes = os.open(sys.argv[2], os.O_WRONLY)
blocks, buffer, rng = os.fstat(reads).st_size // 4096, mmap.mmap(-1, 4096), random.Random(4)
page, ops, started = os.urandom(4096), 0, time.monotonic()
while not stop:
    for _ in range(4):
        os.preadv(reads, [buffer], rng.randrange(blocks) * 4096)
    os.pwrite(writes, page, rng.randrange(16384) * 4096)
    os.fdatasync(writes)
    ops += 5
print(ops, time.monotonic() - started)
"""


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def fill(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
        os.fsync(out.fileno())


class Competitor:
    """The server's stand-in, started and stopped around what it competes with."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> Competitor:
        argv = [sys.executable, "-c", COMPETITOR, str(self.folder / "reads"), str(self.folder / "writes")]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        time.sleep(0.2)  # started and reading
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        ops, seconds = self.process.communicate(timeout=60)[0].split()
        self.rate = int(ops) / float(seconds)


def session_config(root: Path, name: str, keys: str) -> Path:
    path = root / f"{name}.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [session]
            name = "{name}"
            catalog = "{root}/catalog.db"
            {keys}

            [database]
            url = "sqlite://{root}/primary/budget.db"

            [mirror]
            primary = "{root}/primary"
            mirror = "{root}/mirror"

            [target]
            path = "{root}/archives/{name}-{{session}}.tar"
            """
        )
    )
    path.chmod(0o600)
    return path


def one_session(root: Path, config: Path) -> tuple[float, float, float]:
    """A full session from an empty mirror: (session, SYNC, BACKUP) seconds.  Its mirror and
    archive are deleted afterwards, outside the timing: the filesystem discards freed blocks,
    which the next measurement must not feel (:func:`settle`)."""
    started = time.monotonic()
    summary = Session(load_config(config), Hooks()).run()
    took = time.monotonic() - started
    shutil.rmtree(root / "mirror")
    (root / ".mirror.splitmirror-sync.json").unlink()
    for archive in (root / "archives").iterdir():
        archive.unlink()
    phases = {phase.name: phase.duration_ms / 1000 for phase in summary.phases}
    return took, phases["SYNC"], phases["BACKUP"]


def settle() -> None:
    """Nothing of the previous run left for the disk: written back, discarded, cache dropped."""
    drop_caches()
    time.sleep(2)


def measure(root: Path, size: int, reps: int, alone_s: float) -> dict[str, list[tuple[float, ...]]]:
    """name -> [(session s, SYNC s, BACKUP s, server ops/s, ÷ alone just before), ...];
    "alone" -> [(ops/s,), ...]."""
    (root / "primary").mkdir()
    (root / "archives").mkdir()
    database = root / "primary" / "budget.db"
    create_ledger(database, rows=1000)
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("CREATE TABLE ballast (data BLOB)")
        for _ in range(size // MiB):
            conn.execute("INSERT INTO ballast VALUES (?)", (os.urandom(MiB - 4096),))
        conn.commit()
    fill(root / "reads", 256 * MiB)
    fill(root / "writes", 64 * MiB)
    configs = {
        name: session_config(root, f"budget-{i}", keys) for i, (name, keys) in enumerate(SETTINGS.items())
    }
    results: dict[str, list[tuple[float, ...]]] = {"alone": [], **{name: [] for name in SETTINGS}}
    names = list(SETTINGS)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            settle()
            with Competitor(root) as alone:  # just before: the machine's load drifts
                time.sleep(alone_s)
            results["alone"].append((alone.rate,))
            settle()
            with Competitor(root) as beside:
                took = one_session(root, configs[name])
            results[name].append((*took, beside.rate, beside.rate / alone.rate))
            print(
                f"  {rep + 1} {name:<24} {took[0]:6.2f} s, server {beside.rate:6.0f} ops/s "
                f"(alone just before: {alone.rate:6.0f})",
                flush=True,
            )
    return results


def render(results: dict[str, list[tuple[float, ...]]], size: int, reps: int, device: str) -> str:
    alone = statistics.median(r[0] for r in results["alone"])
    median = {
        name: [statistics.median(r[i] for r in runs) for i in range(5)]
        for name, runs in results.items()
        if name != "alone"
    }
    table = [
        "| setting | session s | SYNC s | BACKUP s | server ops/s beside it | ÷ server alone |",
        "|---|--:|--:|--:|--:|--:|",
        f"| (server alone) | | | | {alone:.0f} | 1.00 |",
    ]
    for name, (took, sync, backup, ops, ratio) in median.items():
        table.append(f"| `{name}` | {took:.2f} | {sync:.2f} | {backup:.2f} | {ops:.0f} | {ratio:.2f} |")
    base = median["no budget"]
    said = "; ".join(
        f"`{name}` took {m[0] / base[0]:.2f}× the session time and left it {m[4]:.0%}"
        for name, m in median.items()
        if name != "no budget"
    )
    intro = (
        "Generated by `benchmarks/budget.py` (as root); rerun it rather than editing the numbers. A "
        f"{size // MiB} MiB SQLite database on the directory mirror; every session starts from an empty "
        "mirror, so SYNC copies the whole database and BACKUP archives it. Beside each session, a "
        "stand-in for the server on the same filesystem: random 4 KiB `O_DIRECT` reads of a file of its "
        "own and a 4 KiB write with `fdatasync` after every four reads, counting operations per second; "
        "it also runs alone just before each session, and the last column is the operations beside the "
        f"session over those alone just before. Medians of {reps} rounds, the settings interleaved (the "
        "order rotates each round), every run from a cold page cache."
    )
    prose = (
        f"Without a budget the session took {base[0]:.2f} s and left the server {base[4]:.0%} of the "
        f"operations it managed alone; {said}. `io_limit` caps the bytes SYNC reads from the primary and "
        "BACKUP from the split mirror, so its cost is known in advance: a full session takes at least "
        "twice the database's size over the limit. `io_priority` acts only where the disk's I/O scheduler "
        f"honours priorities (here {device}), and `cpu_nice` only where the session and the server "
        f"contend for the CPUs (here {os.cpu_count()}). None of them touches the window."
    )
    facts = [
        f"- date: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        f"- {shared_machine()}",
        f"- disk: {device}",
        f"- {tools()}",
    ]
    parts = [
        MARKER,
        "## What a budget costs the session, and spares the server",
        textwrap.fill(intro, 100, break_on_hyphens=False),
        "\n".join(facts),
        "\n".join(table),
        textwrap.fill(prose, 100, break_on_hyphens=False),
    ]
    return "\n\n".join(parts) + "\n"


def scheduler(folder: Path) -> str:
    """The I/O scheduler of the disk under ``folder``: what decides whether priorities count."""
    source = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", "--target", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    disk = Path(source).name
    for candidate in (
        Path(f"/sys/class/block/{disk}/queue/scheduler"),
        Path(f"/sys/class/block/{disk}/../queue/scheduler"),
    ):
        if candidate.exists():
            chosen = candidate.read_text().split("[", 1)[-1].split("]", 1)[0]
            return f"{source}, I/O scheduler {chosen}"
    return f"{source}, I/O scheduler unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB, one round, printed, not written")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=512, help="database size in MiB (default 512)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("cannot run the budget benchmark: it needs root (to drop the page cache between runs).")
    size, reps, alone_s = (128 * MiB, 1, 2.0) if args.quick else (args.size * MiB, args.reps, 5.0)
    root = Path(tempfile.mkdtemp(prefix="splitmirror-budgetbench-", dir="/var/tmp"))
    started = time.monotonic()
    try:
        results = measure(root, size, reps, alone_s)
        section = render(results, size, reps, scheduler(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n" + section)
    print(f"took {time.monotonic() - started:.0f} s")
    if not args.quick:
        replace_section(args.out, MARKER, section)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
