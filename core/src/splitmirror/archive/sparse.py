"""Sparse members: GNU tar's sparse format 1.0 in pax headers, so holes cost nothing.

A file with holes (or preallocated, never-written extents) is stored as its data segments only.
The member's pax header says so, and GNU tar, bsdtar and Python's ``tarfile`` all read it::

    GNU.sparse.major=1  GNU.sparse.minor=0
    GNU.sparse.name=<the real name>  GNU.sparse.realsize=<the file's size>
    path=<dir>/GNUSparseFile.0/<base>          (what a reader without sparse support extracts)

The member's data starts with the map in decimal text, one number per line — the number of
segments, then each segment's offset and length — padded to a 512-byte block, followed by the
segments' bytes back to back.  A file that ends in a hole gets a last ``(size, 0)`` segment, as
GNU tar writes it, so readers know the real end without the header.

The checksum record stays the SHA-256 of the file's whole content, holes read as zeros: what
``sha256sum`` says of the extracted file.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable

Segment = tuple[int, int]  # (offset, length) of bytes that hold data


def data_segments(ranges: Iterable[Segment] | None, size: int) -> list[Segment] | None:
    """``ranges`` widened to whole 512-byte blocks, clipped to ``[0, size)``, sorted and
    merged; None when they leave no hole (a plain member is then smaller and simpler).

    GNU tar reads a segment's data in whole blocks: a segment that ends inside a block and is
    followed by another makes it lose its place ("Skipping to next header")."""
    if ranges is None:
        return None
    merged: list[Segment] = []
    block = tarfile.BLOCKSIZE
    for offset, length in sorted(ranges):
        if length <= 0:
            continue
        start = max(offset - offset % block, 0)
        stop = min(-(-(offset + length) // block) * block, size)
        if stop <= start:
            continue
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[0] + last[1], stop) - last[0])
        else:
            merged.append((start, stop - start))
    if merged == [(0, size)] or (size == 0 and not merged):
        return None
    return merged


def map_block(segments: list[Segment], size: int) -> bytes:
    """The sparse map that opens the member's data, padded to whole 512-byte blocks."""
    entries = list(segments)
    if not entries or entries[-1][0] + entries[-1][1] < size:
        entries.append((size, 0))
    text = f"{len(entries)}\n" + "".join(f"{offset}\n{length}\n" for offset, length in entries)
    data = text.encode("ascii")
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


def pax_headers(name: str, size: int) -> dict[str, str]:
    """The extended-header records of a sparse member named ``name`` of ``size`` bytes.

    ``path`` comes first so that ``tarfile`` does not add its own after ``GNU.sparse.name``
    (readers apply records in order, and the real name must win)."""
    folder, base = posixpath.split(name)
    return {
        "path": posixpath.join(folder, "GNUSparseFile.0", base),
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(size),
    }


def stored_size(segments: list[Segment], size: int) -> int:
    """The member's data size in the archive: the map, then the segments."""
    return len(map_block(segments, size)) + sum(length for _offset, length in segments)
