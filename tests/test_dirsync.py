"""The directory synchronizer and provider, on real files in a temporary directory."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
from pathlib import Path

import pytest

from splitmirror.errors import UserError
from splitmirror.mirror.base import SyncStats
from splitmirror.mirror.directory import DirectoryMirror
from splitmirror.mirror.dirsync import DirectorySync

KiB, MiB = 1024, 1024 * 1024
_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def primary(tmp_path: Path) -> Path:
    path = tmp_path / "primary"
    path.mkdir()
    return path


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    return tmp_path / "mirror"


def syncer(primary: Path, mirror: Path, block_size: int = MiB, racy_seconds: float = 0) -> DirectorySync:
    """Fingerprints trusted at once (racy_seconds=0) unless a test asks otherwise."""
    state = mirror.parent / f".{mirror.name}.sync.json"
    return DirectorySync(primary, mirror, state, block_size, racy_seconds=racy_seconds)


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a mirror must reproduce, per relative path, symlinks not followed."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                body: object = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                body = "dir"
            elif not stat.S_ISREG(st.st_mode):
                body = "special"
            else:
                body = path.read_bytes()
            mode = stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None
            found[str(path.relative_to(root))] = (body, mode, st.st_mtime_ns, st.st_uid)
    return found


def data_regions(path: Path) -> list[tuple[int, int]]:
    regions: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        offset = 0
        while True:
            try:
                start = os.lseek(f.fileno(), offset, os.SEEK_DATA)
            except OSError as error:
                assert error.errno == errno.ENXIO
                return regions
            offset = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            regions.append((start, offset))


def punch(path: Path, offset: int, length: int) -> None:
    with open(path, "r+b") as f:
        if _libc.fallocate(f.fileno(), 0x03, ctypes.c_int64(offset), ctypes.c_int64(length)):
            pytest.skip(f"cannot punch holes here: {os.strerror(ctypes.get_errno())}")


def sparse_file(path: Path, size: int, chunks: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)
    if path.stat().st_blocks * 512 >= size:
        pytest.skip("this filesystem does not keep sparse files sparse")


def populate(primary: Path) -> None:
    (primary / "db").mkdir(mode=0o750)
    (primary / "db" / "main.db").write_bytes(os.urandom(300 * KiB))
    (primary / "db" / "empty").write_bytes(b"")
    (primary / "notes.txt").write_text("hello\n")
    os.chmod(primary / "notes.txt", 0o640)
    (primary / "db" / "deep" / "er").mkdir(parents=True)
    (primary / "db" / "deep" / "er" / "leaf").write_bytes(b"leaf")
    (primary / "link-to-file").symlink_to("notes.txt")
    (primary / "link-to-dir").symlink_to("db")
    (primary / "dangling").symlink_to("nowhere")
    os.mkfifo(primary / "fifo")
    os.utime(primary / "db" / "main.db", ns=(1_000_000_000, 1_234_567_891_011_121_314))


def test_first_sync_copies_content_modes_times_and_symlinks(primary: Path, mirror: Path) -> None:
    populate(primary)
    stats = syncer(primary, mirror).sync()
    expected = tree(primary)
    del expected["fifo"]  # special files are not mirrored
    assert tree(mirror) == expected
    assert (mirror / "link-to-dir").is_symlink()
    assert stat.S_IMODE(mirror.stat().st_mode) == stat.S_IMODE(primary.stat().st_mode)
    assert stats.files_scanned == stats.files_created == 7
    assert stats.bytes_written == 300 * KiB + 6 + 4


def test_unchanged_tree_is_neither_read_nor_written(primary: Path, mirror: Path) -> None:
    populate(primary)
    sync = syncer(primary, mirror)
    sync.sync()
    stats = sync.sync()
    assert stats == SyncStats(files_scanned=7, files_unchanged=7)


def test_recently_modified_files_are_compared_on_the_next_pass(primary: Path, mirror: Path) -> None:
    (primary / "hot").write_bytes(b"x" * 100)
    sync = syncer(primary, mirror, racy_seconds=3600)
    sync.sync()
    stats = sync.sync()
    assert stats.bytes_read == 200  # primary and mirror compared: a same-tick write is caught
    assert stats.bytes_written == 0
    assert stats.files_unchanged == 1


def test_one_changed_region_writes_one_block_in_place(primary: Path, mirror: Path) -> None:
    big = primary / "big"
    big.write_bytes(os.urandom(16 * MiB))
    sync = syncer(primary, mirror, block_size=64 * KiB)
    sync.sync()
    inode = (mirror / "big").stat().st_ino
    with open(big, "r+b") as f:
        f.seek(5 * MiB + 8 * KiB)
        f.write(os.urandom(4 * KiB))
    stats = sync.sync()
    assert stats.bytes_written == 64 * KiB
    assert stats.files_updated == 1
    assert (mirror / "big").stat().st_ino == inode
    assert tree(mirror) == tree(primary)


def test_append_then_truncate(primary: Path, mirror: Path) -> None:
    log = primary / "log"
    log.write_bytes(b"a" * 100 * KiB)
    sync = syncer(primary, mirror, block_size=64 * KiB)
    sync.sync()
    with open(log, "ab") as f:
        f.write(b"b" * 100 * KiB)
    appended = sync.sync()
    assert tree(mirror) == tree(primary)
    # the block holding 64..128 KiB changed, and the new 128..200 KiB: nothing before 64 KiB
    assert appended.bytes_written == 200 * KiB - 64 * KiB
    os.truncate(log, 10 * KiB)
    truncated = sync.sync()
    assert tree(mirror) == tree(primary)
    assert (mirror / "log").stat().st_size == 10 * KiB
    assert truncated.bytes_written == 0 and truncated.files_updated == 1


def test_deleted_files_and_directories_are_removed(primary: Path, mirror: Path) -> None:
    populate(primary)
    sync = syncer(primary, mirror)
    sync.sync()
    (primary / "notes.txt").unlink()
    (primary / "link-to-file").unlink()
    shutil.rmtree(primary / "db")
    stats = sync.sync()
    assert sorted(os.listdir(mirror)) == ["dangling", "link-to-dir"]
    assert stats.files_deleted == 5  # notes.txt, link-to-file, main.db, empty, leaf


def test_type_changes_replace_the_mirror_entry(primary: Path, mirror: Path) -> None:
    (primary / "was-file").write_text("x")
    (primary / "was-dir").mkdir()
    (primary / "was-dir" / "inner").write_text("y")
    (primary / "becomes-link").write_text("z")
    sync = syncer(primary, mirror)
    sync.sync()
    (primary / "was-file").unlink()
    (primary / "was-file").mkdir()
    (primary / "was-file" / "now-inside").write_text("new")
    (primary / "was-dir" / "inner").unlink()
    (primary / "was-dir").rmdir()
    (primary / "was-dir").write_text("now a file")
    (primary / "becomes-link").unlink()
    (primary / "becomes-link").symlink_to("was-dir")
    sync.sync()
    assert tree(mirror) == tree(primary)


def test_metadata_only_change_is_copied_without_writing_data(primary: Path, mirror: Path) -> None:
    (primary / "f").write_bytes(b"data")
    sync = syncer(primary, mirror)
    sync.sync()
    os.chmod(primary / "f", 0o600)
    os.utime(primary / "f", ns=(5, 7_000_000_000))
    if os.geteuid() == 0:
        os.chown(primary / "f", 1234, 4321)
    stats = sync.sync()
    assert stats.bytes_written == 0 and stats.files_updated == 1
    assert tree(mirror) == tree(primary)
    if os.geteuid() == 0:
        assert (mirror / "f").stat().st_gid == 4321


def test_sparse_file_stays_sparse(primary: Path, mirror: Path) -> None:
    chunks = {0: b"A" * 4096, 10 * MiB: b"B" * 4096, 40 * MiB: b"C" * 4096}
    sparse_file(primary / "sparse", 48 * MiB, chunks)
    stats = syncer(primary, mirror).sync()
    copy = mirror / "sparse"
    assert copy.stat().st_size == 48 * MiB
    assert copy.stat().st_blocks * 512 < 1 * MiB
    assert data_regions(copy) == data_regions(primary / "sparse")
    assert copy.read_bytes() == (primary / "sparse").read_bytes()
    assert stats.bytes_written == 3 * 4096


def test_hole_punched_on_the_primary_is_punched_in_the_mirror(primary: Path, mirror: Path) -> None:
    (primary / "f").write_bytes(os.urandom(1 * MiB))
    sync = syncer(primary, mirror, block_size=64 * KiB)
    sync.sync()
    punch(primary / "f", 256 * KiB, 256 * KiB)
    stats = sync.sync()
    assert (
        data_regions(mirror / "f")
        == data_regions(primary / "f")
        == [
            (0, 256 * KiB),
            (512 * KiB, 1 * MiB),
        ]
    )
    assert (mirror / "f").read_bytes() == (primary / "f").read_bytes()
    assert stats.bytes_written == 0


def test_hole_at_an_unaligned_end_is_freed_in_the_mirror(primary: Path, mirror: Path) -> None:
    """Punching cannot free a partial last block; the mirror must still end in a hole."""
    size = 256 * KiB + 1000
    (primary / "f").write_bytes(os.urandom(size))
    sync = syncer(primary, mirror)
    sync.sync()
    os.truncate(primary / "f", 128 * KiB)
    os.truncate(primary / "f", size)
    stats = sync.sync()
    assert data_regions(mirror / "f") == data_regions(primary / "f") == [(0, 128 * KiB)]
    assert (mirror / "f").read_bytes() == (primary / "f").read_bytes()
    assert stats.bytes_written == 0


def test_zeros_written_into_a_hole_become_data_in_the_mirror(primary: Path, mirror: Path) -> None:
    sparse_file(primary / "f", 1 * MiB, {0: b"head"})
    sync = syncer(primary, mirror, block_size=64 * KiB)
    sync.sync()
    with open(primary / "f", "r+b") as f:
        f.seek(512 * KiB)
        f.write(bytes(64 * KiB))
    stats = sync.sync()
    assert data_regions(mirror / "f") == data_regions(primary / "f")
    assert stats.bytes_written == 64 * KiB


def test_first_files_go_first_in_the_given_order(primary: Path, mirror: Path) -> None:
    for name in ("a", "b", "z-db", "z-db-wal"):
        (primary / name).write_text(name)
    (primary / "sub").mkdir()
    (primary / "sub" / "c").write_text("c")
    seen: list[str] = []
    first = [primary / "sub" / "c", primary / "gone", primary / "z-db", primary / "z-db-wal"]
    syncer(primary, mirror).sync(first, on_file=lambda p: seen.append(p.name))
    assert seen == ["c", "z-db", "z-db-wal", "a", "b"]
    assert tree(mirror) == tree(primary)


def test_first_files_are_resolved_afresh_by_each_pass(primary: Path, mirror: Path) -> None:
    """A pass remembers the directories it resolved (the final pass asks for every file inside
    the window); a link re-pointed since the last pass must still be followed to where it leads."""
    for name in ("one", "two"):
        (primary / name).mkdir()
        (primary / name / "f").write_text(name)
    (primary / "link").symlink_to("one")
    sync = syncer(primary, mirror)
    seen: list[Path] = []
    sync.sync([primary / "link" / "f"], on_file=seen.append)
    (primary / "link").unlink()
    (primary / "link").symlink_to("two")
    seen.clear()
    sync.sync([primary / "link" / "f"], on_file=seen.append)
    assert seen[0] == primary / "two" / "f"
    assert tree(mirror) == tree(primary)


def test_a_first_file_whose_directory_became_a_file_meanwhile_is_skipped(primary: Path, mirror: Path) -> None:
    """The primary changes while a pass runs: a listed file below a directory that is now a
    file is gone, not an error."""
    (primary / "d").mkdir()
    for name in ("a", "b"):
        (primary / "d" / name).write_text(name)

    def replace_directory(path: Path) -> None:
        if path.name == "a":
            shutil.rmtree(primary / "d")
            (primary / "d").write_text("now a file")

    syncer(primary, mirror).sync([primary / "d" / "a", primary / "d" / "b"], on_file=replace_directory)
    assert tree(mirror) == tree(primary)


def test_progress_reaches_the_bytes_of_the_tree(primary: Path, mirror: Path) -> None:
    (primary / "one").write_bytes(b"1" * 3000)
    (primary / "two").write_bytes(b"2" * 5000)
    calls: list[tuple[int, int | None]] = []
    syncer(primary, mirror).sync(progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (8000, None)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.parametrize("where", ["inside", "around", "same"])
def test_nested_or_identical_mirror_is_refused(tmp_path: Path, where: str) -> None:
    primary = tmp_path / "data"
    mirror = {"inside": primary / "m", "around": tmp_path, "same": primary}[where]
    with pytest.raises(UserError):
        DirectorySync(primary, mirror, tmp_path.parent / "state.json")


def test_state_file_inside_the_mirror_is_refused(primary: Path, mirror: Path) -> None:
    with pytest.raises(UserError, match="state file"):
        DirectorySync(primary, mirror, mirror / "state.json")


def test_provider_preflight_reports_problems_and_creates_nothing(tmp_path: Path) -> None:
    provider = DirectoryMirror(tmp_path / "missing", tmp_path / "no" / "mirror")
    whats = [problem.what for problem in provider.preflight()]
    assert any("primary" in what and "does not exist" in what for what in whats)
    assert any("parent" in what for what in whats)
    nested = DirectoryMirror(tmp_path, tmp_path / "inside")
    assert any("inside the primary" in problem.what for problem in nested.preflight())
    assert sorted(os.listdir(tmp_path)) == []


def test_provider_split_reads_the_mirror_and_reestablishes(primary: Path, mirror: Path) -> None:
    (primary / "db").write_bytes(b"v1")
    provider = DirectoryMirror(primary, mirror)
    assert provider.preflight() == []
    provider.bulk_sync(lambda done, total: None)
    provider.final_sync([primary / "db"], lambda done, total: None)
    provider.split()
    assert provider.is_split
    (primary / "db").write_bytes(b"v2, after the split")
    with provider.open_split_copy(primary / "db") as copy:
        assert copy.read() == b"v1"
    provider.reestablish()
    assert not provider.is_split
    assert provider.bulk_sync(lambda done, total: None).files_updated == 1
    assert (mirror / "db").read_bytes() == b"v2, after the split"


def test_a_skipped_directory_is_left_as_it_was_and_caught_up_by_the_next_pass(
    primary: Path, mirror: Path
) -> None:
    """What the archive collects from the primary (PostgreSQL's pg_wal in HOT_BACKUP) the final
    pass skips, inside the window: left as the mirror had it, even where it vanished or grew on
    the primary, and its recorded fingerprints kept, so the next pass copies what changed."""
    (primary / "pg_wal").mkdir()
    (primary / "pg_wal" / "000000010000000000000001").write_bytes(b"a" * 8192)
    (primary / "pg_wal" / "old").write_bytes(b"o")
    (primary / "base").mkdir()
    (primary / "base" / "1259").write_bytes(b"t" * 8192)
    syncer(primary, mirror).sync()
    (primary / "pg_wal" / "000000010000000000000001").write_bytes(b"b" * 8192)
    (primary / "pg_wal" / "000000010000000000000002").write_bytes(b"c" * 8192)
    (primary / "pg_wal" / "old").unlink()
    (primary / "base" / "1259").write_bytes(b"u" * 8192)
    final = syncer(primary, mirror)
    final.skip = frozenset({"pg_wal"})
    final.sync()
    assert (mirror / "base" / "1259").read_bytes() == b"u" * 8192, "the rest is brought up to date"
    assert sorted(p.name for p in (mirror / "pg_wal").iterdir()) == ["000000010000000000000001", "old"]
    assert (mirror / "pg_wal" / "000000010000000000000001").read_bytes() == b"a" * 8192
    assert {"pg_wal/old", "pg_wal/000000010000000000000001"} <= set(final.load_state()), "fingerprints kept"
    syncer(primary, mirror).sync()
    assert tree(mirror) == tree(primary), "the next pass catches the skipped directory up"
