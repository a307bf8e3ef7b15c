"""The window against the database's size, with change-block tracking on and off, both mirrors.

For 1, 4 and 16 GiB SQLite databases (a ledger, a 256 MiB hot file, the rest ballast) on a
loop-device ext4 under the same write load — one ledger writer committing, and random 8 KiB
overwrites of the hot file at full speed — FREEZE sessions are run on the block mirror with
tracking on and off, and on the directory mirror with tracking on and off; the window of each
(QUIESCE through UNQUIESCE) is recorded.  The same databases and load on the btrfs mirror (a
snapshot of a subvolume of a loop-device btrfs) and the reflink mirror (clones on a loop-device
xfs made with reflink) give the window and the SPLIT phase, which for them is the snapshot or
the clones (``window_split.py``).  Not a test.  The result replaces its own section
(``<!-- window -->``) of docs/performance.md.  Run as root:
``.venv/bin/python benchmarks/window.py [--sizes 1,4,16] [--split-sizes 1,4]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import splitmirror
from report import replace_section
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase, Workspace
from splitmirror.testing.loopfs import loop_filesystem
from splitmirror.tracking import unavailable
from window_split import SplitRow, measure_split_mirrors, render_split

MARKER = "<!-- window -->"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
HOT = 256 << 20
TARGET_RATIO, TARGET_MS = 1.5, 250.0

#: Random 8 KiB overwrites of the hot file, fsynced every 16, until killed.
OVERWRITER = """
import os, random, sys
fd, size, rng = os.open(sys.argv[1], os.O_WRONLY), int(sys.argv[2]), random.Random(8)
block = os.urandom(8192)
n = 0
while True:
    os.pwrite(fd, block, rng.randrange(0, size // 8192) * 8192)
    n += 1
    if n % 16 == 0:
        os.fdatasync(fd)
"""

Row = tuple[int, str, list[float], list[int]]  # size GiB, configuration, windows ms, final bytes read


def fill(path: Path, size: int) -> None:
    """``size`` bytes of data (a repeated random MiB: the passes compare, they do not compress)."""
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(chunk)
        os.fsync(f.fileno())


def sessions(
    database: SqliteLedgerDatabase, runner: SessionRunner, reps: int
) -> tuple[list[float], list[int]]:
    runner.run(database, "freeze")  # fills the mirror; not counted
    windows, finals = [], []
    for _ in range(reps):
        summary = runner.run(database, "freeze")
        windows.append(summary.window_ms or 0.0)
        finals.append(int(summary.stats["final_sync"]["bytes_read"]))
    return windows, finals


def measure(size_gib: int, scratch: Path, reps: int) -> list[Row]:
    folder = scratch / f"{size_gib}g"
    folder.mkdir()
    rows: list[Row] = []
    with loop_filesystem(folder, (size_gib << 30) + (1 << 30)) as mount:
        print(f"{size_gib} GiB: filling ...", flush=True)
        database = SqliteLedgerDatabase(mount)
        database.create_ledger()
        fill(mount / "hot", HOT)
        fill(mount / "ballast", (size_gib << 30) - HOT)
        load = [
            subprocess.Popen(database.writer_command(1, folder / "acks")),
            subprocess.Popen([sys.executable, "-c", OVERWRITER, str(mount / "hot"), str(HOT)]),
        ]
        try:
            configurations = [
                ("block, tracking on", {"provider": "block", "tracking": "on"}),
                ("block, tracking off", {"provider": "block", "tracking": "off"}),
                ("directory, tracking on", {"provider": "directory", "tracking": "on"}),
                ("directory, tracking off", {"provider": "directory", "tracking": "off"}),
            ]
            for name, options in configurations:
                print(f"{size_gib} GiB: {name} ...", flush=True)
                runner = SessionRunner(Workspace(folder / "ws").create())
                runner.mirror_options = options
                windows, finals = sessions(database, runner, reps)
                rows.append((size_gib, name, windows, finals))
                if name.endswith("off"):
                    shutil.rmtree(folder / "ws")  # the next mirror starts from an empty workspace
        finally:
            for process in load:
                process.terminate()
                process.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16", help="database sizes in GiB, comma-separated")
    parser.add_argument("--split-sizes", help="sizes for the btrfs and reflink rows; default: --sizes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    why = unavailable()
    if os.geteuid() != 0 or why:
        sys.exit(f"cannot run the window benchmark: {why or 'it needs root (loop devices, tracing)'}.")
    scratch = Path(tempfile.mkdtemp(prefix="splitmirror-windowbench-", dir="/var/tmp"))
    rows: list[Row] = []
    split_rows: list[SplitRow] = []
    split_sizes = [int(s) for s in (args.split_sizes or args.sizes).split(",")]
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            rows += measure(size, scratch, args.reps)
        for size in split_sizes:
            split_rows += measure_split_mirrors(size, scratch, args.reps, HOT, OVERWRITER, fill)
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    section = render(rows, args.reps, split_rows)
    print("\n" + section)
    replace_section(args.out, MARKER, section)
    print(f"wrote {args.out}")


def render(rows: list[Row], reps: int, split_rows: list[SplitRow]) -> str:
    cpu = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln), ":?")
    sizes = sorted({size for size, *_ in rows})
    names = list(dict.fromkeys(name for _size, name, *_ in rows))
    median = {(size, name): statistics.median(w) for size, name, w, _f in rows}
    read = {(size, name): statistics.median(f) for size, name, _w, f in rows}
    table = ["| mirror | " + " | ".join(f"{s} GiB: window ms (final pass read)" for s in sizes) + " |"]
    table.append("|---|" + "--:|" * len(sizes))
    for name in names:
        cells = [f"{median[s, name]:.0f} ({read[s, name] / 2**20:.0f} MiB)" for s in sizes]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    head = [
        MARKER,
        "## The window against the database's size: change-block tracking",
        "Generated by `benchmarks/window.py` (as root); rerun it rather than editing the numbers. SQLite "
        "databases of each size (a ledger, a 256 MiB hot file, the rest ballast) on a loop-device ext4 "
        "one GiB larger, under the same load: one ledger writer committing, and random 8 KiB overwrites "
        "of the hot file at full speed, fsynced every 16. FREEZE sessions; the median window of "
        f"{reps} sessions after one that fills the mirror, and what the final pass read (the written "
        "ranges, and the gaps of up to 64 KiB between them that a tracked pass reads across).",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {os.cpu_count()} × {cpu.split(':')[1].strip()}, "
        f"{platform.system()} {platform.release()}; shared with other work\n"
        f"- tools: Python {platform.python_version()}, splitmirror {splitmirror.__version__}",
    ]
    wrapped = [p if p[0] in "<#-|" else textwrap.fill(p, 100, break_on_hyphens=False) for p in head]
    small, large = sizes[0], sizes[-1]
    verdicts = []
    for mirror in ("block", "directory"):
        on = f"{mirror}, tracking on"
        if (small, on) not in median or (large, on) not in median:
            continue
        ratio = median[large, on] / median[small, on]
        met = ratio <= TARGET_RATIO and median[small, on] <= TARGET_MS
        verdicts.append(
            f"the {mirror} mirror's window was {median[small, on]:.0f} ms at {small} GiB and "
            f"{median[large, on]:.0f} ms at {large} GiB ({ratio:.2f}×), its final pass reading "
            f"{read[small, on] / 2**20:.0f} and {read[large, on] / 2**20:.0f} MiB: target "
            f"{'met' if met else 'NOT met'}"
        )
    prose = ""
    if verdicts:
        prose = (
            f"Target, with tracking on: at most {TARGET_RATIO}× from {small} to {large} GiB and at most "
            f"{TARGET_MS:.0f} ms at {small} GiB. With tracking on, "
            + "; ".join(verdicts)
            + ". The final pass copies what was written since the last pre-copy take, whatever the "
            "database's size: the window follows the write rate. With tracking off, the block mirror's "
            "final pass reads the whole device inside the window, and the window grows with it; the "
            "directory mirror without tracking compares the files whose fingerprint changed (here the "
            "hot file, from the page cache, without freezing the primary), so its window follows the "
            "hot file, not the database."
        )
    parts = [*wrapped, "\n".join(table), textwrap.fill(prose, 100)]
    if split_rows:
        split_table, split_prose = render_split(split_rows)
        parts += [split_table, textwrap.fill(split_prose, 100, break_on_hyphens=False)]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
