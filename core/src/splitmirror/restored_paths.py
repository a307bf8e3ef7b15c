"""Where a host path of the backed-up database is in a restored tree.

An archive names each file by its place under the primary, and the manifest keeps both names
(``path`` on the host at backup time, ``member`` in the archive).  From any one file that has
both follows where the primary was, and so where any directory the engine recorded (a data
directory, a binary log directory, a tablespace) lands inside the restore.  Engines use this in
``prepare_restore`` to print steps naming the restored locations, never the live ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any


def primary_at_backup(manifest: Mapping[str, Any]) -> Path | None:
    """The primary's path at backup time, or None when no file record says (a generated-only
    archive)."""
    for record in manifest.get("files", []):
        path, member = record.get("path"), record.get("member")
        if not path or not member:
            continue
        host, inside = Path(path), PurePosixPath(member).parts
        if len(host.parts) > len(inside) and host.parts[-len(inside) :] == inside:
            return Path(*host.parts[: -len(inside)])
    return None


def restored_location(directory: Path, manifest: Mapping[str, Any], host_path: str | Path) -> Path | None:
    """Where ``host_path`` (a directory or file under the primary at backup time) is inside the
    restore ``directory``; None when it was not under the primary."""
    root = primary_at_backup(manifest)
    path = Path(host_path)
    if root is None or not path.is_absolute() or not path.is_relative_to(root):
        return None
    return directory / path.relative_to(root)
