"""The archive: GNU tar extracts it to identical bytes; logical order; checksums; records."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import integrity
from splitmirror.archive.pax import CHECKSUM_KEY, MANIFEST_NAME, ArchiveWriter
from splitmirror.catalog import SqliteCatalog
from splitmirror.hooks import Hooks
from splitmirror.session import Session
from splitmirror.targets.base import WRITE_BATCH, TargetFull
from splitmirror.targets.builtin import FileTarget, TapeTarget


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members(archive: str | Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return tar.getmembers()


def test_session_archive_extracts_with_gnu_tar_to_identical_bytes(
    ledger: Path, make_config: Any, hooks: Hooks, tmp_path: Path
) -> None:
    config = make_config(mode="freeze")
    summary = Session(config, hooks).run()
    assert summary.archive and summary.archive.endswith(f"ledger-{summary.id}.tar")
    out = tmp_path / "gnu"
    out.mkdir()
    proc = subprocess.run(["tar", "-xf", summary.archive, "-C", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # silent: no unknown-keyword warnings
    # Nothing wrote to the database since, so the primary holds exactly what was archived.
    assert (out / "ledger.db").read_bytes() == ledger.read_bytes()
    # FREEZE checkpoints every frame first: the main file alone is the consistent image.
    (out / "ledger.db-wal").unlink()
    assert integrity(out / "ledger.db") == ("ok", 2000)
    assert not (out / "ledger.db-shm").exists(), "-shm is never archived"
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["mode"] == "freeze" and manifest["session"]["id"] == summary.id
    assert [f["member"] for f in manifest["files"]] == ["ledger.db", "ledger.db-wal"]


def test_members_in_logical_order_each_with_matching_checksum(
    ledger: Path, make_config: Any, hooks: Hooks
) -> None:
    summary = Session(make_config(mode="hot-backup"), hooks).run()
    assert summary.archive
    with tarfile.open(summary.archive) as tar:
        infos = tar.getmembers()
        names = [i.name for i in infos]
        assert names == ["ledger.db", "ledger.db-wal", MANIFEST_NAME]  # key (0,), (1,), manifest last
        for info in infos:
            data = tar.extractfile(info).read()  # type: ignore[union-attr]
            assert info.pax_headers[CHECKSUM_KEY] == sha(data)
    catalog = SqliteCatalog(Path(summary.config).parent / "catalog.db")
    files = catalog.files(summary.id)
    assert [f.member for f in files] == names
    raw = Path(summary.archive).read_bytes()
    for record, info in zip(files, infos, strict=True):
        assert record.sha256 == info.pax_headers[CHECKSUM_KEY]
        assert record.offset == info.offset  # the catalog's archive offset is the member's header
        assert sha(raw[info.offset_data : info.offset_data + info.size]) == record.sha256


def test_archive_is_whole_records_and_private(ledger: Path, make_config: Any, hooks: Hooks) -> None:
    summary = Session(make_config(block_size="64KiB"), hooks).run()
    assert summary.archive
    info = os.stat(summary.archive)
    assert info.st_size % (64 * 1024) == 0
    assert info.st_mode & 0o777 == 0o600
    assert not Path(summary.archive + ".partial").exists()


@pytest.mark.parametrize("seekable", [True, False])
@pytest.mark.parametrize(
    ("size", "block"), [(3 * 1024 * 1024 + 17, 10240), (1000, 256 * 1024), (70_000, 65536)]
)
def test_writer_checksums_whether_or_not_the_target_can_seek(
    tmp_path: Path, seekable: bool, size: int, block: int
) -> None:
    """Seekable targets patch the digest in (on disk, in the record buffer, or across both);
    on the others it is the manifest's to carry.  Every way gives a correct archive."""
    path = tmp_path / "a.tar"
    target = FileTarget(str(path), block)
    if not seekable:
        target.seekable = False  # type: ignore[misc]
    writer = ArchiveWriter(target)
    target.open()
    payload = os.urandom(size)
    writer.add_file("big.bin", io.BytesIO(payload), len(payload), mode=0o640, mtime=1_700_000_000)
    writer.add_bytes("label", b"backup label\n")
    writer.add_manifest({"files": 2})
    writer.close()
    with tarfile.open(path) as tar:
        big = tar.getmember("big.bin")
        assert big.pax_headers.get(CHECKSUM_KEY) == (sha(payload) if seekable else None)
        assert writer.members[0].sha256 == sha(payload)
        assert tar.extractfile(big).read() == payload  # type: ignore[union-attr]
        assert big.mode == 0o640 and big.mtime == 1_700_000_000
        assert [m.name for m in tar.getmembers()][-1] == MANIFEST_NAME
    assert path.stat().st_size % block == 0


def test_shrinking_source_is_an_error(tmp_path: Path) -> None:
    target = FileTarget(str(tmp_path / "a.tar"), 512)
    target.open()
    with pytest.raises(Exception, match="shorter on the split mirror"):
        ArchiveWriter(target).add_file("x", io.BytesIO(b"abc"), 10)
    target.discard()
    assert not list(tmp_path.iterdir())


class RecordingTape(TapeTarget):
    """The tape target, writing to /dev/null, remembering the size of every write(2)."""

    def __init__(self, block_size: int) -> None:
        super().__init__("/dev/null", block_size)
        self.writes: list[int] = []

    def _emit(self, record: bytes | bytearray | memoryview) -> None:
        view = memoryview(record)
        for start in range(0, len(view), self.block_size):
            self.writes.append(len(view[start : start + self.block_size]))
        super()._emit(record)


def test_tape_gets_only_whole_fixed_size_records() -> None:
    assert TapeTarget.accepts("/dev/null") and not FileTarget.accepts("/dev/null")
    tape = RecordingTape(256 * 1024)
    tape.open()
    writer = ArchiveWriter(tape)
    data = os.urandom(700_001)
    writer.add_file("f", io.BytesIO(data), len(data))
    writer.add_manifest({})
    writer.close()
    assert tape.writes and set(tape.writes) == {256 * 1024}


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_members_carry_the_files_owner_and_mode(ledger: Path, make_config: Any, hooks: Hooks) -> None:
    os.chown(ledger, 1234, 5678)
    ledger.chmod(0o640)
    summary = Session(make_config(), hooks).run()
    member = members(summary.archive or "")[0]
    assert (member.name, member.uid, member.gid, member.mode) == ("ledger.db", 1234, 5678, 0o640)


def test_patch_across_the_emitted_and_buffered_boundary(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    target = FileTarget(str(path), 512)
    target.open()
    size = WRITE_BATCH + 488
    target.write(bytes(size))  # a batch emitted, 488 bytes still buffered
    target.patch(WRITE_BATCH - 12, b"A" * 24)  # 12 bytes on disk, 12 in the buffer
    target.write(memoryview(b"B" * 600))
    target.commit()
    data = path.read_bytes()
    assert len(data) == WRITE_BATCH + 1536
    assert (
        data[: WRITE_BATCH - 12] == bytes(WRITE_BATCH - 12)
        and data[WRITE_BATCH - 12 : WRITE_BATCH + 12] == b"A" * 24
    )
    assert data[WRITE_BATCH + 12 : size] == bytes(476)
    assert data[size : size + 600] == b"B" * 600 and data[size + 600 :] == bytes(448)


class CountingFile(FileTarget):
    """The file target, remembering the size of every batch it emits."""

    def __init__(self, path: str, block_size: int) -> None:
        super().__init__(path, block_size)
        self.emits: list[int] = []

    def _emit(self, record: bytes | bytearray | memoryview) -> None:
        self.emits.append(len(record))
        super()._emit(record)


def test_small_members_go_to_a_file_in_large_writes(tmp_path: Path) -> None:
    """1000 members of 16 KiB (a database's small tables and indexes): whole records gathered
    into batches, not a write(2) per 10 KiB record (17,500 for 10,000 such members before)."""
    target = CountingFile(str(tmp_path / "a.tar"), 10240)
    target.open()
    writer = ArchiveWriter(target)
    contents = [os.urandom(16384) for _ in range(1000)]
    for i, data in enumerate(contents):
        writer.add_file(f"f{i}", io.BytesIO(data), len(data))
    writer.add_manifest({})
    writer.close()
    total = sum(target.emits)
    assert total == (tmp_path / "a.tar").stat().st_size and all(n % 10240 == 0 for n in target.emits)
    assert len(target.emits) <= total // (WRITE_BATCH // 10240 * 10240) + 2, len(target.emits)
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert [tar.extractfile(f"f{i}").read() for i in (0, 999)] == [contents[0], contents[999]]  # type: ignore[union-attr]


class FullOnPatch(FileTarget):
    """A file target whose disk fills as a member's checksum record is patched in place."""

    def _pwrite(self, offset: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_patching_a_checksum_is_the_target_full(tmp_path: Path) -> None:
    """Not "reading the file failed": the target's own words, as for any other write to it."""
    target = FullOnPatch(str(tmp_path / "a.tar"), 512)
    target.open()
    data = os.urandom(3 * WRITE_BATCH)  # its header is emitted before the record is patched
    with pytest.raises(TargetFull, match="is full"):
        ArchiveWriter(target).add_file("big", io.BytesIO(data), len(data))
    target.discard()
