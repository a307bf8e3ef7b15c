"""Reading BACKUP's members ahead of the writer: several reads in flight, across files.

Read file after file, one synchronous read at a time, the archive waits for the disk on every
read and for the hash and the write between them; the split mirror's device sits idle meanwhile.
:class:`ReadAhead` keeps up to ``depth`` chunk reads queued on ``workers`` threads, in archive
order and across member boundaries (the next files' first chunks are read while this one's last
are written), so reading overlaps hashing and writing and the device always has requests to
serve.  The writer takes the chunks of one member after the other (:meth:`ReadAhead.member`), in
order.

A member's reader is opened by the first read that needs it (in a worker, so an error opening it
surfaces where the writer takes that member, not where it happened to be read ahead) and closed
once its last chunk has been taken.  Readers must allow concurrent reads
(:class:`~splitmirror.mirror.splitread.SplitReader`).

Chunks are read into buffers that are used again once the writer hands them back
(:meth:`ReadAhead.release`, after it has written and hashed them): a fresh megabyte for every
chunk costs the kernel a page fault per page, measured as much system time as the reads
themselves.  A chunk is a ``memoryview`` valid until it is handed back.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from ..mirror.splitread import MAX_READ, SplitReader
from .sparse import Segment

#: A member up to one device read long is read in one chunk: the block mirror's runs of
#: neighbouring extents (:class:`~splitmirror.mirror.splitread.CoalescedReads`) count on it.
CHUNK = MAX_READ


class _Opened:
    """One member's reader, opened once by whichever read comes first; an opening error is kept
    and raised by every read of that member."""

    def __init__(self, opener: Callable[[], SplitReader]) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._reader: SplitReader | None = None
        self._error: BaseException | None = None
        self.done = False  # its writer has taken all it will take

    def get(self) -> SplitReader:
        with self._lock:
            if self._reader is None and self._error is None:
                try:
                    self._reader = self._opener()
                except BaseException as error:  # noqa: BLE001 - re-raised by every read of it
                    self._error = error
            if self._error is not None:
                raise self._error
            assert self._reader is not None
            return self._reader

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


class ReadAhead:
    """The chunks of ``layouts[i]`` (each a member's ranges) of the reader ``openers[i]`` opens.

    ``before_read`` is called with each read's length before it is issued (a bandwidth
    budget sleeps there).  Use as a context manager; :meth:`member` must be taken in order.
    """

    def __init__(
        self,
        openers: Sequence[Callable[[], SplitReader]],
        layouts: Sequence[list[Segment]],
        *,
        workers: int = 2,
        depth: int | None = None,
        chunk: int = CHUNK,
        before_read: Callable[[int], None] | None = None,
    ) -> None:
        if len(openers) != len(layouts):
            raise ValueError("one layout per opener")
        self._members = [_Opened(opener) for opener in openers]
        self._jobs = self._plan(layouts, chunk)
        # Enough queued that every worker has a read while the writer holds two chunks.
        self._depth = max(1, depth if depth is not None else 2 * workers + 4)
        self._before_read = before_read
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="readahead")
        self._queued: collections.deque[tuple[int, int, Future[memoryview]]] = collections.deque()
        self._next = 0  # the member whose chunks are taken next
        self._chunk = chunk
        self._spare: collections.deque[bytearray] = collections.deque()  # buffers handed back

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _plan(layouts: Sequence[list[Segment]], chunk: int) -> Iterator[tuple[int, int, int]]:
        """(member, offset, length) of every read, in archive order."""
        for index, layout in enumerate(layouts):
            for start, length in layout:
                for offset in range(start, start + length, chunk):
                    yield index, offset, min(chunk, start + length - offset)

    def _read(self, index: int, offset: int, length: int) -> memoryview:
        if self._before_read is not None:
            self._before_read(length)
        try:
            buffer = self._spare.pop()
        except IndexError:
            buffer = bytearray(self._chunk)
        view = memoryview(buffer)[:length]
        return view[: self._members[index].get().read_into(offset, view)]

    def release(self, chunk: bytes | memoryview) -> None:
        """The writer is done with ``chunk`` (written and hashed): its buffer is read into again."""
        if (
            isinstance(chunk, memoryview)
            and isinstance(chunk.obj, bytearray)
            and len(chunk.obj) == self._chunk
        ):
            self._spare.append(chunk.obj)

    def _fill(self) -> None:
        while len(self._queued) < self._depth:
            job = next(self._jobs, None)
            if job is None:
                return
            if self._members[job[0]].done:
                continue  # a member whose writer stopped early is not read any more
            self._queued.append((job[0], job[2], self._pool.submit(self._read, *job)))

    def member(self, index: int) -> Iterator[memoryview]:
        """Member ``index``'s chunks in order (its ranges' bytes back to back).  A short read
        ends the member early: the writer knows its size and says the file is short.  Taking
        it counts even if it is never iterated (an empty file)."""
        if index != self._next:
            raise ValueError(f"members are taken in order: {self._next} is next, not {index}")
        self._next += 1
        if index and not self._members[index - 1].done:  # its writer left chunks behind
            self._finish(index - 1)
        return self._chunks(index)

    def _chunks(self, index: int) -> Iterator[memoryview]:
        try:
            while True:
                self._fill()
                if not self._queued or self._queued[0][0] != index:
                    return
                _member, asked, future = self._queued.popleft()
                chunk = future.result()
                yield chunk
                if len(chunk) < asked:
                    return  # the file ends here: later chunks would land at the wrong place
        finally:
            self._finish(index)

    def _finish(self, index: int) -> None:
        self._members[index].done = True
        self._drop(index)
        self._members[index].close()

    def _drop(self, index: int) -> None:
        """Drop the reads still queued for ``index`` (its writer stopped early), waiting for
        those already running so that its reader is not closed under them."""
        keep: collections.deque[tuple[int, int, Future[memoryview]]] = collections.deque()
        for member, asked, future in self._queued:
            if member != index:
                keep.append((member, asked, future))
            elif not future.cancel():
                future.exception()
        self._queued = keep

    def close(self) -> None:
        """Wait for what is in flight and close every reader still open."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queued.clear()
        for member in self._members:
            member.close()
