"""Writing the archive: POSIX pax tar, a SHA-256 pax record per member, the manifest last.

Format (docs/archive.md):

* every member is a pax member (``tarfile.PAX_FORMAT``) whose extended header carries
  ``SCHILY.xattr.user.splitmirror.sha256 = <hex digest of the member's data>``.  GNU tar and
  bsdtar extract it silently (with ``--xattrs`` it becomes the file's ``user.splitmirror.sha256``
  attribute); a made-up keyword would make GNU tar warn on every member;
* members appear in the order they were added: the engine's logical order, then the window's
  redo/WAL and metadata;
* the last member is ``.splitmirror-manifest.json`` (:data:`MANIFEST_NAME`);
* the stream ends with two zero blocks and is padded to a whole record by the target.

On a seekable target each file is read once: the header goes out with a placeholder digest that
is patched once the data has streamed.  Elsewhere (tape, stdout) the file is hashed first and
hashed again while streaming; a difference means the mirror changed under us, which is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from ..errors import SplitmirrorError
from ..progress import Progress, no_progress
from ..targets.base import Target

CHECKSUM_KEY = "SCHILY.xattr.user.splitmirror.sha256"
MANIFEST_NAME = ".splitmirror-manifest.json"
BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20
_PLACEHOLDER = "0" * 64


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

    def _header(
        self, name: str, size: int, mode: int, mtime: float, digest: str, owner: tuple[int, int] | None = None
    ) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode & 0o7777, int(mtime)
        info.uid, info.gid = owner if owner is not None else (self._uid, self._gid)
        info.pax_headers = {CHECKSUM_KEY: digest}
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

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
    ) -> MemberRecord:
        """Stream ``size`` bytes of ``source`` as member ``name``; ``owner`` is (uid, gid),
        by default the writer's."""
        offset = self.target.tell()
        if self.target.seekable:
            header = self._header(name, size, mode, mtime, _PLACEHOLDER, owner)
            self.target.write(header)
            digest = self._stream(name, source, size, progress)
            at = header.index(f"{CHECKSUM_KEY}={_PLACEHOLDER}".encode()) + len(CHECKSUM_KEY) + 1
            self.target.patch(offset + at, digest.encode())
        else:
            expected = self._hash(name, source, size)
            source.seek(0)
            header = self._header(name, size, mode, mtime, expected, owner)
            self.target.write(header)
            digest = self._stream(name, source, size, progress)
            if digest != expected:
                raise ArchiveError(f"{name} changed on the split mirror while it was archived")
        self.target.write(_pad(size))
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

    def _record(self, name: str, size: int, digest: str, offset: int, data_offset: int) -> MemberRecord:
        record = MemberRecord(name, size, digest, offset, data_offset)
        self.members.append(record)
        return record

    def _stream(self, name: str, source: BinaryIO, size: int, progress: Progress) -> str:
        """Copy ``size`` bytes to the target, hashing each chunk in a helper thread while the
        next is read and this one written (hashlib and file I/O both release the GIL)."""
        digest = hashlib.sha256()
        if size <= _CHUNK:  # one chunk: nothing to overlap, and no thread to start
            chunk = source.read(size)
            if len(chunk) != size:
                raise ArchiveError(
                    f"{name} is shorter on the split mirror than its recorded size "
                    f"({len(chunk)} of {size} bytes)"
                )
            digest.update(chunk)
            self.target.write(chunk)
            progress(size, size)
            return digest.hexdigest()
        hashing: Future[None] | None = None
        done = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
            while done < size:
                chunk = source.read(min(_CHUNK, size - done))
                if not chunk:
                    raise ArchiveError(
                        f"{name} is shorter on the split mirror than its recorded size "
                        f"({done} of {size} bytes)"
                    )
                if hashing is not None:
                    hashing.result()
                hashing = hasher.submit(digest.update, chunk)
                self.target.write(chunk)
                done += len(chunk)
                progress(done, size)
            if hashing is not None:
                hashing.result()
        return digest.hexdigest()

    @staticmethod
    def _hash(name: str, source: BinaryIO, size: int) -> str:
        digest = hashlib.sha256()
        remaining = size
        while remaining:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise ArchiveError(f"{name} is shorter on the split mirror than its recorded size")
            digest.update(chunk)
            remaining -= len(chunk)
        return digest.hexdigest()
