"""The change-tracked directory mirror, pass by pass, in the cases a random-write workload does
not reach: a write into a preallocated (unwritten) extent seen while its page is still dirty, a
copy by ranges followed by a pass that trusts fingerprints (as after lost events), and a file
renamed over another (write, fsync, rename: how databases replace small files).  Each ends with
the mirror's file equal to the primary's; each failed before the fix it names."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from splitmirror.extents import ExtentFlag, fiemap
from splitmirror.fsfreeze import Freezer
from splitmirror.mirror.directory import DirectoryMirror, DirectoryOptions
from splitmirror.mirror.precopy import TrackedPasses

RACY = 2.2  # past DirectorySync's racy window: the pass records the file's fingerprint


def ignore(done: int, total: int | None) -> None:
    pass


@pytest.fixture
def mirror(tracked_disk: Path, tmp_path: Path) -> DirectoryMirror:
    options = DirectoryOptions(tracking="on", precopy_passes=0)
    return DirectoryMirror(tracked_disk, tmp_path / "mirror", options)


def passes(mirror: DirectoryMirror) -> TrackedPasses:
    assert mirror._passes is not None, "no bulk pass yet"
    return mirror._passes


def final(mirror: DirectoryMirror) -> None:
    """The final pass as SPLIT runs it where the mode needs no freeze: the primary written back
    (syncfs), the writers free."""
    freezer = Freezer()
    for path in mirror.write_back_paths():
        freezer.write_back(path)
    assert freezer.frozen == []
    assert mirror.final_sync([], ignore).tracking == "tracked"


def write(path: Path, data: bytes, offset: int = 0, *, durable: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, offset)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_a_write_into_a_preallocated_extent_seen_dirty_is_copied_once_written_back(
    mirror: DirectoryMirror, tracked_disk: Path
) -> None:
    """The extent stays unwritten in FIEMAP until the page's writeback completes; the pass that
    sees it so must neither clear the mirror there (SEEK_HOLE knows the page) nor stop watching
    the extent (its writeback comes later).  Failed when unwritten extents were left out of the
    reverse index and cleared by their FIEMAP flag."""
    path = tracked_disk / "prealloc"
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 1 << 20)
        os.fsync(f.fileno())
    try:
        mirror.bulk_sync(ignore)
        write(path, os.urandom(64 << 10), durable=False)
        with open(path, "rb") as f:  # without FIEMAP_FLAG_SYNC, which would write the page back
            first = next(iter(fiemap(f.fileno(), sync=False)))
        assert first.zeros, "the page was written back already: nothing to test"
        time.sleep(RACY)
        passes(mirror).catch_up(ignore)
        os.sync()  # the writeback: now the tracker sees the extent's sectors
        final(mirror)
    finally:
        mirror.close()
    assert (mirror.mirror / "prealloc").read_bytes() == path.read_bytes()


def test_a_copy_by_ranges_leaves_no_fingerprint_for_a_pass_that_trusts_them(
    mirror: DirectoryMirror, tracked_disk: Path
) -> None:
    """A tracked pass copies what was written back; a dirty page is not among it.  A pass that
    compares by fingerprint (the fallback after lost events, the next session's bulk pass) must
    then compare the file whole.  Failed when the ranges-only copy recorded the fingerprint."""
    path = tracked_disk / "table"
    write(path, os.urandom(256 << 10), durable=True)
    try:
        mirror.bulk_sync(ignore)
        write(path, os.urandom(4096), durable=False)  # dirty, not yet written back
        time.sleep(RACY)
        passes(mirror).catch_up(ignore)
        passes(mirror).sync.full(ignore)  # as a lost take's fallback does
    finally:
        mirror.close()
    assert (mirror.mirror / "table").read_bytes() == path.read_bytes()


def test_a_file_whose_data_ext4_journals_is_compared_whole(
    mirror: DirectoryMirror, tracked_disk: Path
) -> None:
    """``chattr +j``: its writes go to the journal first, and to its own sectors when ext4 says
    (before Linux 6.5, only at a journal checkpoint, which FIFREEZE forces and syncfs does not),
    so it is compared whole, never copied by its taken ranges.  Setting the flag needs
    CAP_SYS_RESOURCE, which a container's root may lack: then it skips, saying so."""
    path = tracked_disk / "journaled"
    write(path, os.urandom(256 << 10), durable=True)
    flagged = subprocess.run(["chattr", "+j", str(path)], capture_output=True, text=True)
    if flagged.returncode != 0:
        pytest.skip(f"ext4's journal-data flag cannot be set here: {flagged.stderr.strip()}")
    try:
        mirror.bulk_sync(ignore)
        write(path, os.urandom(4096), 8192, durable=False)
        final(mirror)
    finally:
        mirror.close()
    assert (mirror.mirror / "journaled").read_bytes() == path.read_bytes()


def test_a_file_renamed_over_another_is_copied_whole(mirror: DirectoryMirror, tracked_disk: Path) -> None:
    """Its data was written, and taken, under the temporary name; the rename writes no data.
    Failed when the reverse index did not know which inode a path's map belonged to."""
    old, new = os.urandom(64 << 10), os.urandom(64 << 10)
    write(tracked_disk / "state", old, durable=True)
    try:
        mirror.bulk_sync(ignore)
        write(tracked_disk / "state.tmp", new, durable=True)
        passes(mirror).catch_up(ignore)  # copies state.tmp, a new file, whole
        os.replace(tracked_disk / "state.tmp", tracked_disk / "state")
        final(mirror)
    finally:
        mirror.close()
    assert (mirror.mirror / "state").read_bytes() == new
    assert not (mirror.mirror / "state.tmp").exists()


def test_the_tracked_final_pass_leaves_what_the_engine_collects(
    mirror: DirectoryMirror, tracked_disk: Path
) -> None:
    """``skip_in_final_pass`` holds for the tracked final pass too (PostgreSQL's pg_wal, written
    fastest of all, is collected from the primary after the window in HOT_BACKUP)."""
    (tracked_disk / "pg_wal").mkdir()
    write(tracked_disk / "pg_wal" / "segment", b"a" * 65536, durable=True)
    write(tracked_disk / "table", b"a" * 65536, durable=True)
    try:
        mirror.bulk_sync(ignore)
        write(tracked_disk / "pg_wal" / "segment", b"b" * 4096, durable=True)
        write(tracked_disk / "table", b"b" * 4096, durable=True)
        mirror.skip_in_final_pass([tracked_disk / "pg_wal"])
        final(mirror)
    finally:
        mirror.close()
    assert (mirror.mirror / "table").read_bytes() == (tracked_disk / "table").read_bytes()
    assert (mirror.mirror / "pg_wal" / "segment").read_bytes() == b"a" * 65536


def test_a_file_on_a_filesystem_mounted_below_the_primary_is_compared_whole(
    mirror: DirectoryMirror, tracked_disk: Path, tmp_path: Path
) -> None:
    """The tracker watches the primary's device only: a file on another filesystem mounted
    below it (a tablespace's disk) has no written ranges there, so its changes are found by
    comparing it whole.  Failed, the mirror keeping the old bytes, when its extents were matched
    against the primary's device."""
    from splitmirror.testing.loopfs import loop_filesystem

    (tmp_path / "inner").mkdir()
    with loop_filesystem(tmp_path / "inner", 16 << 20) as inner:
        below = tracked_disk / "tablespace"
        below.mkdir()
        subprocess.run(["mount", "--bind", str(inner), str(below)], check=True)
        try:
            write(below / "16400", os.urandom(256 << 10), durable=True)
            try:
                mirror.bulk_sync(ignore)
                write(below / "16400", os.urandom(8192), 65536, durable=True)
                final(mirror)
            finally:
                mirror.close()
            assert (mirror.mirror / "tablespace" / "16400").read_bytes() == (below / "16400").read_bytes()
        finally:
            subprocess.run(["umount", str(below)], check=True)


def test_a_table_appended_to_during_the_final_pass_is_not_compared_whole(
    mirror: DirectoryMirror, tracked_disk: Path
) -> None:
    """A database appends to its tables while a HOT_BACKUP final pass runs: the new pages wait
    in the page cache, their extent delayed-allocation in FIEMAP.  The pass copies that extent
    and the written ranges, not the whole table: comparing a 257 MiB pgbench table whole in
    every final pass was most of PostgreSQL's window.  The appended bytes are copied all the same."""
    path = tracked_disk / "table"
    write(path, os.urandom(8 << 20), durable=True)
    try:
        mirror.bulk_sync(ignore)
        write(path, os.urandom(8192), 4 << 20, durable=True)  # an update, written back
        Freezer().write_back(tracked_disk)  # SPLIT's write-back; then the writer goes on
        write(path, os.urandom(65536), 8 << 20, durable=False)
        with open(path, "rb") as f:
            tail = list(fiemap(f.fileno(), sync=False))[-1]
        if not tail.flags & ExtentFlag.DELALLOC:
            pytest.skip("this filesystem allocated the appended pages at once: nothing to test")
        stats = mirror.final_sync([], ignore)
    finally:
        mirror.close()
    assert stats.tracking == "tracked"
    assert stats.bytes_read < 1 << 20, f"{stats.bytes_read} bytes read: the table was compared whole"
    assert (mirror.mirror / "table").read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (ExtentFlag.DELALLOC | ExtentFlag.UNKNOWN, [(0, 4096), (8192, 4096)]),  # unplaced: copied
        (ExtentFlag.SHARED, None),  # a reflinked extent stays shared: compared, not copied each pass
        (ExtentFlag.DATA_INLINE | ExtentFlag.NOT_ALIGNED, None),  # no sectors of its own
        (ExtentFlag(0), [(0, 4096)]),  # placed and unwritten since: only the tracked write
    ],
    ids=["delalloc", "shared", "inline", "placed"],
)
def test_what_a_visited_file_copies_by_its_second_extent(
    flags: ExtentFlag, expected: list[tuple[int, int]] | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FIEMAP's flags decide, extent by extent: the tracked write of the first (placed) extent,
    and for the second what its flags allow."""
    from splitmirror.extents import Extent
    from splitmirror.mirror import filetrack

    path = tmp_path / "table"
    path.write_bytes(bytes(16384))
    second = Extent(8192, 0 if flags & ExtentFlag.UNKNOWN else 1 << 30, 4096, flags | ExtentFlag.LAST)
    extents = [Extent(0, 1 << 20, 8192, ExtentFlag(0)), second]
    monkeypatch.setattr(filetrack, "fiemap", lambda fd, sync: extents)
    tracked = filetrack.TrackedFiles()
    with open(path, "rb") as f:
        tracked.mapped("table", f.fileno())
        tracked.begin([(1 << 20, 4096)])  # the first extent's first block was written
        assert tracked.ranges("table", f.fileno()) == expected
    assert ("table" in tracked.unsettled) == (flags != ExtentFlag(0)), "visited on every pass until settled"
