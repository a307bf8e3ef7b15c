"""FIEMAP extent maps on a real loop-device filesystem: every extent, read straight off the
device, gives the file's bytes; holes, unwritten extents and delayed allocation are reported as
such; batched calls return the same map as one large call."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.extents import Extent, ExtentFlag, ExtentMap, coalesce, fiemap, map_file
from splitmirror.testing.loopfs import device_of, loop_filesystem, loop_filesystem_unavailable

BLOCK = 4096


@pytest.fixture(params=["ext4", "xfs"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A mounted loop ext4 or xfs (300 MiB, the smallest xfs allows) and its device."""
    reason = loop_filesystem_unavailable(request.param)
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path, 300 << 20, request.param) as mount:
        device = device_of(mount)
        yield mount, device


def read_device(device: Path, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of the device, bypassing its page cache (O_DIRECT)."""
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    try:
        buffer = mmap.mmap(-1, length)  # page-aligned, as O_DIRECT wants
        os.preadv(fd, [buffer], offset)
        return bytes(buffer)
    finally:
        os.close(fd)


def from_device(device: Path, emap: ExtentMap) -> bytes:
    """The file reassembled from the device by its map: holes and unwritten extents as zeros."""
    out = bytearray()
    for offset, length, extent in emap.pieces():
        if extent is None or extent.zeros:
            out += bytes(length)
            continue
        assert extent.readable_raw, extent
        start = extent.physical + (offset - extent.logical)
        aligned = start - start % BLOCK
        span = -(-(start + length - aligned) // BLOCK) * BLOCK
        out += read_device(device, aligned, span)[start - aligned : start - aligned + length]
    return bytes(out)


def written(emap: ExtentMap) -> list[Extent]:
    """The extents that hold data (not unwritten preallocations)."""
    return [e for e in emap.extents if not e.zeros]


def write(path: Path, chunks: list[tuple[int, bytes]], size: int | None = None) -> bytes:
    """Write ``(offset, data)`` chunks (and truncate to ``size``); return the expected content."""
    with open(path, "wb") as f:
        for offset, data in chunks:
            f.seek(offset)
            f.write(data)
        if size is not None:
            f.truncate(size)
        f.flush()
        os.fsync(f.fileno())
    return path.read_bytes()


def test_every_kind_of_file_reads_back_from_the_device(disk: tuple[Path, Path]) -> None:
    mount, device = disk
    files = {
        "tiny": [(0, b"x" * 17)],
        "contiguous": [(0, os.urandom(3 * 1024 * 1024 + 123))],
        "sparse": [(0, os.urandom(5000)), (1 << 20, os.urandom(70000)), (8 << 20, b"end")],
        "hole-at-the-end": [(0, os.urandom(10000))],
        "fragmented": [(i * 2 * BLOCK, os.urandom(BLOCK)) for i in range(300)],
    }
    for name, chunks in files.items():
        expected = write(mount / name, chunks, size=(16 << 20) if name == "hole-at-the-end" else None)
        emap = map_file(mount / name)
        assert emap.size == len(expected)
        assert from_device(device, emap) == expected, name
    # xfs fills the gaps between written blocks with unwritten (preallocated) extents; ext4 leaves holes.
    assert len(written(map_file(mount / "fragmented"))) == 300
    sparse = map_file(mount / "sparse")
    assert sum(e.length for e in written(sparse)) < sparse.size // 8, "a sparse file stays sparse"


def test_preallocated_space_is_unwritten_and_reads_as_zeros(disk: tuple[Path, Path]) -> None:
    mount, device = disk
    path = mount / "prealloc"
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 1 << 20)
        f.write(b"head")
        os.fsync(f.fileno())
    emap = map_file(path)
    assert any(e.flags & ExtentFlag.UNWRITTEN for e in emap.extents)
    assert all(e.readable_raw for e in emap.extents)
    assert from_device(device, emap) == path.read_bytes()


def test_delayed_allocation_is_not_readable_raw_until_synced(disk: tuple[Path, Path]) -> None:
    mount, _device = disk
    path = mount / "delalloc"
    with open(path, "wb") as f:
        f.write(os.urandom(64 * 1024))
        f.flush()
        unsynced = ExtentMap(os.fstat(f.fileno()).st_size, tuple(fiemap(f.fileno(), sync=False)))
        assert unsynced.extents and unsynced.extents[0].flags & ExtentFlag.DELALLOC
        assert not unsynced.readable_raw
        synced = ExtentMap(os.fstat(f.fileno()).st_size, tuple(fiemap(f.fileno(), sync=True)))
        assert synced.readable_raw


def test_many_extents_are_mapped_in_batches(disk: tuple[Path, Path]) -> None:
    mount, device = disk
    path = mount / "many"
    expected = write(path, [(i * 2 * BLOCK, os.urandom(BLOCK)) for i in range(1300)])
    fd = os.open(path, os.O_RDONLY)
    try:
        small, large = fiemap(fd, batch=100), fiemap(fd, batch=5000)
    finally:
        os.close(fd)
    assert len(written(ExtentMap(len(expected), tuple(small)))) == 1300 and small == large
    assert small[-1].flags & ExtentFlag.LAST and not any(e.flags & ExtentFlag.LAST for e in small[:-1])
    assert from_device(device, ExtentMap(len(expected), tuple(small))) == expected


def test_pieces_cover_the_file_and_trim_the_last_block() -> None:
    emap = ExtentMap(
        10000,
        (
            Extent(0, 40960, 4096, ExtentFlag(0)),
            Extent(8192, 81920, 4096, ExtentFlag.LAST),  # covers 8192..12288, past the size
        ),
    )
    assert [(o, n, e is not None) for o, n, e in emap.pieces()] == [
        (0, 4096, True),
        (4096, 4096, False),
        (8192, 1808, True),
    ]
    assert emap.holes() == [(4096, 4096)]
    assert ExtentMap(100, ()).holes() == [(0, 100)]


def test_coalesce_joins_only_what_is_contiguous_on_both_sides() -> None:
    a = Extent(0, 4096, 4096, ExtentFlag(0))
    b = Extent(4096, 8192, 4096, ExtentFlag(0))
    c = Extent(8192, 40960, 4096, ExtentFlag.LAST)  # contiguous in the file, not on the device
    assert coalesce([a, b, c]) == [Extent(0, 4096, 8192, ExtentFlag(0)), c]
