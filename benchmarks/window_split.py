"""The window of the mirrors that split without copying (``btrfs``: a snapshot; ``reflink``: a
clone of each database file), for ``window.py``.

The same databases and load as window.py's rows, but on a loop-device btrfs (the primary a
subvolume, the snapshots in a directory beside it) and on a loop-device xfs made with reflink
(the primary a directory, the clones in a directory beside it).  One difference: the ballast is
a table inside the database, not a file beside it.  DISCOVER lists the database and its WAL, and
the reflink mirror clones those alone, so a ballast file would not be cloned and the clones'
cost would not see the database's size.  A snapshot takes the whole subvolume either way.  So
each session's archive holds the whole database here, and is deleted when the session is done.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from splitmirror import btrfs
from splitmirror.catalog import SqliteCatalog
from splitmirror.extents import map_file
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase, Workspace
from splitmirror.testing.loopfs import loop_filesystem

#: size GiB, provider, windows ms, SPLIT phases ms, the database file's extents after the sessions
SplitRow = tuple[int, str, list[float], list[float], int]

#: provider: filesystem type, mkfs options, the directory beside the primary that takes the splits
FILESYSTEMS = {
    "btrfs": ("btrfs", [], "snapshots"),
    "reflink": ("xfs", ["-m", "reflink=1"], "splits"),
}


def fill_database(path: Path, size: int) -> None:
    """A ``ballast`` table of ``size`` bytes in the database at ``path``: rows of a repeated random
    MiB, written with a rollback journal (pages added past the end are not journaled; a WAL would
    hold all of them until a checkpoint), then WAL mode again, as the ledger is."""
    chunk = os.urandom(1 << 20)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE ballast (id INTEGER PRIMARY KEY, data BLOB)")
        db.execute("BEGIN")
        db.executemany("INSERT INTO ballast (data) VALUES (?)", ((chunk,) for _ in range(size >> 20)))
        db.execute("COMMIT")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA journal_mode=WAL")
    subprocess.run(["sync", "-f", str(path)], check=True)


def split_ms(catalog: Path, session_id: int) -> float:
    """The SPLIT phase's duration, from the catalog's phase records."""
    with closing(SqliteCatalog(catalog)) as records:
        [split] = [p for p in records.get(session_id).phases if p.name == "SPLIT"]
    return split.duration_ms


def sessions(
    database: SqliteLedgerDatabase, runner: SessionRunner, reps: int
) -> tuple[list[float], list[float]]:
    warm = runner.run(database, "freeze")  # as for the other rows; not counted
    Path(warm.archive or "").unlink(missing_ok=True)
    windows, splits = [], []
    for _ in range(reps):
        summary = runner.run(database, "freeze")
        windows.append(summary.window_ms or 0.0)
        splits.append(split_ms(runner.workspace.catalog, summary.id))
        Path(summary.archive or "").unlink(missing_ok=True)  # it holds the database: up to 16 GiB
    return windows, splits


def measure_split_mirrors(
    size_gib: int, scratch: Path, reps: int, hot: int, overwriter: str, fill: Callable[[Path, int], None]
) -> list[SplitRow]:
    """Each of the two providers' rows for a database of ``size_gib``: window.py's hot file
    (``fill``, ``hot`` bytes) and its ``overwriter`` beside the database.  Each filesystem's image
    is deleted when its row is done."""
    rows: list[SplitRow] = []
    for provider, (fstype, mkfs_options, splits) in FILESYSTEMS.items():
        folder = scratch / f"{size_gib}g-{provider}"
        folder.mkdir()
        with loop_filesystem(folder, (size_gib << 30) + (1 << 30), fstype, mkfs_options) as mount:
            primary = mount / "primary"
            if provider == "btrfs":
                btrfs.create_subvolume(primary)
            else:
                primary.mkdir()
            print(f"{size_gib} GiB: {provider} ({fstype}): filling ...", flush=True)
            database = SqliteLedgerDatabase(primary)
            database.create_ledger()
            fill_database(database.path, (size_gib << 30) - hot)
            fill(primary / "hot", hot)
            writers = [
                subprocess.Popen(database.writer_command(1, folder / "acks")),
                subprocess.Popen([sys.executable, "-c", overwriter, str(primary / "hot"), str(hot)]),
            ]
            try:
                print(f"{size_gib} GiB: {provider} ...", flush=True)
                runner = SessionRunner(Workspace(folder / "ws").create())
                runner.mirror_options = {"provider": provider}
                runner.mirror_path = mount / splits
                windows, split = sessions(database, runner, reps)
            finally:
                for process in writers:
                    process.terminate()
                    process.wait()
            extents = len(map_file(database.path).extents)
            rows.append((size_gib, provider, windows, split, extents))
            print(f"  windows {windows} ms, SPLIT {split} ms, {extents} extents", flush=True)
        subprocess.run(["rm", "-rf", str(folder)], check=False)  # the image: 16 GiB at the largest
    return rows


def render_split(rows: list[SplitRow]) -> tuple[str, str]:
    """The table of the split-without-copy rows, and the prose that quotes it."""
    sizes = sorted({size for size, *_ in rows})
    window = {(s, p): statistics.median(w) for s, p, w, _sp, _e in rows}
    split = {(s, p): statistics.median(sp) for s, p, _w, sp, _e in rows}
    worst = {(s, p): max(w) for s, p, w, _sp, _e in rows}
    extents = {(s, p): e for s, p, _w, _sp, e in rows}
    table = ["| mirror | " + " | ".join(f"{s} GiB: window ms (SPLIT ms)" for s in sizes) + " |"]
    table.append("|---|" + "--:|" * len(sizes))
    names = {"btrfs": "btrfs snapshot", "reflink": "reflink clones (xfs)"}
    for provider in dict.fromkeys(p for _s, p, *_ in rows):
        cells = [f"{window[s, provider]:.0f} ({split[s, provider]:.0f})" for s in sizes]
        table.append(f"| {names[provider]} | " + " | ".join(cells) + " |")
    small, large = sizes[0], sizes[-1]
    said = []
    for provider, what in (("btrfs", "the snapshot"), ("reflink", "cloning the database and its WAL")):
        if (small, provider) not in split or (large, provider) not in split:
            continue
        ratio = split[large, provider] / max(split[small, provider], 0.001)
        change = split[large, provider] - split[small, provider]
        grew = "grew with the database's size" if ratio > 1.5 and change > 10 else "stayed within 10 ms"
        said.append(
            f"on the {provider} mirror, {what} took {split[small, provider]:.0f} ms at {small} GiB and "
            f"{split[large, provider]:.0f} ms at {large} GiB (SPLIT's median; {ratio:.1f}×: it {grew}), "
            f"of a window of {window[small, provider]:.0f} and {window[large, provider]:.0f} ms (the "
            f"longest {max(worst[s, provider] for s in sizes):.0f} ms)"
        )
    figures = "; ".join(said) + ". " if said else ""
    frag = ", ".join(f"{extents[s, 'reflink']} at {s} GiB" for s in sizes if (s, "reflink") in extents)
    prose = (
        "The btrfs and reflink rows: the same databases and load on a loop-device btrfs (the database "
        "in a subvolume, the snapshots beside it) and on a loop-device xfs made with reflink (the "
        "clones beside the database's directory), FREEZE sessions as above; the ballast is a table "
        "inside the database there, since the reflink mirror clones only the files DISCOVER lists "
        "(the database and its WAL). Nothing is copied and no pass reads anything: SPLIT is the "
        "snapshot or the clones. " + (figures[:1].upper() + figures[1:])
    )
    if frag:
        prose += (
            f"A clone's cost follows the file's extents, not its bytes; the database file had {frag} "
            "after the sessions."
        )
    return "\n".join(table), prose
