"""The safety scan: every member is judged before a single byte is written.

A restore runs as root on a database host, so an archive is treated as hostile until read: a
crafted member could otherwise write ``/etc/cron.d/x`` (absolute path, ``..``), plant a symlink
or hard link that a later write or a later user follows out of DIR, or create device nodes.
:func:`scan` reads every header (random access: data is skipped, except the manifest's), refuses
the archive naming the first unsafe member, and returns the :class:`Plan` the writer follows.
:func:`check_directory` then makes sure DIR itself is fit (new or empty, or ``--force`` with
nothing in the way).  Only then is DIR created.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..archive.pax import CHECKSUM_KEY, MANIFEST_NAME
from ..archive.reader import ArchiveDamaged, ArchiveReader, ChecksumMismatch, checksum_record, describe_kind
from ..errors import UserError
from .verify import Expectation, from_manifest, records_in_manifest

_MAX_LINK_HOPS = 40  # the kernel's limit (MAXSYMLINKS)


class RestoreRefused(UserError):
    """The restore was refused before anything was written: DIR is not fit, or a member is unsafe."""

    exit_code = 7


class UnsafeMember(RestoreRefused):
    """A member would write outside DIR, or is a device node or FIFO."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One member as the writer will restore it."""

    info: tarfile.TarInfo
    name: str  # normalized: relative, no ``.`` or ``..`` components
    kind: str  # "file", "directory", "symlink", "hard link"
    selected: bool  # matched by --only (or no --only)
    link: str = ""  # a symlink's target as stored; a hard link's normalized target member
    sha256: str = ""  # the digest a file's data must have


@dataclasses.dataclass
class Plan:
    entries: list[Entry]
    manifest: dict[str, Any]

    @property
    def selected(self) -> list[Entry]:
        return [e for e in self.entries if e.selected]


def normalize(name: str, what: str) -> str:
    """``./a//b`` → ``a/b``; absolute paths and ``..`` components raise :class:`UnsafeMember`."""
    if name.startswith("/"):
        raise UnsafeMember(f"{what} has an absolute path; restore writes only inside DIR")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeMember(f"{what} has a '..' component, which could lead outside DIR")
    return "/".join(parts)


def selected_by(name: str, only: Sequence[str]) -> bool:
    return not only or any(fnmatch.fnmatchcase(name, pattern) for pattern in only)


def scan(
    reader: ArchiveReader, *, only: Sequence[str] = (), expected: Sequence[Expectation] | None = None
) -> Plan:
    """Judge every member of the archive; raise :class:`UnsafeMember`, :class:`ArchiveDamaged`
    (truncated, no checksum record, a record that disagrees with ``expected``) or return the plan.

    ``expected`` is the catalog's file list; without it the archive's manifest is the reference.
    """
    kinds: dict[str, str] = {}  # every path the archive creates, explicit or as a parent
    entries: list[Entry] = []
    manifest: dict[str, Any] | None = None
    for info in reader:
        entry = _judge(info, kinds, only)
        entries.append(entry)
        if entry.name == MANIFEST_NAME and entry.kind == "file":
            manifest = _read_manifest(reader, info, entry.sha256)
    if manifest is None:
        raise ArchiveDamaged(
            f"the archive {reader.label} has no manifest ({MANIFEST_NAME}): it is truncated or not "
            f"a splitmirror archive; `splitmirror verify --archive` says more, and plain `tar -xf` "
            f"extracts it anyway"
        )
    entries = _digests_from_manifest(entries, manifest, reader.label)
    _check_symlinks(entries)
    _check_hard_links(entries)
    _check_expected(entries, _reference(manifest, expected, reader.label), only)
    if not any(e.selected for e in entries):
        names = [e.name for e in entries if e.name != "."]
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise UserError(f"--only matches no member of the archive (it holds {shown})")
    return Plan(entries, manifest)


def _judge(info: tarfile.TarInfo, kinds: dict[str, str], only: Sequence[str]) -> Entry:
    """One member against the rules; ``kinds`` is the tree made by the members before it."""
    kind = describe_kind(info)
    if kind not in ("file", "directory", "symlink", "hard link"):
        raise UnsafeMember(
            f"member {info.name} is a {kind}; restore creates only files, directories and links"
        )
    name = normalize(info.name, f"member {info.name}")
    if not name:
        if kind == "directory":  # "./" as GNU tar writes it: DIR itself
            return Entry(info, ".", kind, selected=False)
        raise UnsafeMember(f"member {info.name!r} has no name")
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if kinds.setdefault(parent, "directory") != "directory":
            raise UnsafeMember(
                f"member {info.name} goes through {parent}, which the archive makes a {kinds[parent]}: "
                f"writing it would follow that {kinds[parent]}"
            )
    before = kinds.get(name)
    if before is not None and not (before == kind == "directory"):
        raise UnsafeMember(f"member {info.name} appears twice in the archive (as a {before} and a {kind})")
    kinds[name] = kind
    link, digest = "", ""
    if kind == "symlink":
        link = info.linkname
        if link.startswith("/"):
            raise UnsafeMember(f"symlink {info.name} points to the absolute path {link}, outside DIR")
    elif kind == "hard link":
        link = normalize(info.linkname, f"hard link {info.name} (to {info.linkname})")
        if kinds.get(link) != "file":
            raise UnsafeMember(
                f"hard link {info.name} points to {info.linkname}, which is not an earlier file in "
                f"the archive"
            )
    elif kind == "file":
        digest = checksum_record(info) or ""  # none: a stream archive's, from its manifest
        if not digest and name == MANIFEST_NAME:
            raise ArchiveDamaged(f"{MANIFEST_NAME} has no checksum record ({CHECKSUM_KEY})", info.name)
    return Entry(info, name, kind, selected_by(name, only), link, digest)


def _digests_from_manifest(entries: list[Entry], manifest: dict[str, Any], label: str) -> list[Entry]:
    """Each file member's digest: its header record or, in a stream archive (whose manifest
    says its members' records are there), the manifest's entry; a file with neither cannot be
    verified, so the archive is refused."""
    listed: dict[str, str] = {}
    if records_in_manifest(manifest):
        try:
            listed = {e.member: e.sha256 for e in from_manifest(manifest)}
        except ValueError as error:
            raise ArchiveDamaged(f"the manifest of {label} is invalid: {error}", MANIFEST_NAME) from None
    resolved = []
    for entry in entries:
        if entry.kind == "file" and not entry.sha256:
            digest = listed.get(entry.info.name) or listed.get(entry.name)
            if digest is None:
                raise ArchiveDamaged(
                    f"member {entry.info.name} has no checksum record ({CHECKSUM_KEY}) and the manifest "
                    "does not list it: it cannot be verified",
                    entry.info.name,
                )
            entry = dataclasses.replace(entry, sha256=digest)
        resolved.append(entry)
    return resolved


def _read_manifest(reader: ArchiveReader, info: tarfile.TarInfo, record: str) -> dict[str, Any]:
    data, digest = reader.read_small(info)
    if digest != record:
        raise ChecksumMismatch(f"{MANIFEST_NAME} does not match its checksum record", MANIFEST_NAME)
    try:
        manifest = json.loads(data or b"")
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        raise ArchiveDamaged(f"{MANIFEST_NAME} is not a JSON object", MANIFEST_NAME)
    return manifest


def _resolve_escapes(name: str, target: str, links: dict[str, str]) -> bool:
    """True when symlink ``name`` → ``target``, resolved as the kernel would inside DIR (through
    the archive's other symlinks), climbs above DIR, turns absolute or loops."""
    pending = [*name.split("/")[:-1], *target.split("/")]
    stack: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return True
            stack.pop()
            continue
        stack.append(part)
        through = links.get("/".join(stack))
        if through is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS or through.startswith("/"):
                return True
            stack.pop()
            pending[:0] = through.split("/")
    return False


def _check_symlinks(entries: list[Entry]) -> None:
    links = {e.name: e.link for e in entries if e.kind == "symlink"}
    for entry in entries:
        if entry.kind == "symlink" and _resolve_escapes(entry.name, entry.link, links):
            raise UnsafeMember(f"symlink {entry.info.name} points to {entry.link}, which leads outside DIR")


def _check_hard_links(entries: list[Entry]) -> None:
    chosen = {e.name for e in entries if e.selected}
    for entry in entries:
        if entry.kind == "hard link" and entry.selected and entry.link not in chosen:
            raise RestoreRefused(
                f"hard link {entry.name} needs {entry.link}, which --only leaves out; add it to --only"
            )


def _reference(
    manifest: dict[str, Any], expected: Sequence[Expectation] | None, label: str
) -> tuple[list[Expectation], str]:
    if expected is not None:
        return list(expected), "the catalog"
    try:
        return from_manifest(manifest), "the manifest"
    except ValueError as error:
        raise ArchiveDamaged(f"the manifest of {label} is invalid: {error}", MANIFEST_NAME) from None


def _check_expected(
    entries: list[Entry], reference: tuple[list[Expectation], str], only: Sequence[str]
) -> None:
    """Every file the reference lists (and --only selects) is present with the same checksum, so a
    restore never quietly lacks a database's WAL."""
    expected, source = reference
    files = {e.name: e for e in entries if e.kind == "file"}
    for item in expected:
        if not selected_by(item.member, only):
            continue
        entry = files.get(item.member)
        if entry is None:
            raise ArchiveDamaged(f"{item.member} is missing from the archive; {source} lists it", item.member)
        if (entry.sha256, entry.info.size) != (item.sha256, item.size):
            raise ChecksumMismatch(
                f"{item.member}: its checksum record or size disagrees with {source}; "
                f"`splitmirror verify` shows the details",
                item.member,
            )


def check_directory(directory: Path, plan: Plan, *, force: bool) -> None:
    """DIR must be new or empty; with ``force``, nothing in it may stand in a member's way (a
    symlink or file where a member needs a directory, a directory where it needs a file)."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise RestoreRefused(
            f"{directory} exists and is not a directory; restore into a new or empty directory"
        )
    if not force:
        with os.scandir(directory) as listing:
            if next(listing, None) is not None:
                raise RestoreRefused(
                    f"{directory} is not empty; restore into a new or empty directory, or pass --force "
                    f"to write the archive's files over what is there"
                )
        return
    for entry in plan.selected:
        parts = entry.name.split("/")
        for depth in range(1, len(parts) + 1):
            path = directory.joinpath(*parts[:depth])
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                break
            needs_directory = depth < len(parts) or entry.kind == "directory"
            if needs_directory != stat.S_ISDIR(mode):
                what = "directory" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode) else "file"
                raise RestoreRefused(
                    f"{path} is a {what} in the way of member {entry.name}; move it away and retry"
                )
