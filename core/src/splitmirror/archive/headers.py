"""Tar headers for the archive's everyday member, built directly.

Almost every member of an archive is the same shape: a regular file with an ASCII name of at
most 100 bytes, an owner, a mode, a size and an mtime that fit the ustar fields, and at most the
one checksum record in a pax extended header (docs/archive.md).  ``tarfile.TarInfo.tobuf`` builds
such a header in about 65 µs (a dictionary of fields, encodings tried, two headers packed and
summed), a third of what a 16 KiB member costs the writer, so for that shape :func:`member_header`
formats the blocks itself.  It is byte for byte what ``tarfile`` writes for ``PAX_FORMAT``
(``tests/test_headers.py`` holds it to that over names, sizes and owners at each field's edge),
and it returns None for anything else — a long or non-ASCII name, a value that needs a pax
record of its own, a sparse member — which the writer then hands to ``tarfile``.
"""

from __future__ import annotations

import tarfile

BLOCK = tarfile.BLOCKSIZE
_NAME = 100
#: The largest value an octal field of ``digits`` bytes holds (one byte is the NUL).
_MAX_ID = 8**7  # uid, gid: 8-byte fields
_MAX_NUMBER = 8**11  # size, mtime: 12-byte fields
#: Everything after the type flag: linkname, magic and version, uname, gname, devmajor,
#: devminor, prefix, then padding to the block (all empty but the magic).
_AFTER_TYPE = bytes(100) + tarfile.POSIX_MAGIC + bytes(32 + 32 + 8 + 8 + 155 + 12)
_CHECKSUM_BLANK = 8 * ord(" ")  # the checksum field counts as spaces while it is summed


def _ustar(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes) -> bytes:
    """One ustar header block, as ``tarfile``'s ``_create_header`` writes it."""
    head = name.ljust(_NAME, b"\0") + b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime)
    tail = kind + _AFTER_TYPE
    checksum = sum(head) + _CHECKSUM_BLANK + sum(tail)
    return head + b"%06o\0 " % checksum + tail


def _pax_record(keyword: bytes, value: bytes) -> bytes:
    """``"<length> <keyword>=<value>\\n"``, the length counting its own digits."""
    rest = len(keyword) + len(value) + 3  # the space, "=" and newline
    length = rest + 1
    while len(str(length)) + rest != length:
        length = len(str(length)) + rest
    return b"%d %s=%s\n" % (length, keyword, value)


def member_header(
    name: str, size: int, mode: int, mtime: int, uid: int, gid: int, records: dict[str, str]
) -> bytes | None:
    """The header blocks of a regular-file member (a pax extended header with ``records``, when
    there are any, then the ustar block), or None when the member is not the everyday shape."""
    if not (name.isascii() and len(name) <= _NAME):
        return None
    if not (
        0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID and 0 <= size < _MAX_NUMBER and 0 <= mtime < _MAX_NUMBER
    ):
        return None
    if not all(key.isascii() and value.isascii() for key, value in records.items()):
        return None
    ustar = _ustar(name.encode("ascii"), mode & 0o7777, uid, gid, size, mtime, tarfile.REGTYPE)
    if not records:
        return ustar
    payload = b"".join(_pax_record(k.encode("ascii"), v.encode("ascii")) for k, v in records.items())
    extended = _ustar(b"././@PaxHeader", 0, 0, 0, len(payload), 0, tarfile.XHDTYPE)
    return extended + payload + bytes(-len(payload) % BLOCK) + ustar
