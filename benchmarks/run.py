"""splitmirror against the tools a DBA would otherwise use: GNU tar for the archive step, rsync for
the directory mirror.

The machines are shared and noisy, so absolute times mean little: every variant runs in the same
run, interleaved (the order rotates each repetition), from a cold page cache, several times, and
the report gives the ratio of medians.  Run as root: ``.venv/bin/python benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from report import Result, machine, profile, render
from splitmirror.archive.pax import ArchiveWriter
from splitmirror.archive.readahead import ReadAhead
from splitmirror.mirror.base import SyncStats
from splitmirror.mirror.directory import DirectoryMirror
from splitmirror.mirror.dirsync import DirectorySync
from splitmirror.mirror.splitread import SplitReader, reader_for
from splitmirror.targets.base import Target
from splitmirror.targets.builtin import FileTarget, StdoutTarget

MiB = 1 << 20
BLOCK_SIZE = 256 * 1024  # the design's example record size; tar gets the same (-b 512)
TAR = ["tar", "--format=pax", "-b", "512"]
REGION = 64 * 1024  # one in-place overwrite of the large file, like a batch of database pages
CHURN = 0.01
RACY_SECONDS = 2.0  # DirectorySync's default; we sleep past it instead of turning it off
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def drop_caches() -> None:
    """A cold cache for every timed run; otherwise whichever variant runs second reads from RAM."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timer(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


Hook = Callable[[], object] | None


def interleave(results: list[Result], reps: int, before_round: Hook = None, after_each: Hook = None) -> None:
    """Each round runs every variant once, in an order rotated by one, so drift in the machine's
    load lands on all of them alike.  The hooks run outside the timing."""
    for rep in range(reps):
        if before_round:
            before_round()
        k = rep % len(results)
        for result in results[k:] + results[:k]:
            drop_caches()
            result.times.append(timer(result.action))
            print(f"  {result.name:<48} {result.times[-1]:7.2f} s", flush=True)
            if after_each:
                after_each()


def write_random(path: Path, size: int) -> None:
    """Incompressible content: neither tool may gain from anything but its own I/O path."""
    with open(path, "wb") as out:
        for start in range(0, size, 8 * MiB):
            out.write(os.urandom(min(8 * MiB, size - start)))


def make_dataset(root: Path, total: int, rng: random.Random) -> tuple[Path, list[Path]]:
    """Half the bytes in one large file (a database's main data file), the other half in 300
    files of 4 KiB to 16 MiB, log-uniform (indexes, small tables, WAL segments), in 10 dirs."""
    large = root / "large.dat"
    write_random(large, total // 2)
    raw = [math.exp(rng.uniform(math.log(4096), math.log(16 * MiB))) for _ in range(300)]
    small = []
    for i, weight in enumerate(raw):
        path = root / f"dir{i % 10}" / f"file{i:03d}.dat"
        path.parent.mkdir(exist_ok=True)
        write_random(path, max(1, int(weight * (total - total // 2) / sum(raw))))
        small.append(path)
    return large, small


def mutate(large: Path, small: list[Path], rng: random.Random) -> int:
    """~1 % churn: random aligned 64 KiB regions of the large file overwritten in place, and 1 %
    of the small files rewritten whole at the same size.  Returns the bytes changed."""
    size = large.stat().st_size
    regions = rng.sample(range(size // REGION), max(1, int(size * CHURN) // REGION))
    with open(large, "r+b") as out:
        for index in regions:
            os.pwrite(out.fileno(), os.urandom(REGION), index * REGION)
    changed = len(regions) * REGION
    for path in rng.sample(small, max(1, round(len(small) * CHURN))):
        changed += path.stat().st_size
        write_random(path, path.stat().st_size)
    return changed


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def archive(src: Path, target: Target) -> None:
    """What the BACKUP phase does with a directory mirror's split files: reads in flight ahead
    of the writer across files (``ReadAhead``, the directory mirror's two readers), a member
    each, then a manifest."""
    target.open()
    writer = ArchiveWriter(target)
    paths = files_of(src)
    stats = [path.stat() for path in paths]

    def opener(path: Path) -> Callable[[], SplitReader]:
        return lambda: reader_for(open(path, "rb"))

    layouts = [[(0, st.st_size)] for st in stats]
    with ReadAhead([opener(p) for p in paths], layouts, workers=DirectoryMirror.read_workers) as ahead:
        for index, (path, st) in enumerate(zip(paths, stats, strict=True)):
            name = str(path.relative_to(src))
            writer.add_chunks(
                name,
                ahead.member(index),
                st.st_size,
                mode=st.st_mode,
                mtime=st.st_mtime,
                release=ahead.release,
            )
    writer.add_manifest(
        {
            "member_checksums": writer.member_checksums,
            "files": [dataclasses.asdict(member) for member in writer.members],
        }
    )
    writer.close()


def pipe_to_null(producer_argv: list[str]) -> None:
    """``producer | cat > /dev/null`` without a shell: tar skips reading files it writes to
    /dev/null itself, so both archivers write into a pipe."""
    producer = subprocess.Popen(producer_argv, stdout=subprocess.PIPE)
    consumer = subprocess.run(["cat"], stdin=producer.stdout, stdout=subprocess.DEVNULL, check=False)
    if producer.stdout is not None:
        producer.stdout.close()
    if producer.wait() or consumer.returncode:
        raise subprocess.CalledProcessError(producer.returncode or consumer.returncode, producer_argv)


def tar_to_file(src: Path, out: Path) -> None:
    """tar does not fsync, splitmirror does: tar's output is fsynced inside the timing too."""
    run(*TAR, "-cf", str(out), "-C", str(src), ".")
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def bench_archive(src: Path, scratch: Path, reps: int) -> tuple[str, list[Result]]:
    out = scratch / "out.tar"
    child = [sys.executable, str(Path(__file__).resolve()), "--stdout-archive", str(src)]
    to_file, to_pipe = "splitmirror FileTarget", "splitmirror StdoutTarget | cat"
    results = [
        Result(to_file, lambda: archive(src, FileTarget(str(out), BLOCK_SIZE))),
        Result("tar -cf FILE + fsync", lambda: tar_to_file(src, out), to_file),
        Result(to_pipe, lambda: pipe_to_null(child)),
        Result("tar -cf - | cat", lambda: pipe_to_null([*TAR, "-cf", "-", "-C", str(src), "."]), to_pipe),
    ]
    interleave(results, reps, after_each=lambda: out.unlink(missing_ok=True))
    how = (
        f"Both write POSIX pax with {BLOCK_SIZE // 1024} KiB records (`tar --format=pax -b 512`), the "
        "files in the same (sorted) order; splitmirror adds a JSON manifest. tar's output file is fsynced "
        "inside the timing, as splitmirror's is. The StdoutTarget variant runs in a child Python process "
        "(start-up and imports included)."
    )
    return how, results


def tree_digest(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Path -> (mode, size, mtime_ns, sha256): what a mirror must reproduce."""

    def one(path: Path) -> tuple[str, tuple[int, int, int, str]]:
        st = path.stat()
        with open(path, "rb") as source:
            digest = hashlib.file_digest(source, "sha256").hexdigest()
        return str(path.relative_to(root)), (st.st_mode, st.st_size, st.st_mtime_ns, digest)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(pool.map(one, files_of(root)))


def verify(primary: Path, mirrors: dict[str, Path]) -> None:
    """A benchmark that leaves a wrong mirror is not a result: stop before reporting it."""
    expected = tree_digest(primary)
    for name, mirror in mirrors.items():
        got = tree_digest(mirror)
        wrong = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        if wrong:
            sys.exit(f"The {name} mirror differs from the primary in {len(wrong)} files ({wrong[0]}, ...).")


def bench_sync(primary: Path, scratch: Path, reps: int, rng: random.Random) -> tuple[str, list[Result]]:
    """A full copy by each tool, then ``reps`` rounds of mutate-and-sync.  Each variant keeps its
    own mirror of the one primary, so every incremental pass sees the same mutation.  rsync does
    not fsync unless told to, DirectorySync always does: both kinds of rsync run are shown."""
    large, small = primary / "large.dat", [p for p in files_of(primary) if p.name != "large.dat"]
    names = ("splitmirror", "rsync-delta", "rsync-delta-fsync", "rsync-whole")
    mirrors = {name: scratch / f"mirror-{name}" for name in names}
    dirsync = DirectorySync(
        primary, mirrors["splitmirror"], scratch / "state.json", racy_seconds=RACY_SECONDS
    )
    stats: list[SyncStats] = []
    changed: list[int] = []

    def rsync(mirror: str, *options: str) -> Callable[[], None]:
        return lambda: run("rsync", "-a", *options, f"{primary}/", f"{mirrors[mirror]}/")

    def churn() -> None:
        if changed:
            verify(primary, mirrors)  # the previous round's mirrors, before the next mutation
        changed.append(mutate(large, small, rng))
        time.sleep(RACY_SECONDS + 0.5)  # past the racy window: the unchanged-file fast path is measured

    full, inc = "DirectorySync.sync(), full copy", "DirectorySync.sync(), 1 %"
    full_copies = [
        Result(full, lambda: stats.append(dirsync.sync())),
        Result("rsync -a, full copy", rsync("rsync-delta"), full),
        Result("rsync -a --fsync, full copy", rsync("rsync-delta-fsync", "--fsync"), full),
    ]
    time.sleep(RACY_SECONDS + 0.5)  # the data set is fresh: let the first pass record fingerprints
    interleave(full_copies, 1)
    run("cp", "-a", str(mirrors["rsync-delta"]), str(mirrors["rsync-whole"]))  # untimed
    verify(primary, mirrors)
    stats.clear()
    delta = ("--inplace", "--no-whole-file")
    incremental = [
        Result(inc, lambda: stats.append(dirsync.sync())),
        Result("rsync -a --inplace --no-whole-file, 1 %", rsync("rsync-delta", *delta), inc),
        Result(
            "rsync -a --inplace --no-whole-file --fsync, 1 %",
            rsync("rsync-delta-fsync", *delta, "--fsync"),
            inc,
        ),
        Result("rsync -a (whole-file), 1 %", rsync("rsync-whole"), inc),
    ]
    interleave(incremental, reps, before_round=churn)
    verify(primary, mirrors)
    how = (
        "Each tool keeps its own mirror of one primary. Full copies run once each (n = 1: indicative "
        f"only). Then {reps} rounds: a ~{CHURN * 100:g} % mutation of the primary ({REGION // 1024} KiB "
        "regions of the large file overwritten in place, 1 % of the other files rewritten whole), a sleep "
        f"past DirectorySync's {RACY_SECONDS:g} s racy window (its default), and one incremental pass of "
        f"every variant. Each round changed {statistics.median(changed) / MiB:.1f} MiB (median); the median "
        f"DirectorySync pass read {statistics.median(s.bytes_read for s in stats) / MiB:.0f} MiB and wrote "
        f"{statistics.median(s.bytes_written for s in stats) / MiB:.0f} MiB (`SyncStats`). Every mirror was "
        "checked equal to the primary (SHA-256 of the content, mode, mtime) after the full copies and after "
        "every round."
    )
    return how, full_copies + incremental


def floors(large: Path) -> tuple[float, float]:
    """Two speeds that bound the ratios, in bytes per second: SHA-256 on one core (splitmirror
    hashes every byte, tar hashes nothing) and a cold sequential read of the large file."""
    data = os.urandom(64 * MiB)
    hashing = max(len(data) / timer(lambda: hashlib.sha256(data).digest()) for _ in range(3))
    drop_caches()
    return hashing, large.stat().st_size / timer(large.read_bytes)


def python_startup() -> float:
    """The piped variant's child starts Python and imports splitmirror before it archives
    anything: that share of its time, alone (median of 3)."""
    argv = [sys.executable, "-c", "import splitmirror.archive.assembly, splitmirror.targets.builtin"]
    return statistics.median(timer(lambda: run(*argv)) for _ in range(3))


def check_environment(scratch: Path, size: int) -> None:
    """One clear sentence per missing prerequisite, never a traceback."""
    if size < 64 * MiB:
        sys.exit("Use --size-mib 64 or more: below that, process start-up is all that gets measured.")
    for tool in ("tar", "rsync", "findmnt"):
        if shutil.which(tool) is None:
            sys.exit(f"benchmarks/run.py needs `{tool}`; install it (apt-get install -y {tool}) and rerun.")
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        sys.exit("benchmarks/run.py must run as root: it drops the page cache before every timed run.")
    if not scratch.is_dir():
        sys.exit(f"The scratch directory {scratch} does not exist; create it or pass another --scratch.")
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(scratch)], capture_output=True, text=True)
    if {"tmpfs", "ramfs"} & set(fs.stdout.split()):
        sys.exit(f"{scratch} lives in RAM (tmpfs); pass --scratch on a disk-backed filesystem.")
    if shutil.disk_usage(scratch).free < 7 * size:
        sys.exit(f"{scratch} needs {7 * size // MiB} MiB free (data, 4 mirrors, an archive); pass --scratch.")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="data set size (default 1024)")
    parser.add_argument("--reps", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report (default docs/performance.md)")
    parser.add_argument("--scratch", type=Path, default=Path("/var/tmp"), help="disk for the data set")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stdout-archive", type=Path, help=argparse.SUPPRESS)  # the piped variant's child
    args = parser.parse_args()
    if args.stdout_archive:
        archive(args.stdout_archive, StdoutTarget("-", BLOCK_SIZE))
        return
    size = args.size_mib * MiB
    check_environment(args.scratch, size)
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="splitmirror-bench-", dir=args.scratch))
    try:
        primary = scratch / "primary"
        primary.mkdir()
        print(f"building a {args.size_mib} MiB data set in {primary} ...", flush=True)
        large, small = make_dataset(primary, size, rng)
        sizes = sorted(p.stat().st_size for p in small)
        hashing, reading = floors(large)
        facts = machine(scratch, hashing, reading)
        facts.append(
            f"data set: {size / MiB:.0f} MiB of random bytes: one {large.stat().st_size / MiB:.0f} MiB file "
            f"and {len(small)} files of {sizes[0] / 1024:.0f} KiB to {sizes[-1] / MiB:.1f} MiB "
            f"(median {statistics.median(sizes) / 1024:.0f} KiB) in 10 directories; {args.reps} repetitions"
        )
        archived = bench_archive(primary, scratch, args.reps)
        drop_caches()
        profiled = profile(lambda: archive(primary, FileTarget(str(scratch / "profiled.tar"), BLOCK_SIZE)))
        (scratch / "profiled.tar").unlink()
        synced = bench_sync(primary, scratch, args.reps, rng)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = render(facts, archived, synced, size, hashing, python_startup(), profiled)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
