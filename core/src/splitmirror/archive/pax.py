"""Writing the archive: POSIX pax tar, a SHA-256 pax record per member, the manifest last.

Format (docs/archive.md):

* every member is a pax member (``tarfile.PAX_FORMAT``) whose extended header carries
  ``SCHILY.xattr.user.splitmirror.sha256 = <hex digest of the member's data>``.  GNU tar and
  bsdtar extract it silently (with ``--xattrs`` it becomes the file's ``user.splitmirror.sha256``
  attribute); a made-up keyword would make GNU tar warn on every member;
* members appear in the order they were added: the engine's logical order, then the window's
  redo/WAL and metadata;
* a file with holes whose data ranges the mirror knows is a GNU sparse 1.0 member
  (:mod:`.sparse`): only its data is stored, and its checksum is still that of its content;
* the last member is ``.splitmirror-manifest.json`` (:data:`MANIFEST_NAME`);
* the stream ends with two zero blocks and is padded to a whole record by the target.

Every byte is read and hashed once.  On a seekable target the header goes out with a placeholder
digest that is patched once the data has streamed.  A stream (tape, stdout) cannot take back a
header already sent, so there a member's header carries no checksum record and its digest is in
the manifest, which comes last and carries its own record; the manifest says which of the two an
archive does (``"member_checksums"``: ``"header"`` or ``"manifest"``).  Archives written before
format 2 always have the header record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from ..errors import SplitmirrorError
from ..progress import Progress, no_progress
from ..targets.base import Target
from . import sparse
from .headers import member_header
from .sparse import Segment

CHECKSUM_KEY = "SCHILY.xattr.user.splitmirror.sha256"
MANIFEST_NAME = ".splitmirror-manifest.json"
BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20
_PLACEHOLDER = "0" * 64
_ZEROS = memoryview(bytes(_CHUNK))


class ArchiveError(SplitmirrorError):
    """The archive could not be written as promised (a file changed size on the split mirror)."""


@dataclasses.dataclass(frozen=True)
class MemberRecord:
    """Where a member landed: what the catalog stores and ``show`` prints."""

    name: str
    size: int
    sha256: str
    offset: int  # archive offset of the member's first header block
    data_offset: int  # archive offset of its first data byte


def _pad(size: int) -> bytes:
    return bytes(-size % BLOCK)


class ArchiveWriter:
    """Writes members to a :class:`~splitmirror.targets.base.Target` in the order given."""

    def __init__(self, target: Target, *, uid: int = 0, gid: int = 0) -> None:
        self.target = target
        self.members: list[MemberRecord] = []
        self._uid, self._gid = uid, gid
        self._closed = False
        #: One hashing thread for the whole archive: each chunk is hashed there while the next
        #: is written (hashlib and file I/O both release the GIL).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")

    def _header(
        self,
        name: str,
        size: int,
        mode: int,
        mtime: float,
        digest: str | None,
        owner: tuple[int, int] | None = None,
        segments: list[Segment] | None = None,
    ) -> bytes:
        """The member's header blocks; for a sparse member, its map follows them.  The everyday
        member's are built directly (:mod:`.headers`), byte for byte what ``tarfile`` builds."""
        uid, gid = owner if owner is not None else (self._uid, self._gid)
        record = {CHECKSUM_KEY: digest} if digest is not None else {}
        if segments is None:
            built = member_header(name, size, mode, int(mtime), uid, gid, record)
            if built is not None:
                return built
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode & 0o7777, int(mtime)
        info.uid, info.gid = uid, gid
        info.pax_headers = record
        if segments is not None:
            info.size = sparse.stored_size(segments, size)
            info.pax_headers = {**sparse.pax_headers(name, size), **record}
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        return header + (sparse.map_block(segments, size) if segments is not None else b"")

    @property
    def member_checksums(self) -> str:
        """Where this archive's file members carry their digests: "header" or "manifest"."""
        return "header" if self.target.seekable else "manifest"

    def add_file(
        self,
        name: str,
        source: BinaryIO,
        size: int,
        *,
        mode: int = 0o600,
        mtime: float = 0,
        owner: tuple[int, int] | None = None,
        progress: Progress = no_progress,
        data: Iterable[Segment] | None = None,
    ) -> MemberRecord:
        """Stream ``size`` bytes of ``source`` as member ``name``; ``owner`` is (uid, gid),
        by default the writer's.

        ``data`` lists the ``(offset, length)`` ranges of the file that hold data, when it is
        known to have holes: only those ranges are read and stored, as a sparse member
        (:mod:`.sparse`), and ``source`` must be seekable.  Holes read as zeros either way."""
        segments = sparse.data_segments(data, size)
        chunks = _read_ranges(source, segments if segments is not None else [(0, size)])
        return self.add_chunks(
            name, chunks, size, mode=mode, mtime=mtime, owner=owner, progress=progress, segments=segments
        )

    def add_chunks(
        self,
        name: str,
        chunks: Iterable[bytes | memoryview],
        size: int,
        *,
        mode: int = 0o600,
        mtime: float = 0,
        owner: tuple[int, int] | None = None,
        progress: Progress = no_progress,
        segments: list[Segment] | None = None,
        release: Callable[[bytes | memoryview], None] | None = None,
    ) -> MemberRecord:
        """A member whose data arrives as ``chunks``: the bytes of ``segments`` (already
        :func:`.sparse.data_segments`; None for the whole file) back to back, in order.

        The reading is the caller's (:mod:`.readahead` reads ahead across members); the
        writer hashes and writes each chunk as it comes, once.  ``release`` gets each chunk
        back once it is written and hashed, so that its buffer can be read into again."""
        layout = segments if segments is not None else [(0, size)]
        offset = self.target.tell()
        digest_in_header = self.target.seekable
        header = self._header(
            name, size, mode, mtime, _PLACEHOLDER if digest_in_header else None, owner, segments
        )
        self.target.write(header)
        digest = self._stream(name, iter(chunks), size, layout, progress, release)
        if digest_in_header:
            at = header.index(f"{CHECKSUM_KEY}={_PLACEHOLDER}".encode()) + len(CHECKSUM_KEY) + 1
            self.target.patch(offset + at, digest.encode())
        stored = sum(length for _start, length in layout)
        self.target.write(_pad(stored))
        return self._record(name, size, digest, offset, offset + len(header))

    def add_bytes(self, name: str, data: bytes, *, mode: int = 0o600, mtime: float = 0) -> MemberRecord:
        """A member produced in memory (labels, the manifest)."""
        offset = self.target.tell()
        digest = hashlib.sha256(data).hexdigest()
        header = self._header(name, len(data), mode, mtime, digest)
        self.target.write(header + data + _pad(len(data)))
        return self._record(name, len(data), digest, offset, offset + len(header))

    def add_manifest(self, manifest: Mapping[str, Any], *, mtime: float = 0) -> MemberRecord:
        data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
        return self.add_bytes(MANIFEST_NAME, data, mode=0o600, mtime=mtime)

    def close(self) -> None:
        """End-of-archive marker (two zero blocks), then the target pads and fsyncs."""
        if not self._closed:
            self.target.write(bytes(2 * BLOCK))
            self.target.commit()
            self._closed = True
            self._pool.shutdown()

    def _record(self, name: str, size: int, digest: str, offset: int, data_offset: int) -> MemberRecord:
        record = MemberRecord(name, size, digest, offset, data_offset)
        self.members.append(record)
        return record

    def _stream(
        self,
        name: str,
        chunks: Iterator[bytes | memoryview],
        size: int,
        layout: list[Segment],
        progress: Progress,
        release: Callable[[bytes | memoryview], None] | None = None,
    ) -> str:
        """Write ``chunks`` (the ``layout`` ranges' bytes, back to back) to the target and
        return the SHA-256 of the whole content, the gaps between ranges hashed as zeros."""
        done = 0
        hasher = _Hasher(self._pool if size > _CHUNK else None, release)
        for start, length in layout:
            hasher.zeros(start - done)
            done = start
            while done < start + length:
                chunk = next(chunks, None)
                if chunk is None:
                    raise ArchiveError(
                        f"{name} is shorter on the split mirror than its recorded size "
                        f"({done} of {size} bytes)"
                    )
                if len(chunk) > start + length - done:
                    raise ArchiveError(f"{name} grew on the split mirror while it was archived")
                self.target.write(chunk)
                hasher.update(chunk)  # after the write: a hashed chunk is one the writer is done with
                done += len(chunk)
                progress(done, size)
        hasher.zeros(size - done)
        progress(size, size)
        return hasher.hexdigest()


def _read_ranges(source: BinaryIO, layout: list[Segment]) -> Iterator[bytes]:
    """The bytes of ``layout``'s ranges of ``source``, in chunks; a range the source ends
    inside yields what there is and stops (the writer says the file is short)."""
    position = 0
    for start, length in layout:
        if start != position:
            source.seek(start)
        position = start
        while position < start + length:
            chunk = source.read(min(_CHUNK, start + length - position))
            if not chunk:
                return
            position += len(chunk)
            yield chunk


class _Hasher:
    """SHA-256 fed chunk by chunk, each hashed on ``pool``'s thread while the caller writes
    the next; inline without a pool (a small file: nothing to overlap).  ``release`` gets each
    chunk back once its hash is done (the caller has written it before :meth:`update`)."""

    def __init__(
        self, pool: ThreadPoolExecutor | None, release: Callable[[bytes | memoryview], None] | None = None
    ) -> None:
        self._digest = hashlib.sha256()
        self._pool = pool
        self._release = release
        self._pending: Future[None] | None = None
        self._lent: bytes | memoryview | None = None  # the chunk being hashed, to hand back

    def update(self, chunk: bytes | memoryview, *, lent: bool = True) -> None:
        """Hash ``chunk``; ``lent``: hand it back to ``release`` once hashed."""
        self._settle()
        if self._pool is None:
            self._digest.update(chunk)
            if lent and self._release is not None:
                self._release(chunk)
            return
        self._pending = self._pool.submit(self._digest.update, chunk)
        self._lent = chunk if lent else None

    def _settle(self) -> None:
        """Wait for the chunk being hashed, and hand it back."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if self._lent is not None and self._release is not None:
            self._release(self._lent)
        self._lent = None

    def zeros(self, count: int) -> None:
        """A hole of ``count`` bytes."""
        while count > 0:
            step = min(count, _CHUNK)
            self.update(_ZEROS[:step], lent=False)
            count -= step

    def hexdigest(self) -> str:
        self._settle()
        return self._digest.hexdigest()
