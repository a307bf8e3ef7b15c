"""A split handed over: what a database host records so that a backup host can archive it
without the database, the primary or a mount of the mirror (docs/fleet.md).

The database host runs INIT … UNQUIESCE, then :func:`split_record` writes down what BACKUP
would have used: every file in archive order with its name, attributes and extent map from
CHECK (the mirror's disk holds the same bytes at the same offsets), the manifest's fixed part,
and as *parcels* the bytes only the database host could read: files the engine collected from
the primary after the window, files CHECK could not map raw, and the members the engine
generated.  :class:`SplitToArchive` turns the record back into BACKUP's inputs on the backup
host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .archive.assembly import logical_order, manifest_header
from .config import Config
from .engine import DatabaseFile, ExtraMember, UnquiesceResult
from .errors import PreflightError
from .extents import Extent, ExtentFlag, ExtentMap
from .filemap import Fingerprint
from .hostname import host
from .mirror.block import BlockMirror
from .mirror.identity import identity

if TYPE_CHECKING:
    from .opening import Parts

#: The record's own format: a backup host refuses one it does not know.
FORMAT = 1


def _file(
    f: DatabaseFile, mirror: BlockMirror, source: str, parcels: list[bytes], read: Callable[[Path], bytes]
) -> dict[str, Any]:
    """One file as the backup host will archive it; its bytes as a parcel unless by extent."""
    entry: dict[str, Any] = {
        "path": str(f.path),
        "name": str(mirror.relative(f.path)),
        "key": list(f.logical_key),
        "role": f.role,
        "source": source,
    }
    info = Fingerprint.of(f.path) if source == "collected" else mirror.fingerprint_of(f.path)
    entry["stat"] = [info.size, info.mode, info.mtime_ns, info.uid, info.gid]
    emap = mirror.map_of(f.path)
    if source == "mirrored" and emap is not None and mirror.read_method(f.path) == "extent":
        entry["extents"] = [e.to_json() for e in emap.extents]
    else:
        entry["parcel"] = len(parcels)
        parcels.append(read(f.path)[: info.size])  # a collected file may have grown since its stat
    return entry


def split_record(
    *,
    mirror: BlockMirror,
    header: Mapping[str, Any],
    files: Sequence[DatabaseFile],
    unquiesced: UnquiesceResult,
    device: Path,
) -> tuple[dict[str, Any], list[bytes]]:
    """The record of a split and its parcels.  ``header`` is the manifest's fixed part
    (:func:`splitmirror.archive.assembly.manifest_header`) with the window's figures."""
    parcels: list[bytes] = []

    def from_split(path: Path) -> bytes:
        with mirror.open_split_copy(path) as copy:
            return copy.read()

    def from_primary(path: Path) -> bytes:
        return Path(path).read_bytes()

    window = sorted(unquiesced.window_files, key=lambda f: logical_order(f.logical_key))
    collected = sorted(unquiesced.collected_files, key=lambda f: logical_order(f.logical_key))
    entries = [_file(f, mirror, "mirrored", parcels, from_split) for f in [*files, *window]]
    entries += [_file(f, mirror, "collected", parcels, from_primary) for f in collected]
    extras = []
    for extra in unquiesced.extra_members:
        name = str(mirror.relative(extra.path)) if extra.path is not None else extra.name
        extras.append(
            {"name": name, "key": list(extra.logical_key), "role": extra.role, "parcel": len(parcels)}
        )
        parcels.append(extra.data)
    record = {
        "format": FORMAT,
        "primary": str(mirror.primary),
        "device": str(device),
        "header": dict(header),
        "label": unquiesced.label,
        "redo_range": dict(unquiesced.redo_range),
        "files": entries,
        "extras": extras,
    }
    return record, parcels


def hand_over(
    parts: Parts,
    config: Config,
    files: Sequence[DatabaseFile],
    unquiesced: UnquiesceResult,
    window: Mapping[str, Any],
    stats: Mapping[str, Any],
) -> None:
    """The database host's end of an off-host session, after UNQUIESCE: the split recorded and
    handed over in the catalog (the row stays ``STARTED`` until a backup host finishes it).
    ``window`` holds the manifest's ``window_ms``, ``blocked_ms`` and ``metadata``."""
    mirror = parts.mirror
    assert isinstance(mirror, BlockMirror), "preflight refuses off-host sessions of other mirrors"
    device = config.mirror.mirror
    header = {**manifest_header(parts, config), **window}
    record, parcels = split_record(
        mirror=mirror, header=header, files=files, unquiesced=unquiesced, device=device
    )
    parts.catalog.update_session(
        parts.id,
        window_ms=window["window_ms"],
        blocked_ms=window["blocked_ms"],
        label=unquiesced.label,
        redo_range=dict(unquiesced.redo_range),
        stats=dict(stats),
    )
    named = identity(device)
    mirror.make_durable()  # before the backup host may read a byte of it
    parts.catalog.hand_over(parts.id, identity=named, host=host(), record=record, parcels=parcels)


@dataclasses.dataclass
class SplitToArchive:
    """A record read back on the backup host: BACKUP's inputs, the database left out."""

    record: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.record.get("format") != FORMAT:
            raise PreflightError(
                f"the split was recorded in format {self.record.get('format')!r}, which this splitmirror "
                f"does not read ({FORMAT}); run the same splitmirror version on the database and backup hosts"
            )

    @property
    def header(self) -> Mapping[str, Any]:
        return self.record["header"]  # type: ignore[no-any-return]

    def _database_file(self, entry: Mapping[str, Any]) -> DatabaseFile:
        return DatabaseFile(Path(entry["path"]), tuple(entry["key"]), entry["role"])

    def inputs(self, parcel: Callable[[int], bytes]) -> tuple[list[DatabaseFile], UnquiesceResult]:
        """The files (mirrored) and what leaving the mode gave (the collected files as the
        window's last, the generated members with their bytes)."""
        entries = self.record["files"]
        mirrored = [self._database_file(e) for e in entries if e["source"] == "mirrored"]
        collected = [self._database_file(e) for e in entries if e["source"] == "collected"]
        extras = [
            ExtraMember(e["name"], parcel(e["parcel"]), tuple(e["key"]), e["role"])
            for e in self.record["extras"]
        ]
        result = UnquiesceResult(
            label=self.record["label"],
            redo_range=self.record["redo_range"],
            extra_members=extras,
            collected_files=collected,
        )
        return mirrored, result

    def maps(self) -> dict[Path, ExtentMap]:
        return {
            Path(e["path"]): ExtentMap(
                e["stat"][0], tuple(Extent(lo, ph, n, ExtentFlag(fl)) for lo, ph, n, fl in e["extents"])
            )
            for e in self.record["files"]
            if "extents" in e
        }

    def fingerprints(self) -> dict[Path, Fingerprint]:
        return {
            Path(e["path"]): Fingerprint(
                0, 0, e["stat"][0], e["stat"][2], 0, e["stat"][1], e["stat"][3], e["stat"][4]
            )
            for e in self.record["files"]
        }

    def names(self) -> dict[Path, str]:
        return {Path(e["path"]): e["name"] for e in self.record["files"]}

    def parcels_of_files(self) -> dict[Path, int]:
        return {Path(e["path"]): e["parcel"] for e in self.record["files"] if "parcel" in e}
