"""The block synchronizer on real devices: a loop-device ext4 as the primary, an image file or
another loop device as the mirror.  Equal bytes after every pass; only differing chunks written;
with the checksum map, the mirror is not read; a pass that dies leaves no map; a small mirror is
refused untouched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.errors import UserError
from splitmirror.mirror.blocksync import (
    DEVICE_MAP_DIR,
    BlockSync,
    _pieces,
    _stripes,
    device_size,
    map_path,
)
from splitmirror.testing.loopfs import (
    device_digest,
    device_of,
    loop_device,
    loop_filesystem,
    loop_filesystem_unavailable,
)

SIZE = 64 << 20


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(mount point, device) of a loop ext4 with some files on it."""
    reason = loop_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path, SIZE) as mount:
        device = device_of(mount)
        for i in range(5):
            (mount / f"file{i}").write_bytes(os.urandom(1 << 20))
        os.sync()
        yield mount, device


@pytest.mark.parametrize("workers", [1, 4, 7])
def test_a_pass_makes_the_mirror_equal_and_the_next_copies_only_what_changed(
    primary: tuple[Path, Path], tmp_path: Path, workers: int
) -> None:
    mount, device = primary
    mirror = tmp_path / "mirror.img"
    sync = BlockSync(device, mirror, workers=workers)
    first = sync.sync()
    assert not first.used_map and first.chunks == SIZE >> 20
    assert device_digest(mirror, SIZE) == device_digest(device, SIZE)

    with open(mount / "file2", "r+b") as f:  # one 4 KiB overwrite in place
        f.seek(300_000)
        f.write(os.urandom(4096))
        os.fsync(f.fileno())
    os.sync()
    second = sync.sync()
    assert second.used_map and second.bytes_read_mirror == 0, "with the map only the primary is read"
    assert 1 <= second.chunks_written <= 4, second  # the data chunk, plus journal/metadata chunks
    assert device_digest(mirror, SIZE) == device_digest(device, SIZE)

    with open(mirror, "r+b") as f:  # damage both ends (first and last stripe), forget the map
        f.seek(0)
        f.write(b"\xa5" * 512)
        f.seek(SIZE - 512)
        f.write(b"\x5a" * 512)
    sync.map_path.unlink()
    third = sync.sync()
    assert third.chunks_written == 2 and device_digest(mirror, SIZE) == device_digest(device, SIZE)


def test_stripes_cover_every_chunk_once() -> None:
    for chunks, workers in [(64, 4), (10, 3), (2, 8), (1, 1), (0, 4)]:
        stripes = _stripes(chunks, workers)
        assert [i for stripe in stripes for i in stripe] == list(range(chunks))
        assert len(stripes) <= max(1, workers) and all(len(s) > 0 for s in stripes if chunks)


def test_pieces_are_aligned_coalesced_across_small_gaps_and_cut() -> None:
    ranges = [(100, 10), (70000, 10), (200_000, 4096)]
    assert _pieces(ranges, 1 << 20, 1 << 20) == [(0, 4096), (69632, 4096), (196608, 8192)]
    # 64 KiB from the first to the second: one read; 120 KiB to the third: another
    assert _pieces(ranges, 1 << 20, 1 << 20, gap=64 << 10) == [(0, 73728), (196608, 8192)]
    assert _pieces([(0, 3 << 20)], 2 << 20 | 512, 1 << 20) == [
        (0, 1 << 20),
        (1 << 20, 1 << 20),
        (2 << 20, 512),
    ]


def test_without_a_map_the_mirror_itself_is_compared(primary: tuple[Path, Path], tmp_path: Path) -> None:
    _mount, device = primary
    mirror = tmp_path / "mirror.img"
    sync = BlockSync(device, mirror)
    sync.sync()
    sync.map_path.unlink()
    with open(mirror, "r+b") as f:  # damage the mirror behind the synchronizer's back
        f.seek(10 << 20)
        f.write(b"\xff" * 4096)
    again = sync.sync()
    assert not again.used_map and again.bytes_read_mirror == SIZE
    assert again.chunks_written == 1
    assert device_digest(mirror, SIZE) == device_digest(device, SIZE)


def test_a_pass_that_dies_leaves_no_map(primary: tuple[Path, Path], tmp_path: Path) -> None:
    _mount, device = primary
    sync = BlockSync(device, tmp_path / "mirror.img")
    sync.sync()
    assert sync.map_path.exists()

    def die(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync.sync(die)
    assert not sync.map_path.exists(), "a half pass must not leave a map that vouches for the mirror"
    assert not sync.sync().used_map


def test_a_block_device_mirror(primary: tuple[Path, Path], tmp_path: Path) -> None:
    _mount, device = primary
    image = tmp_path / "mirror-device.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
    with loop_device(image) as mirror_device:
        sync = BlockSync(device, mirror_device, map_dir=tmp_path / "maps")
        stats = sync.sync()
        assert stats.chunks_written > 0
        assert device_digest(mirror_device, SIZE) == device_digest(device, SIZE)
        assert sync.map_path.parent == tmp_path / "maps" and sync.map_path.exists()
        assert sync.sync().used_map


def test_a_mirror_smaller_than_the_primary_is_refused_untouched(
    primary: tuple[Path, Path], tmp_path: Path
) -> None:
    _mount, device = primary
    small = tmp_path / "small.img"
    small.write_bytes(b"keep" * 1024)
    with pytest.raises(UserError) as refused:
        BlockSync(device, small).sync()
    size = device_size(device)
    assert str(refused.value) == (
        f"the mirror {small} (4096 bytes) is smaller than the primary {device} ({size} bytes); "
        "the mirror was not touched"
    )
    assert small.read_bytes() == b"keep" * 1024


def test_the_primary_as_its_own_mirror_is_refused(primary: tuple[Path, Path]) -> None:
    _mount, device = primary
    assert [p.what for p in BlockSync(device, device).problems()] == [
        f"the mirror {device} is the primary itself"
    ]


def test_a_device_mirror_keeps_its_map_out_of_dev(tmp_path: Path) -> None:
    by_id = Path("/dev/disk/by-id/scsi-3600a0b80001234")
    assert map_path(by_id) == DEVICE_MAP_DIR / "dev_disk_by-id_scsi-3600a0b80001234.splitmirror-blocks.json"
    assert (
        map_path(by_id, tmp_path) == tmp_path / "dev_disk_by-id_scsi-3600a0b80001234.splitmirror-blocks.json"
    )
    assert map_path(tmp_path / "m.img") == tmp_path / ".m.img.splitmirror-blocks.json"


def test_an_image_written_behind_the_synchronizers_back_voids_its_map(
    primary: tuple[Path, Path], tmp_path: Path
) -> None:
    _mount, device = primary
    mirror = tmp_path / "mirror.img"
    sync = BlockSync(device, mirror)
    sync.sync()
    with open(mirror, "r+b") as f:  # the map stays; the image's mtime moves
        f.seek(20 << 20)
        f.write(b"\xff" * 4096)
    again = sync.sync()
    assert not again.used_map and again.chunks_written == 1
    assert device_digest(mirror, SIZE) == device_digest(device, SIZE)
