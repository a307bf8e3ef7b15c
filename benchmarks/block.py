"""The block mirror's costs against the tools a DBA would compare them with, in one run: mapping
10,000 files (FIEMAP vs ``filefrag``), synchronizing the device (BlockSync vs ``dd``, first pass
and at 1 % churn), archiving every file by extent from the unmounted mirror (vs GNU tar of the
mounted primary into a pipe, and vs an ``O_DIRECT`` read of the same extents).  The window of
whole sessions against the primary's size is ``benchmarks/window.py``'s.  Not a test.  The
result replaces its own section (``<!-- block -->``) of docs/performance.md.  Run as root:
``.venv/bin/python benchmarks/block.py``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import splitmirror
from report import profile, replace_section
from splitmirror.archive import sparse
from splitmirror.archive.pax import ArchiveWriter
from splitmirror.archive.readahead import ReadAhead
from splitmirror.extents import ExtentMap, map_file
from splitmirror.filemap import FileMap, Fingerprint
from splitmirror.mirror.block import BlockMirror, BlockOptions
from splitmirror.mirror.blocksync import BlockSync, DirectReader
from splitmirror.targets.base import Target
from splitmirror.testing.loopfs import device_of, loop_filesystem

MARKER = "<!-- block -->"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
DISK = 3 << 30
LARGE, LARGE_SIZE, SMALL, SMALL_SIZE = 8, 96 << 20, 10_000, 16 << 10
CHURN = 0.01


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(
    action: Callable[[], object], reps: int, before: Callable[[], object] | None = None, *, cold: bool = True
) -> float:
    """Median seconds of ``reps`` runs, each from a cold page cache unless not ``cold``
    (``before`` runs untimed)."""
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        if cold:
            drop_caches()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def populate(root: Path) -> list[Path]:
    """Large files written in interleaved 1 MiB pieces (so they fragment) and many small ones."""
    files = [root / f"large{i}" for i in range(LARGE)]
    handles = [open(path, "wb") for path in files]  # noqa: SIM115 - closed below
    try:
        chunk = os.urandom(1 << 20)
        for _ in range(LARGE_SIZE >> 20):
            for handle in handles:
                handle.write(chunk)
    finally:
        for handle in handles:
            handle.close()
    small = root / "small"
    small.mkdir()
    payload = os.urandom(SMALL_SIZE)
    for i in range(SMALL):
        path = small / f"{i:05d}"
        path.write_bytes(payload)
        files.append(path)
    os.sync()
    return files


def churn(files: list[Path], share: float, rng: random.Random) -> int:
    """Overwrite ``share`` of the large files' bytes in place, in scattered 64 KiB pieces."""
    large = [p for p in files if p.name.startswith("large")]
    piece = 64 << 10
    count = int(sum(p.stat().st_size for p in large) * share) // piece
    for _ in range(count):
        path = rng.choice(large)
        with open(path, "r+b") as f:
            f.seek(rng.randrange(0, path.stat().st_size - piece) // 4096 * 4096)
            f.write(os.urandom(piece))
    os.sync()
    return count * piece


class NullTarget(Target):
    """A seekable target that throws the stream away: the archive's reading, hashing and
    framing, without the cost of storing it (GNU tar's reference writes into ``cat``)."""

    name = "null"
    seekable = True

    @classmethod
    def accepts(cls, path: str) -> bool:
        return False

    def open(self) -> None:
        pass

    def _emit(self, record: bytes | bytearray | memoryview) -> None:
        pass

    def _pwrite(self, offset: int, data: bytes) -> None:
        pass

    def _finish(self) -> None:
        pass

    def discard(self) -> None:
        pass


def archive_by_extent(provider: BlockMirror, files: list[Path], mount: Path) -> None:
    """BACKUP's reading as a session does it: ``read_workers`` reads in flight, across files,
    through the provider's split readers, hashed and framed by the writer."""
    target = NullTarget("null", 10240)
    writer = ArchiveWriter(target)
    sizes = [provider.split_stat(path).size for path in files]
    segments = [
        sparse.data_segments(provider.data_ranges(path), size)
        for path, size in zip(files, sizes, strict=True)
    ]
    layouts = [s if s is not None else [(0, size)] for s, size in zip(segments, sizes, strict=True)]
    provider.will_read(files)  # as BACKUP does: the plan of neighbouring extents
    openers = [functools.partial(provider.split_reader, path) for path in files]
    with ReadAhead(openers, layouts, workers=provider.read_workers) as ahead:
        for index, path in enumerate(files):
            name = str(path.relative_to(mount))
            writer.add_chunks(
                name, ahead.member(index), sizes[index], segments=segments[index], release=ahead.release
            )
    writer.close()


def direct_read_extents(mirror: Path, maps: list[ExtentMap]) -> None:
    """The floor: the same extents read off the mirror with ``O_DIRECT``, nothing else."""
    reader = DirectReader(mirror, 1 << 20)
    try:
        for emap in maps:
            for extent in emap.extents:
                stop = extent.physical + min(extent.length, -(-(emap.size - extent.logical) // 4096) * 4096)
                for offset in range(extent.physical, stop, 1 << 20):
                    reader.read(offset, min(1 << 20, stop - offset))
    finally:
        reader.close()


def gnu_tar_into_pipe(mount: Path) -> None:
    tar = subprocess.Popen(["tar", "-C", str(mount), "-cf", "-", "."], stdout=subprocess.PIPE)
    cat = subprocess.run(["cat"], stdin=tar.stdout, stdout=subprocess.DEVNULL, check=True)
    assert tar.stdout is not None and cat.returncode == 0
    tar.stdout.close()
    if tar.wait():
        raise subprocess.CalledProcessError(tar.returncode, "tar")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("cannot run the block benchmark: it needs root (loop devices, raw device reads).")
    scratch = Path(tempfile.mkdtemp(prefix="splitmirror-blockbench-", dir="/var/tmp"))
    rows: list[tuple[str, str, float, str, float]] = []
    rng = random.Random(6)
    try:
        with loop_filesystem(scratch, DISK) as mount:
            device = device_of(mount)
            print("populating ...", flush=True)
            files = populate(mount)
            total = sum(p.stat().st_size for p in files)
            used = int(subprocess.run(["df", "-B1", "--output=used", str(mount)], capture_output=True,
                                      text=True, check=True).stdout.split()[1])  # fmt: skip
            mirror = scratch / "mirror.img"

            def fiemap_all() -> None:
                for path in files:
                    map_file(path)

            def filefrag_all() -> None:
                for start in range(0, len(files), 500):
                    batch = [str(p) for p in files[start : start + 500]]
                    subprocess.run(["filefrag", "-v", *batch], capture_output=True, check=True)

            print("mapping ...", flush=True)
            mapped, frag = timed(fiemap_all, args.reps), timed(filefrag_all, args.reps)
            rows.append(
                (f"map {len(files):,} files", "FIEMAP", mapped, "`filefrag -v`, 500 files a call", frag)
            )
            filemap, stats_only = FileMap(with_extents=True), FileMap()
            filemap.map(files)
            stats_only.map(files)
            check = timed(lambda: filemap.check(files), args.reps, cold=False)  # warm, as after MAP
            stat = timed(lambda: stats_only.check(files), args.reps, cold=False)
            rows.append(
                (f"CHECK {len(files):,} unchanged files", "stat + FIEMAP each", check, "stat only", stat)
            )

            def dd_copy() -> None:
                subprocess.run(["dd", f"if={device}", f"of={scratch / 'dd.img'}", "bs=1M", "iflag=direct",
                                "conv=fsync", "status=none"], check=True)  # fmt: skip

            def first_pass(workers: int) -> Callable[[], None]:
                def run() -> None:
                    mirror.unlink(missing_ok=True)
                    BlockSync(device, mirror, workers=workers).sync()

                return run

            print("first passes ...", flush=True)
            copy, dd = timed(dd_copy, args.reps), "`dd iflag=direct conv=fsync`"
            (scratch / "dd.img").unlink(missing_ok=True)
            for workers in (4, 1):
                first = timed(first_pass(workers), args.reps)
                rows.append(
                    ("first pass, device to image", f"BlockSync, {workers} worker(s)", first, dd, copy)
                )
            BlockSync(device, mirror).sync()
            print("passes at 1 % churn ...", flush=True)
            churned: list[int] = []
            again = timed(
                lambda: BlockSync(device, mirror).sync(),
                args.reps,
                before=lambda: churned.append(churn(files, CHURN, rng)),
            )
            rows.append(
                (f"pass after {CHURN:.0%} churn, checksum map", "BlockSync, 4 workers", again, dd, copy)
            )

            maps = {p.resolve(): map_file(p) for p in files}
            provider = BlockMirror(mount, mirror, BlockOptions())
            provider.checked(maps, {p.resolve(): Fingerprint.of(p) for p in files})
            print("archiving ...", flush=True)
            ours = "by extent from the unmounted mirror"
            by_extent = timed(lambda: archive_by_extent(provider, files, mount), args.reps)
            drop_caches()
            profiled = profile(lambda: archive_by_extent(provider, files, mount))
            tar = timed(lambda: gnu_tar_into_pipe(mount), args.reps)
            direct = timed(lambda: direct_read_extents(mirror, list(maps.values())), args.reps)
            rows.append(("archive every file", ours, by_extent, "`tar -cf - | cat`, mounted primary", tar))
            rows.append(
                ("archive every file", ours, by_extent, "`O_DIRECT` read of the same extents", direct)
            )
            mirror.unlink()
            BlockSync(device, mirror).map_path.unlink(missing_ok=True)
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    section = render(rows, total, used, args.reps, statistics.mean(churned), profiled)
    print("\n" + section)
    replace_section(args.out, MARKER, section)
    print(f"wrote {args.out}")


#: The archive-by-extent ratios of the run before BACKUP read ahead (docs/performance.md of that
#: date), quoted beside the new ones; history, not a measurement of this run.
BEFORE = {"date": "2026-11-24", "tar": 1.45, "direct": 3.04}


def render(
    rows: list[tuple[str, str, float, str, float]],
    total: int,
    used: int,
    reps: int,
    churned: float,
    profiled: str,
) -> str:
    cpu = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln), ":?")
    table = ["| task | splitmirror | s | reference | s | ratio |", "|---|---|--:|---|--:|--:|"]
    for task, ours, mine, reference, theirs in rows:
        table.append(f"| {task} | {ours} | {mine:.2f} | {reference} | {theirs:.2f} | {mine / theirs:.2f}× |")
    head = [
        MARKER,
        "## Block mirror: mapping, synchronizing, archiving by extent",
        "Generated by `benchmarks/block.py` (as root); rerun it rather than editing the numbers. A "
        f"{DISK >> 30} GiB loop-device ext4 holding {LARGE} files of {LARGE_SIZE >> 20} MiB written in "
        f"interleaved 1 MiB pieces and {SMALL:,} files of {SMALL_SIZE >> 10} KiB ({total / 2**30:.2f} GiB of "
        f"files, {used / 2**30:.2f} GiB used on the device); the mirror is an image file on the same "
        f"disk. Median of {reps} runs, each from a cold page cache.",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {os.cpu_count()} × {cpu.split(':')[1].strip()}, "
        f"{platform.system()} {platform.release()}; shared with other work\n"
        f"- tools: Python {platform.python_version()}, splitmirror {splitmirror.__version__}",
    ]
    wrapped = [p if p[0] in "<#-|" else textwrap.fill(p, 100, break_on_hyphens=False) for p in head]
    mapped, checked, first4, first1, at_churn, by_tar, by_direct = (
        mine / theirs for *_a, mine, _r, theirs in rows
    )
    check_ms = rows[1][2] * 1000
    prose = (
        f"Mapping every file with FIEMAP took {mapped:.2f}× the time of `filefrag -v` on the same files. "
        f"CHECK of the same files, unchanged, took {check_ms:.0f} ms inside the window ({checked:.1f}× "
        "checking fingerprints alone): asking FIEMAP again is what catches blocks moved under an unchanged "
        "fingerprint (a defragmenter). "
        f"A first pass (read the device, compare, write the image, fsync) took {first4:.2f}× a `dd` copy "
        f"with four workers and {first1:.2f}× with one. After {churned / 2**20:.0f} MiB of scattered "
        f"overwrites ({CHURN:.0%} of the files' bytes) a pass with the checksum map took {at_churn:.2f}× a "
        "full `dd` copy: it writes only what changed but still reads the whole primary. Archiving every "
        "file by extent from the unmounted mirror (read, SHA-256, tar framing, holes skipped; "
        f"{BlockMirror.read_workers} reads in flight, across files) took "
        f"{by_tar:.2f}× GNU tar of the mounted primary into a pipe and {by_direct:.2f}× a bare "
        f"`O_DIRECT` read of the same extents, one read at a time. Before BACKUP read ahead (the run of "
        f"{BEFORE['date']}), file after file with one synchronous read at a time, the ratios were "
        f"{BEFORE['tar']:.2f}× and {BEFORE['direct']:.2f}×."
    )
    prose += (
        " The window against the primary's size, with change-block tracking on and off, is measured by "
        "`benchmarks/window.py` (next section)."
    )
    prose += " " + profiled
    return "\n\n".join([*wrapped, "\n".join(table), textwrap.fill(prose, 100)]) + "\n"


if __name__ == "__main__":
    main()
