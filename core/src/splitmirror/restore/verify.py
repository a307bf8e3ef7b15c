"""``splitmirror verify``: read an archive once and report every way it differs from what was
written.

Three witnesses say what each member should be: its own checksum record (in its header), the
manifest (the archive's last member) and, when the session is in the catalog, the catalog's file
list.  A stream archive's file members have no record of their own (docs/archive.md): the
manifest, which has one, says so, and is then their first witness.  The data itself is the fact
they are checked against: a flipped byte disagrees with all three; an edited catalog row disagrees
only with the data.  Every problem names its member, and nothing stops at the first one, so a DBA
sees the whole damage at once.
"""

from __future__ import annotations

import dataclasses
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..archive.pax import CHECKSUM_KEY, MANIFEST_NAME
from ..archive.read_command import ReadCommand
from ..archive.reader import ArchiveDamaged, ArchiveReader, NotATarArchive, checksum_record, describe_kind
from ..catalog.base import FileRecord


@dataclasses.dataclass(frozen=True)
class Problem:
    """One mismatch: ``kind`` for machines, ``message`` (a sentence naming the member) for people."""

    kind: str  # checksum-mismatch, no-checksum, size-differs, missing, unexpected, not-a-file,
    # duplicate, manifest-missing, manifest-invalid, manifest-differs, order-differs, truncated, damaged
    member: str | None
    message: str


@dataclasses.dataclass(frozen=True)
class SeenMember:
    """What the archive actually holds for one member."""

    name: str
    kind: str
    size: int
    record: str | None  # the checksum record
    sha256: str | None  # the data's digest (regular members only)


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What a witness (the manifest, the catalog) says one member is."""

    member: str
    size: int
    sha256: str


@dataclasses.dataclass
class VerifyReport:
    archive: str
    against: str  # "catalog" or "manifest"
    session_id: int | None
    members: list[SeenMember]
    problems: list[Problem]
    manifest: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bytes(self) -> int:
        return sum(m.size for m in self.members)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "archive": self.archive,
            "against": self.against,
            "session": self.session_id,
            "members": [dataclasses.asdict(m) for m in self.members],
            "bytes": self.bytes,
            "problems": [dataclasses.asdict(p) for p in self.problems],
        }


def from_catalog(files: Sequence[FileRecord]) -> list[Expectation]:
    return [Expectation(f.member, f.size, f.sha256) for f in files]


def from_manifest(manifest: Mapping[str, Any]) -> list[Expectation]:
    """The manifest's file list; ValueError when it is not the shape the writer produces."""
    files = manifest.get("files")
    if not isinstance(files, list):
        raise ValueError("it has no file list")
    try:
        return [Expectation(str(f["member"]), int(f["size"]), str(f["sha256"])) for f in files]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"a file entry is malformed ({error})") from None


def verify_archive(
    source: str | Path | ReadCommand,
    catalog: Sequence[FileRecord] | None = None,
    *,
    session_id: int | None = None,
) -> VerifyReport:
    """Read ``source`` once (a path, ``"-"``, or a program's output) and compare it with
    ``catalog`` (the session's files, the manifest's row included) or, without one, with its
    own manifest.

    Raises :class:`~splitmirror.archive.reader.ArchiveNotFound` and
    :class:`~splitmirror.archive.reader.NotATarArchive`; every other finding is in the report.
    """
    seen: list[SeenMember] = []
    problems: list[Problem] = []
    manifest_data: bytes | None = None
    cut: ArchiveDamaged | None = None
    reader = ArchiveReader(source)
    with reader:
        try:
            for info in reader:
                member, data = _read_member(reader, info)
                seen.append(member)
                if data is not None:
                    manifest_data = data
        except NotATarArchive:
            raise
        except ArchiveDamaged as error:
            cut = error
            kind = "truncated" if "truncated" in str(error) else "damaged"
            problems.append(Problem(kind, error.member, str(error)))
    manifest = _parse_manifest(manifest_data, seen, cut, problems)
    listed = _manifest_list(manifest, problems)
    expected = from_catalog(catalog) if catalog is not None else None
    problems += _compare(seen, listed, expected, cut, records_in_manifest(manifest))
    against = "catalog" if catalog is not None else "manifest"
    return VerifyReport(reader.label, against, session_id, seen, problems, manifest)


def _read_member(reader: ArchiveReader, info: tarfile.TarInfo) -> tuple[SeenMember, bytes | None]:
    """Hash a member's data; keep it only for the manifest."""
    kind, record = describe_kind(info), checksum_record(info)
    if not info.isreg():
        return SeenMember(info.name, kind, info.size, record, None), None
    if info.name == MANIFEST_NAME:
        data, digest = reader.read_small(info)
        return SeenMember(info.name, kind, info.size, record, digest), data if data is not None else b""
    return SeenMember(info.name, kind, info.size, record, reader.digest(info)), None


def _parse_manifest(
    data: bytes | None, seen: list[SeenMember], cut: ArchiveDamaged | None, problems: list[Problem]
) -> dict[str, Any] | None:
    if not any(m.name == MANIFEST_NAME for m in seen):
        if cut is not None and cut.member == MANIFEST_NAME:
            return None  # the archive ends inside it, which is reported already
        problems.append(
            Problem(
                "manifest-missing",
                MANIFEST_NAME,
                f"the archive has no manifest ({MANIFEST_NAME}, which should be its last member)",
            )
        )
        return None
    try:
        manifest = json.loads(data or b"")
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        problems.append(Problem("manifest-invalid", MANIFEST_NAME, f"{MANIFEST_NAME} is not a JSON object"))
        return None
    return manifest


def _manifest_list(manifest: Mapping[str, Any] | None, problems: list[Problem]) -> list[Expectation] | None:
    if manifest is None:
        return None
    try:
        return from_manifest(manifest)
    except ValueError as error:
        problems.append(Problem("manifest-invalid", MANIFEST_NAME, f"{MANIFEST_NAME} is invalid: {error}"))
        return None


def records_in_manifest(manifest: Mapping[str, Any] | None) -> bool:
    """True when the archive's file members carry their checksums in the manifest only (a
    stream archive, manifest format 2): their headers then have no record, by design."""
    return manifest is not None and manifest.get("member_checksums") == "manifest"


def _short(digest: str) -> str:
    return digest[:16] + "…"


def _compare(
    seen: list[SeenMember],
    manifest: list[Expectation] | None,
    catalog: list[Expectation] | None,
    cut: ArchiveDamaged | None,
    in_manifest: bool = False,
) -> list[Problem]:
    """Every member against its record and the witnesses, then the lists against each other;
    ``in_manifest``: file members' records are the manifest's entries."""
    problems: list[Problem] = []
    first: dict[str, SeenMember] = {}
    for member in seen:
        if member.name in first:
            problems.append(Problem("duplicate", member.name, f"{member.name} appears more than once"))
            continue
        first[member.name] = member
        problems += _check_member(member, manifest, catalog, in_manifest)
    if catalog is not None:
        problems += _compare_lists(list(first), [e.member for e in catalog], "the catalog", cut)
    elif manifest is not None:
        problems += _compare_lists(
            list(first), [*(e.member for e in manifest), MANIFEST_NAME], "the manifest", cut
        )
    if catalog is not None and manifest is not None:
        problems += _manifest_against_catalog(manifest, catalog, first)
    return problems


def _check_member(
    member: SeenMember,
    manifest: list[Expectation] | None,
    catalog: list[Expectation] | None,
    in_manifest: bool = False,
) -> list[Problem]:
    name, problems = member.name, []
    if member.sha256 is None:
        return [
            Problem("not-a-file", name, f"{name} is a {member.kind}; a splitmirror archive holds only files")
        ]
    listed = in_manifest and name != MANIFEST_NAME and name in _by_name(manifest)
    if member.record is None and not listed:
        problems.append(Problem("no-checksum", name, f"{name} has no checksum record ({CHECKSUM_KEY})"))
    witnesses = [("the manifest", _by_name(manifest)), ("the catalog", _by_name(catalog))]
    disagree = (
        [f"its checksum record says {_short(member.record)}"]
        if member.record not in (None, member.sha256)
        else []
    )
    sizes = []
    for label, expected in witnesses:
        entry = expected.get(name)
        if entry is not None and entry.sha256 != member.sha256:
            disagree.append(f"{label} says {_short(entry.sha256)}")
        if entry is not None and entry.size != member.size:
            sizes.append(f"{label} says {entry.size}")
    if sizes:
        message = f"{name}: size differs: the archive holds {member.size} bytes but {' and '.join(sizes)}"
        problems.append(Problem("size-differs", name, message))
    if disagree:
        digest = _short(member.sha256)
        message = f"{name}: checksum mismatch: its data hashes to {digest} but {' and '.join(disagree)}"
        problems.append(Problem("checksum-mismatch", name, message))
    return problems


def _by_name(entries: list[Expectation] | None) -> dict[str, Expectation]:
    return {e.member: e for e in entries or []}


def _compare_lists(
    present: list[str], expected: list[str], source: str, cut: ArchiveDamaged | None
) -> list[Problem]:
    """Missing, unexpected and out-of-order members; ``present`` is in archive order."""
    problems = []
    here, wanted = set(present), set(expected)
    for name in expected:
        if name in here or name == MANIFEST_NAME or (cut is not None and name == cut.member):
            continue  # a missing manifest and the member the archive ends in are reported already
        why = " (the archive ends before it)" if cut is not None else ""
        problems.append(
            Problem("missing", name, f"{name} is missing from the archive{why}; {source} lists it")
        )
    for name in present:
        if name not in wanted:
            problems.append(
                Problem("unexpected", name, f"{name} is in the archive but {source} does not list it")
            )
    order = [n for n in present if n in wanted]
    planned = [n for n in expected if n in here]
    for actual, should in zip(order, planned, strict=True):
        if actual != should:
            message = f"{actual} is out of order: {source} puts {should} at its place"
            problems.append(Problem("order-differs", actual, message))
            break
    return problems


def _manifest_against_catalog(
    manifest: list[Expectation], catalog: list[Expectation], present: Mapping[str, SeenMember]
) -> list[Problem]:
    """The manifest must list what the catalog lists, in the same order, with the same sizes and
    checksums (where the member is in the archive, its data already said who is wrong)."""
    problems = []
    listed, recorded = _by_name(manifest), _by_name([e for e in catalog if e.member != MANIFEST_NAME])
    for name in recorded:
        if name not in listed:
            problems.append(
                Problem("manifest-differs", name, f"{name} is in the catalog but not in the manifest")
            )
    for name in listed:
        if name not in recorded:
            problems.append(
                Problem("manifest-differs", name, f"{name} is in the manifest but not in the catalog")
            )
    for name, entry in listed.items():
        other = recorded.get(name)
        if (
            other is not None
            and name not in present
            and (other.size, other.sha256) != (entry.size, entry.sha256)
        ):
            message = f"{name}: the manifest and the catalog disagree about its size or checksum"
            problems.append(Problem("manifest-differs", name, message))
    common = [n for n in listed if n in recorded]
    if common != [n for n in recorded if n in listed]:
        problems.append(
            Problem(
                "manifest-differs", None, "the manifest lists the files in another order than the catalog"
            )
        )
    return problems
