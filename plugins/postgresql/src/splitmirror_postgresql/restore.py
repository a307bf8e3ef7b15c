"""How a restored PostgreSQL cluster starts: the steps ``splitmirror restore`` prints.

A HOT_BACKUP restore holds ``backup_label`` and the WAL from the start to the stop of the backup
in ``pg_wal``: with no signal file the server replays to the end of the backup, then opens.  A
FREEZE restore is a crash image and gets ordinary crash recovery.  Either way a plain start
does it, so the steps add only one server option, and only where the live server archived its
WAL: ``archive_mode=off``.  The restored ``postgresql.conf`` is the live one, so a copy started
beside the live server would otherwise run the live ``archive_command`` and write segments of
the same timeline and names into the live archive.  A DBA replacing the lost server drops it.

The container line mounts the restored data directory where the server had it and names that
path as ``PGDATA``: the image's own default is not to be trusted.  Upstream ``postgres:18``
moved it from ``/var/lib/postgresql/data`` to ``/var/lib/postgresql/18/docker`` and refuses to
start, pointing at pg_upgrade, when it finds a cluster at the old path instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from splitmirror.api import RestoreStep, container_steps, ran_in_container

#: Keeps a restored copy out of the live server's WAL archive (see the module docstring).
ARCHIVE_OFF = ("-c", "archive_mode=off")


def restore_steps(
    directory: Path, datadir: Path, manifest: Mapping[str, Any], tablespaces: Sequence[Path] = ()
) -> list[RestoreStep]:
    """Start the restored ``datadir`` (inside the restore ``directory``) on this host, or, for a
    server that ran in a container, in a container of its image.  ``tablespaces`` are the
    restored tablespaces outside the data directory, which ``pg_tblspc`` links to by their
    restored paths: a container mounts each at that same path, so the links hold."""
    metadata = manifest.get("metadata", {})
    version = manifest.get("database", {}).get("version", "")
    archived = str(metadata.get("archive_mode", "off")) in ("on", "always")
    options = ARCHIVE_OFF if archived else ()
    why = "; archive_mode=off keeps it out of the live WAL archive" if archived else ""
    steps = [
        RestoreStep.run("chown", "-R", "postgres:postgres", directory, route="host"),
        RestoreStep.run(
            "runuser", "-u", "postgres", "--", "pg_ctl", "-D", datadir, "-l", datadir / "startup.log",
            *(("-o", " ".join(options)) if options else ()), "start",
            comment=f"PostgreSQL {version}; it replays the WAL to the end of the backup, then opens{why}",
            route="host",
        ),
    ]  # fmt: skip
    server_path = metadata.get("data_directory")
    if server_path and ran_in_container([(server_path, metadata.get("data_directory_host"))]):
        steps += container_steps(
            [(datadir, server_path), *((t, t) for t in tablespaces)],
            ["postgres", *options] if options else [],
            os_user="postgres",
            outside=tablespaces,
            why=why,
            env={"PGDATA": server_path},  # whatever the image's default (see the module docstring)
        )
    return steps
