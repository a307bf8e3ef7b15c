"""Where a restored cluster's pieces are, and the tablespace links that join them.

An archive names every file by its place under the primary, and a tablespace's files by their
real location, not through the ``pg_tblspc/<oid>`` links (archives hold files only).  So the
data directory may be a subdirectory of the restore, each tablespace another, and the links
must be made again, pointing into the restore.  Pointing them where the manifest's
``tablespace_map`` says (the live tablespace) would let the restored server write into the
production cluster's files; :func:`link_tablespaces` never does.

The manifest's ``metadata`` (written by the engine's ``prepare``) says where the data directory
and each tablespace were on the host; the data directory's ``PG_VERSION`` member says where the
data directory is in the archive, and from the two follows where everything else is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from splitmirror.api import primary_at_backup

#: The logical key of the data directory's own PG_VERSION (``layout.logical_key``).
_PG_VERSION_KEY = [1, "PG_VERSION"]


def _data_member(manifest: Mapping[str, Any]) -> PurePosixPath | None:
    """The data directory's place in the archive, from its PG_VERSION member."""
    for record in manifest.get("files", []):
        if list(record.get("logical_key", [])) == _PG_VERSION_KEY:
            return PurePosixPath(record["member"]).parent
    return None


def data_directory(directory: Path, manifest: Mapping[str, Any]) -> Path:
    """The restored data directory inside the restore ``directory``."""
    member = _data_member(manifest)
    return directory if member is None else directory / member


def tablespace_location(
    directory: Path, datadir: Path, manifest: Mapping[str, Any], tablespace: Mapping[str, Any]
) -> Path:
    """Where one tablespace is restored: its place under the primary, inside the restore; a
    tablespace outside the primary held no file (the backup would have refused it), so it is
    recreated empty, in place, as ``pg_tblspc/<oid>`` itself."""
    root = primary_at_backup(manifest)
    host = Path(tablespace.get("host_path", ""))
    if root is not None and host.is_absolute() and host.is_relative_to(root):
        return directory / host.relative_to(root)
    return datadir / "pg_tblspc" / str(tablespace["oid"])


def link_tablespaces(directory: Path, datadir: Path, manifest: Mapping[str, Any]) -> list[Path]:
    """Make ``pg_tblspc/<oid>`` link to each tablespace's restored copy, recreate its version
    directory, and rewrite ``tablespace_map`` (HOT_BACKUP) to say the same, so recovery
    relinks to the restore too.  Returns the restored tablespace locations."""
    locations = []
    map_lines = []
    for tablespace in manifest.get("metadata", {}).get("tablespaces", []):
        target = tablespace_location(directory, datadir, manifest, tablespace)
        link = datadir / "pg_tblspc" / str(tablespace["oid"])
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o700)
        for version in tablespace.get("version_directories", []):
            (target / version).mkdir(exist_ok=True)
        if target != link:  # in place, the directory is the tablespace: no link, no map line
            if link.is_symlink() or link.is_file():
                link.unlink()
            os.symlink(target, link)
            map_lines.append(f"{tablespace['oid']} {target}\n")
        locations.append(target)
    tablespace_map = datadir / "tablespace_map"
    if tablespace_map.exists():
        tablespace_map.write_text("".join(map_lines))
    return locations
