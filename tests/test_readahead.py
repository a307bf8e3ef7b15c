"""BACKUP's read-ahead (archive/readahead.py) and the concurrent split readers it reads through
(mirror/splitread.py): order, reads in flight across files, errors where they belong, cleanup."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.archive.pax import ArchiveWriter
from splitmirror.archive.readahead import ReadAhead
from splitmirror.extents import Extent, ExtentFlag, ExtentMap
from splitmirror.mirror.block import ExtentReader
from splitmirror.mirror.blocksync import DirectReader
from splitmirror.mirror.splitread import (
    MAX_READ,
    CoalescedReads,
    ExtentSplitReader,
    ReaderPool,
    SplitReader,
    reader_for,
)
from splitmirror.targets.builtin import FileTarget


class Recorded:
    """A split reader over bytes that records every read and how many ran at once."""

    def __init__(self, data: bytes, log: list[tuple[str, int, int]], name: str, delay: float = 0.0) -> None:
        self.data, self.log, self.name, self.delay = data, log, name, delay
        self.closed = False

    running = 0
    most = 0
    lock = threading.Lock()

    def read_into(self, offset: int, buffer: memoryview) -> int:
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
            self.log.append(("start", int(self.name), offset))
        time.sleep(self.delay)
        with cls.lock:
            cls.running -= 1
        assert not self.closed, "read after close"
        data = self.data[offset : offset + len(buffer)]
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.closed = True


def test_members_come_back_whole_and_in_order_whatever_the_chunking() -> None:
    rng = random.Random(7)
    datas = [rng.randbytes(rng.choice([0, 1, 5000, 70_000, 300_000])) for _ in range(30)]
    log: list[tuple[str, int, int]] = []
    readers = [Recorded(d, log, str(i)) for i, d in enumerate(datas)]
    layouts = [[(0, len(d))] if d else [] for d in datas]
    with ReadAhead([lambda r=r: r for r in readers], layouts, workers=3, depth=5, chunk=4096) as ahead:
        for index, data in enumerate(datas):
            assert b"".join(ahead.member(index)) == data
    assert all(r.closed for r in readers if r.data), "every reader opened is closed"


def test_sparse_layouts_read_only_their_ranges() -> None:
    data = bytes(range(256)) * 64
    log: list[tuple[str, int, int]] = []
    reader = Recorded(data, log, "0")
    layout = [(512, 1024), (8192, 100)]
    with ReadAhead([lambda: reader], [layout], chunk=600) as ahead:
        got = b"".join(ahead.member(0))
    assert got == data[512:1536] + data[8192:8292]
    assert sorted(offset for _e, _m, offset in log) == [512, 1112, 8192]


def test_reads_of_the_next_files_are_in_flight_while_this_one_is_written() -> None:
    """Several reads at once, and the next member's first read issued before this member's last
    chunk was taken: the device never waits for the writer."""
    Recorded.running = Recorded.most = 0
    log: list[tuple[str, int, int]] = []
    readers = [Recorded(bytes(3 * 1024), log, str(i), delay=0.02) for i in range(4)]
    with ReadAhead(
        [lambda r=r: r for r in readers], [[(0, 3 * 1024)]] * 4, workers=4, depth=8, chunk=1024
    ) as ahead:
        chunks = ahead.member(0)
        next(chunks)
        time.sleep(0.1)  # the writer is busy with the first chunk
        started_meanwhile = {member for _e, member, _o in log}
        list(chunks)
        for index in range(1, 4):
            list(ahead.member(index))
    assert Recorded.most >= 2, "reads were issued one at a time"
    assert {1, 2} <= started_meanwhile, "nothing was read ahead across the member boundary"


def test_an_opening_error_surfaces_at_its_own_member() -> None:
    log: list[tuple[str, int, int]] = []
    good = Recorded(b"a" * 10, log, "0")

    def broken() -> Recorded:
        raise PermissionError(13, "Permission denied")

    with ReadAhead([lambda: good, broken], [[(0, 10)], [(0, 10)]], chunk=4) as ahead:
        assert b"".join(ahead.member(0)) == b"a" * 10, "the first member is not blamed"
        with pytest.raises(PermissionError):
            list(ahead.member(1))


def test_a_writer_that_stops_early_leaves_the_next_member_intact() -> None:
    log: list[tuple[str, int, int]] = []
    first = Recorded(b"x" * 100, log, "0")
    second = Recorded(b"y" * 100, log, "1")
    with ReadAhead([lambda: first, lambda: second], [[(0, 100)], [(0, 100)]], depth=6, chunk=10) as ahead:
        chunks = ahead.member(0)
        next(chunks)
        chunks.close()  # the writer failed after one chunk
        assert first.closed
        assert b"".join(ahead.member(1)) == b"y" * 100
    assert second.closed


def test_a_short_file_ends_its_member_early() -> None:
    log: list[tuple[str, int, int]] = []
    short = Recorded(b"z" * 50, log, "0")
    with ReadAhead([lambda: short], [[(0, 100)]], chunk=30) as ahead:
        assert b"".join(ahead.member(0)) == b"z" * 50


def test_close_closes_the_readers_of_members_never_taken() -> None:
    log: list[tuple[str, int, int]] = []
    readers = [Recorded(b"q" * 10, log, str(i)) for i in range(3)]
    with ReadAhead([lambda r=r: r for r in readers], [[(0, 10)]] * 3, depth=6) as ahead:
        list(ahead.member(0))
    assert all(r.closed for r in readers if any(m == int(r.name) for _e, m, _o in log))


def read_at(reader: SplitReader, offset: int, length: int) -> bytes:
    buffer = bytearray(length)
    return bytes(buffer[: reader.read_into(offset, memoryview(buffer))])


def test_file_and_serial_readers_read_by_offset(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(200_000)
    path.write_bytes(data)
    pread = reader_for(open(path, "rb"))  # noqa: SIM115 - the reader closes it
    serial = reader_for(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]
    for reader in (pread, serial):
        assert read_at(reader, 1000, 5000) == data[1000:6000]
        assert read_at(reader, 199_990, 100) == data[199_990:]
        assert read_at(reader, 300_000, 10) == b""
        reader.close()
    assert type(pread).__name__ == "FileReader" and type(serial).__name__ == "SerialReader"


def test_extent_split_reads_match_the_sequential_extent_reader(tmp_path: Path) -> None:
    """Holes, unwritten extents, unaligned tails, extents longer than one device read, read from
    several threads: the same bytes as the block mirror's sequential reader."""
    device = tmp_path / "device.img"
    image = os.urandom(8 * MAX_READ)
    device.write_bytes(image)
    extents = (
        Extent(0, 3 * MAX_READ, 4096, ExtentFlag(0)),
        Extent(8192, 4 * MAX_READ + 4096, 3 * MAX_READ, ExtentFlag(0)),  # longer than a read
        Extent(8192 + 3 * MAX_READ, 0, 8192, ExtentFlag.UNWRITTEN),
        Extent(40960 + 3 * MAX_READ, 7 * MAX_READ, 12288, ExtentFlag.LAST),
    )
    size = 40960 + 3 * MAX_READ + 12288 - 100  # the last block trimmed
    emap = ExtentMap(size, extents)
    sequential = ExtentReader(DirectReader(device, MAX_READ), emap)
    expected = io.BufferedReader(sequential).read()
    assert len(expected) == size
    pool = ReaderPool(lambda: DirectReader(device, MAX_READ))
    split = ExtentSplitReader(pool, emap)
    offsets = list(range(0, size, 300_000))
    results: dict[int, bytes] = {}

    def read(offset: int) -> None:
        results[offset] = read_at(split, offset, 300_000)

    threads = [threading.Thread(target=read, args=(o,)) for o in offsets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert b"".join(results[o] for o in offsets) == expected
    assert read_at(split, size - 10, 100) == expected[-10:]
    pool.close()


def test_buffers_handed_back_are_read_into_again_and_never_while_in_use(tmp_path: Path) -> None:
    """Through the real writer (a threaded hash for members over 1 MiB): every member's bytes
    and digest are right although each buffer is read into again, and a few buffers serve a
    whole archive."""
    rng = random.Random(3)
    datas = [rng.randbytes(n) for n in (5 * MAX_READ + 123, 700, 3 * MAX_READ, 0, 2 * MAX_READ + 1)]
    log: list[tuple[str, int, int]] = []
    readers = [Recorded(d, log, str(i)) for i, d in enumerate(datas)]
    target = FileTarget(str(tmp_path / "a.tar"), 10240)
    target.open()
    writer = ArchiveWriter(target)
    buffers: set[int] = set()
    with ReadAhead([lambda r=r: r for r in readers], [[(0, len(d))] for d in datas], depth=4) as ahead:
        for index, data in enumerate(datas):

            def taken(chunks: Iterator[memoryview]) -> Iterator[memoryview]:
                for chunk in chunks:
                    buffers.add(id(chunk.obj))
                    yield chunk

            member = writer.add_chunks(
                f"m{index}", taken(ahead.member(index)), len(data), release=ahead.release
            )
            assert member.sha256 == hashlib.sha256(data).hexdigest(), index
    writer.close()
    with tarfile.open(tmp_path / "a.tar") as tar:
        for index, data in enumerate(datas):
            assert tar.extractfile(f"m{index}").read() == data  # type: ignore[union-attr]
    assert len(buffers) <= 4 + 3, f"{len(buffers)} buffers for {sum(map(len, datas)) >> 20} MiB"


class ShortOnce(Recorded):
    """A reader that comes back short once, in the middle (the file shrank as it was read)."""

    def read_into(self, offset: int, buffer: memoryview) -> int:
        got = super().read_into(offset, buffer)
        return min(got, 5) if offset == 30 else got


def test_a_short_read_ends_the_member_even_with_data_after_it() -> None:
    """Chunks after a short one would land at the wrong place in the member: none is taken."""
    log: list[tuple[str, int, int]] = []
    reader = ShortOnce(bytes(range(100)), log, "0")
    with ReadAhead([lambda: reader], [[(0, 100)]], chunk=30, depth=4) as ahead:
        assert b"".join(ahead.member(0)) == bytes(range(35))


class CountedReads:
    """A device reader that counts the reads the device sees."""

    def __init__(self, device: Path, log: list[tuple[int, int]]) -> None:
        self.reader, self.log = DirectReader(device, MAX_READ), log

    def read(self, offset: int, length: int) -> bytes:
        self.log.append((offset, length))
        return self.reader.read(offset, length)

    def close(self) -> None:
        self.reader.close()


def small_files_side_by_side(device: Path) -> tuple[list[ExtentMap], list[bytes]]:
    """36 small files (some with unaligned ends) packed one after the other on the device in
    the order they are read, one 8 KiB gap among them, then one far away."""
    image = bytearray(os.urandom(4 * MAX_READ))
    maps, contents, physical = [], [], 0
    for i in range(36):
        size = 16384 if i % 3 else 10_000
        if i == 20:
            physical += 8192  # a gap a run reads through
        if i == 35:
            physical = 3 * MAX_READ  # not a neighbour
        maps.append(ExtentMap(size, (Extent(0, physical, -(-size // 4096) * 4096, ExtentFlag.LAST),)))
        contents.append(bytes(image[physical : physical + size]))
        physical += -(-size // 4096) * 4096
    device.write_bytes(image)
    return maps, contents


def test_neighbouring_small_files_are_read_from_the_device_as_one(tmp_path: Path) -> None:
    """The block mirror plans runs of extents that lie side by side in BACKUP's order: 35
    neighbours are one device read, the far file its own; every member still gets its bytes,
    read ahead by four workers."""
    device = tmp_path / "device.img"
    maps, contents = small_files_side_by_side(device)
    log: list[tuple[int, int]] = []
    pool = ReaderPool(lambda: CountedReads(device, log))
    runs = CoalescedReads(pool, [(e.physical, min(e.length, m.size)) for m in maps for e in m.extents])
    openers = [lambda m=m: ExtentSplitReader(pool, m, runs) for m in maps]
    with ReadAhead(openers, [[(0, m.size)] for m in maps], workers=4) as ahead:
        got = [b"".join(bytes(chunk) for chunk in ahead.member(i)) for i in range(len(maps))]
    pool.close()
    assert got == contents
    assert sorted(log) == [(0, 35 * 16384 - 12 * 4096 + 8192), (3 * MAX_READ, 16384)], log


def test_a_run_is_let_go_once_taken_and_a_second_read_goes_to_the_device(tmp_path: Path) -> None:
    device = tmp_path / "device.img"
    maps, contents = small_files_side_by_side(device)
    log: list[tuple[int, int]] = []
    pool = ReaderPool(lambda: CountedReads(device, log))
    runs = CoalescedReads(pool, [(e.physical, min(e.length, m.size)) for m in maps[:3] for e in m.extents])
    readers = [ExtentSplitReader(pool, m, runs) for m in maps[:3]]
    assert [read_at(r, 0, m.size) for r, m in zip(readers, maps[:3], strict=True)] == contents[:3]
    assert len(log) == 1
    assert all(run.data is None and run.done for run in runs._runs.values()), "a taken run kept its bytes"
    assert read_at(readers[1], 0, maps[1].size) == contents[1]
    assert len(log) == 2
    pool.close()


def test_an_extent_two_files_share_is_read_on_its_own(tmp_path: Path) -> None:
    """A reflinked extent appears twice in BACKUP's plan: in a run it would be taken once and
    its second run would wait, holding its bytes, for a read that never comes."""
    device = tmp_path / "device.img"
    maps, contents = small_files_side_by_side(device)
    maps, contents = [*maps[:6], maps[2]], [*contents[:6], contents[2]]  # the 7th shares the 3rd's
    log: list[tuple[int, int]] = []
    pool = ReaderPool(lambda: CountedReads(device, log))
    runs = CoalescedReads(pool, [(e.physical, min(e.length, m.size)) for m in maps for e in m.extents])
    readers = [ExtentSplitReader(pool, m, runs) for m in maps]
    assert [read_at(r, 0, m.size) for r, m in zip(readers, maps, strict=True)] == contents
    assert all(run.done and run.data is None for run in runs._runs.values()), "a run still holds bytes"
    assert maps[2].extents[0].physical not in runs._runs
    pool.close()
