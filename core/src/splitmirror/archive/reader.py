"""Reading an archive back, front to back, with every way it can end told apart.

``tarfile`` alone cannot say *how* an archive ended: a missing end-of-archive marker, a header
cut in half and a damaged header all just end its iteration quietly, which would make a truncated
archive look like a short good one.  :class:`ArchiveReader` notes the header error ``tarfile``
swallowed (through a :class:`tarfile.TarInfo` subclass) and turns each ending into a one-sentence
error that names the member where it happened:

* the file is not there or not readable: :class:`ArchiveNotFound` (exit 5);
* it is not a tar archive at all: :class:`NotATarArchive`;
* it stops inside a member or a header, or before the end-of-archive marker: :class:`ArchiveTruncated`;
* a header after the first is garbage: :class:`ArchiveDamaged`.

Data is read in chunks (:data:`CHUNK`), so memory stays bounded whatever the archive holds.
Stream mode (``r|*``) reads anything that can only be read once (standard input, a tape, a
pipe, a program's output: :mod:`.read_command`).  A regular file is opened in random-access
mode instead: read front to back it is the same single pass, at three times the speed
(``tarfile``'s stream layer copies every buffer twice), and it can skip data it is not asked
for (``restore --only``, the safety scan).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Self, cast

from ..errors import UserError
from .pax import CHECKSUM_KEY
from .read_command import ReadCommand

CHUNK = 1 << 20
#: Only the manifest is held in memory whole; one this large is not ours.
MANIFEST_LIMIT = 256 << 20
STDIN = "-"
_DECODE_ERRORS = (tarfile.TarError, zlib.error, lzma.LZMAError, EOFError)


class ArchiveNotFound(UserError):
    """The archive file does not exist or cannot be opened."""

    exit_code = 5


class ArchiveDamaged(UserError):
    """The archive cannot be trusted: damaged, truncated, a checksum differs.  ``member`` names
    where it went wrong, when known."""

    exit_code = 6

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


class NotATarArchive(ArchiveDamaged):
    """The file does not start with a tar header."""


class ArchiveTruncated(ArchiveDamaged):
    """The archive stops before its end-of-archive marker."""


class ChecksumMismatch(ArchiveDamaged):
    """A member's data does not hash to its checksum record."""


class _Info(tarfile.TarInfo):
    """Remembers the header error that ``tarfile.TarFile.next`` turns into a quiet end."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as error:
            if isinstance(tar, _TarFile) and tar.header_error is None:
                # EOFHeaderError & co. are not in typeshed: tell them apart by name.
                tar.header_error = type(error).__name__
            raise


class _TarFile(tarfile.TarFile):
    tarinfo = _Info
    header_error: str | None = None
    members: list[tarfile.TarInfo]  # set by TarFile.__init__; missing from typeshed


def checksum_record(info: tarfile.TarInfo) -> str | None:
    """The SHA-256 the writer recorded for this member, or None when it carries none."""
    return info.pax_headers.get(CHECKSUM_KEY)


def describe_kind(info: tarfile.TarInfo) -> str:
    """What a member is, in words, for messages."""
    if info.isreg():
        return "file"
    if info.isdir():
        return "directory"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hard link"
    if info.ischr() or info.isblk():
        return "device node"
    if info.isfifo():
        return "FIFO"
    return f"member of tar type {info.type!r}"


class ArchiveReader:
    """One archive, read once: ``with ArchiveReader(path) as reader: for info in reader: ...``.

    ``source`` is a path, ``"-"`` for standard input, or a :class:`.ReadCommand` (its failure,
    once its output has ended, is raised in place of what the reader found).  ``stream``
    (default: anything but a regular file) picks ``tarfile``'s stream mode.  Iteration raises
    :class:`ArchiveTruncated` or :class:`ArchiveDamaged` when the archive does not end with its
    end-of-archive marker; members read so far stay valid.
    """

    def __init__(self, source: str | Path | ReadCommand, *, stream: bool | None = None) -> None:
        self.command = source if isinstance(source, ReadCommand) else None
        self.source = str(source)
        if self.command is not None:
            stream = True
        elif stream is None:
            stream = not is_regular_file(self.source)
        self.stream = stream or self.source == STDIN
        self.label = "standard input" if self.source == STDIN else self.source
        self.last: str | None = None  # the last member whose header was read whole
        self._file: IO[bytes] | None = None
        self._tar: _TarFile | None = None

    def __enter__(self) -> Self:
        if self.command is not None:
            try:
                self._file = cast(IO[bytes], self.command.open())
            except OSError as error:
                raise ArchiveNotFound(
                    f"the read_command {self.command.program} could not be started "
                    f"({error.strerror or error}); install it, or pass your copy of the archive with "
                    "--archive PATH"
                ) from None
        elif self.source == STDIN:
            self._file = sys.stdin.buffer
        else:
            try:
                self._file = open(self.source, "rb")  # closed in __exit__
            except FileNotFoundError:
                raise ArchiveNotFound(f"the archive {self.label} does not exist") from None
            except OSError as error:
                why = error.strerror
                raise ArchiveNotFound(f"the archive {self.label} cannot be opened ({why})") from None
        self._check_length()
        try:
            if self.stream:
                self._tar = _TarFile.open(fileobj=self._file, mode="r|*", bufsize=CHUNK)
            else:
                self._tar = _TarFile.open(fileobj=self._file, mode="r:*")
        except (*_DECODE_ERRORS, OSError) as error:
            self._close_file()
            raise self._command_said(failed=True) or self._open_failure(str(error)) from None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        self._close_file()
        said = self._command_said(failed=error is not None)
        if said is not None and (error is None or isinstance(error, ArchiveDamaged)):
            raise said from None

    def _command_said(self, *, failed: bool) -> ArchiveDamaged | ArchiveNotFound | None:
        """A read command's failure (see :meth:`.ReadCommand.close`), once it is done with."""
        said = self.command.close(failed) if self.command is not None else None
        if said is None:
            return None
        sentence, given = said
        if not given:
            return ArchiveNotFound(sentence)
        return ArchiveDamaged(f"{sentence}; what it gave of the archive cannot be trusted")

    def _check_length(self) -> None:
        """A file shorter than one tar block is no archive at all (not even a truncated one)."""
        assert self._file is not None
        if self._file is sys.stdin.buffer or self.command is not None:
            return
        size = os.fstat(self._file.fileno()).st_size
        if 0 < size < tarfile.BLOCKSIZE:
            self._close_file()
            raise NotATarArchive(
                f"{self.label} is only {size} bytes long, too short for a tar archive, so it is not "
                f"a splitmirror archive"
            )

    def _open_failure(self, message: str) -> ArchiveDamaged:
        """Why ``tarfile`` could not read even the first member, as one sentence."""
        if "empty file" in message:
            return NotATarArchive(f"{self.label} is empty, so it is not a splitmirror archive")
        if any(cut in message for cut in ("empty header", "truncated header", "unexpected end of data")):
            return ArchiveTruncated(f"the archive {self.label} is truncated: it ends inside its first member")
        return NotATarArchive(f"{self.label} is not a tar archive, so it is not a splitmirror archive")

    def _close_file(self) -> None:
        if self._file is not None and self._file is not sys.stdin.buffer and self.command is None:
            self._file.close()
        self._file = None

    @property
    def tar(self) -> _TarFile:
        if self._tar is None:
            raise RuntimeError("ArchiveReader used outside its with block")
        return self._tar

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        tar = self.tar
        while True:
            tar.header_error = None
            try:
                info = tar.next()
            except (*_DECODE_ERRORS, OSError) as error:
                raise self._ending(error) from None
            if info is None:
                if tar.header_error not in (None, "EOFHeaderError"):
                    raise self._ending(None)
                return
            if self.stream:
                tar.members.clear()  # stream mode keeps every header otherwise: memory grows
            self.last = info.name
            yield info

    def _ending(self, error: BaseException | None) -> ArchiveDamaged:
        """The sentence for an archive that stopped early; ``error`` is what ``next`` raised."""
        where = f"after member {self.last}" if self.last else "at its start"
        if isinstance(error, OSError):
            return ArchiveDamaged(f"reading the archive {self.label} failed {where} ({error})", self.last)
        if error is not None and "unexpected end of data" in str(error) and self.last:
            return ArchiveTruncated(
                f"the archive {self.label} is truncated: it ends inside member {self.last}", self.last
            )
        if self.tar.header_error in ("EmptyHeaderError", "TruncatedHeaderError"):
            return ArchiveTruncated(
                f"the archive {self.label} is truncated: it ends {where}, before its end-of-archive marker",
                self.last,
            )
        return ArchiveDamaged(f"the archive {self.label} has a damaged header {where}", self.last)

    def chunks(self, info: tarfile.TarInfo) -> Iterator[bytes]:
        """The data of a regular member, in chunks of at most :data:`CHUNK` bytes."""
        source = self.tar.extractfile(info)
        if source is None:
            return
        done = 0
        try:
            while done < info.size:
                chunk = source.read(min(CHUNK, info.size - done))
                if not chunk:
                    raise tarfile.ReadError("unexpected end of data")
                done += len(chunk)
                yield chunk
        except (*_DECODE_ERRORS, OSError) as error:
            if isinstance(error, OSError):
                message = f"reading the archive {self.label} failed inside member {info.name} ({error})"
                raise ArchiveDamaged(message, info.name) from None
            raise ArchiveTruncated(
                f"the archive {self.label} is truncated: it ends inside member {info.name}", info.name
            ) from None

    def digest(self, info: tarfile.TarInfo) -> str:
        """SHA-256 of a regular member's data, hashed chunk by chunk."""
        sha = hashlib.sha256()
        for chunk in self.chunks(info):
            sha.update(chunk)
        return sha.hexdigest()

    def read_small(self, info: tarfile.TarInfo, limit: int = MANIFEST_LIMIT) -> tuple[bytes | None, str]:
        """The data of a small member (the manifest) and its SHA-256; None as data when it is
        larger than ``limit`` (it is still hashed, never held)."""
        if info.size > limit:
            return None, self.digest(info)
        data = b"".join(self.chunks(info))
        return data, hashlib.sha256(data).hexdigest()


def is_regular_file(source: str | Path) -> bool:
    """True for a regular file: it can be read twice, and skipped through."""
    return str(source) != STDIN and os.path.isfile(source)
