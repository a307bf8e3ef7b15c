"""Sparse members: holes are not stored, every reader gets the content back, the checksum is
the content's."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from splitmirror.archive.pax import CHECKSUM_KEY, ArchiveWriter
from splitmirror.archive.reader import ArchiveReader
from splitmirror.archive.sparse import data_segments
from splitmirror.extents import data_ranges
from splitmirror.targets.builtin import FileTarget

MiB = 1 << 20


def content(size: int, segments: list[tuple[int, int]]) -> bytes:
    """``size`` bytes: random data in ``segments``, zeros elsewhere."""
    data = bytearray(size)
    for offset, length in segments:
        data[offset : offset + length] = os.urandom(length)
    return bytes(data)


def write_archive(
    path: Path, files: list[tuple[str, bytes, list[tuple[int, int]] | None]], *, seekable: bool = True
) -> None:
    target = FileTarget(str(path), 10240)
    if not seekable:
        target.seekable = False  # type: ignore[misc]
    writer = ArchiveWriter(target)
    target.open()
    for name, data, segments in files:
        writer.add_file(name, io.BytesIO(data), len(data), data=segments, mtime=1_700_000_000)
    writer.add_manifest({})
    writer.close()


LAYOUTS = {
    "hole in the middle": (3 * MiB, [(0, 4096), (2 * MiB, 8192)]),
    "holes at both ends": (5 * MiB + 100, [(MiB, 5000), (3 * MiB, 10)]),
    "ends with data": (2 * MiB + 3, [(MiB + 17, MiB - 14)]),
    "only a hole": (4 * MiB, []),
    "many small pieces": (MiB, [(i * 8192, 512) for i in range(128)]),
}


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "tape-like"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_sparse_member_stores_only_data_and_reads_back_whole(
    tmp_path: Path, layout: str, seekable: bool
) -> None:
    size, segments = LAYOUTS[layout]
    data = content(size, segments)
    archive = tmp_path / "a.tar"
    write_archive(archive, [("db/base/16384", data, segments)], seekable=seekable)
    stored = sum(length for _offset, length in segments)
    assert archive.stat().st_size < stored + 64 * 1024, "holes were stored"
    for mode in ("r:", "r|"):
        with tarfile.open(archive, mode) as tar:
            info = tar.next()
            assert info is not None and info.issparse()
            assert (info.name, info.size) == ("db/base/16384", size)
            # a stream cannot patch the header: its digest is the manifest's to carry
            expected = hashlib.sha256(data).hexdigest() if seekable else None
            assert info.pax_headers.get(CHECKSUM_KEY) == expected
            assert tar.extractfile(info).read() == data  # type: ignore[union-attr]
    with ArchiveReader(archive) as reader:
        info = next(iter(reader))
        assert reader.digest(info) == hashlib.sha256(data).hexdigest()


def test_gnu_tar_extracts_sparse_members_sparse_and_exact(tmp_path: Path) -> None:
    size, segments = LAYOUTS["holes at both ends"]
    data = content(size, segments)
    long_name = "pg_tblspc/16400/PG_15_202209061/" + "d" * 80 + "/16385"
    archive = tmp_path / "a.tar"
    write_archive(archive, [("sparse.bin", data, segments), (long_name, data, segments)])
    listing = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["sparse.bin", long_name, ".splitmirror-manifest.json"]
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for name in ("sparse.bin", long_name):
        extracted = out / name
        assert extracted.read_bytes() == data
        assert extracted.stat().st_blocks * 512 < size // 2, "GNU tar wrote the holes out"


def test_a_file_without_holes_stays_a_plain_member(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    archive = tmp_path / "a.tar"
    write_archive(archive, [("dense", data, [(0, 60_000), (60_000, 40_000)])])
    with tarfile.open(archive) as tar:
        info = tar.getmember("dense")
        assert not info.issparse() and tar.extractfile(info).read() == data  # type: ignore[union-attr]


def test_data_segments_are_clipped_sorted_and_merged() -> None:
    assert data_segments(None, 10) is None
    assert data_segments([(0, 10)], 10) is None
    assert data_segments([(0, 4), (4, 6)], 10) is None
    assert data_segments([(8, 10), (0, 2), (1, 3)], 10) is None  # one block: no hole left
    assert data_segments([(5000, 10), (0, 2), (1, 3), (700, 1)], 9000) == [(0, 1024), (4608, 512)]
    assert data_segments([(8000, 5000)], 9000) == [(7680, 1320)]
    assert data_segments([], 0) is None
    assert data_segments([], 10) == []


def test_shrinking_sparse_source_is_an_error(tmp_path: Path) -> None:
    target = FileTarget(str(tmp_path / "a.tar"), 512)
    target.open()
    with pytest.raises(Exception, match="shorter on the split mirror"):
        ArchiveWriter(target).add_file("x", io.BytesIO(b"abc"), 9000, data=[(8192, 808)])
    target.discard()


def test_seek_data_finds_the_holes_of_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.seek(MiB)
        f.write(b"x" * 4096)
        f.truncate(4 * MiB)
    with open(path, "rb") as f:
        ranges = data_ranges(f.fileno())
    assert ranges is not None
    if ranges == [(0, 4 * MiB)]:
        pytest.skip(f"the filesystem under {tmp_path} does not report holes")
    assert ranges == [(MiB, 4096)]
