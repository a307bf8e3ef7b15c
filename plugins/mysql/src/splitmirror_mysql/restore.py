"""How a restored MySQL/MariaDB copy starts: the steps ``splitmirror restore`` prints.

**Why the steps carry server options.**  With the binary log on, InnoDB and the binary log
commit in two phases, and a commit is durable once the binary log has it: InnoDB's own commit
record may still sit in its log buffer when the split happens.  The image (a crash image, in
both modes) therefore holds transactions InnoDB alone sees as *prepared*, and only a server
started with the same binary log resolves them: its recovery reads the last binary log and
commits the prepared transactions it finds there.  Started without it, the server refuses
("Found N prepared transactions! ... --tc-heuristic-recover").  So the session records what the
server ran with (:data:`RECORDED`, in the manifest's metadata) and the steps start the copy with
the same: the binary log's name and index, the server id, and the settings InnoDB (page size,
system tablespace, directories) and MySQL's data dictionary (``lower_case_table_names``) refuse
to start without, with GTID mode for a binary log written with GTIDs.

Paths in those options are the server's; for a copy started on this host they become the
restored locations (:mod:`splitmirror.restored_paths`), for a copy in a container they stay the
server's and each restored directory is mounted where the server had it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from splitmirror.api import (
    RestoreStep,
    container_steps,
    outermost_mounts,
    ran_in_container,
    restored_location,
)

from . import binlog_index

MARIADB = "MariaDB"
#: Server variables read at connect and recorded in the manifest (``metadata.server``).
RECORDED = (
    "log_bin", "log_bin_basename", "log_bin_index", "server_id", "innodb_page_size",
    "innodb_data_file_path", "innodb_data_home_dir", "innodb_log_group_home_dir",
    "innodb_undo_directory", "lower_case_table_names",
)  # fmt: skip
#: MySQL only (MariaDB's GTIDs need no start option).
RECORDED_MYSQL = ("gtid_mode", "enforce_gtid_consistency")
#: The upstream images' data directory.
IMAGE_DATADIR = "/var/lib/mysql"
_DEFAULT_PAGE_SIZE = 16384
_DEFAULT_DATA_FILE_PATH = "ibdata1:12M:autoextend"
_DIRECTORY_OPTIONS = {
    "innodb_data_home_dir": "--innodb-data-home-dir",
    "innodb_log_group_home_dir": "--innodb-log-group-home-dir",
    "innodb_undo_directory": "--innodb-undo-directory",
}


def start_options(
    server: Mapping[str, Any],
    datadir: str,
    flavour: str,
    place: Callable[[str], str],
    *,
    version: str = "",
    index: str | None = None,
) -> list[str]:
    """The server options the copy needs, from the recorded ``server`` variables; ``place``
    turns a server path outside the data directory into the path the started copy sees;
    ``index`` replaces the binary log index (a copy of it naming restored paths)."""

    def located(path: str) -> str:
        inside = os.path.relpath(path, datadir)
        return inside if not inside.startswith("..") else place(path)

    options: list[str] = []
    if binlog_index.is_on(server.get("log_bin")) and server.get("log_bin_basename"):
        basename = binlog_index.server_path(datadir, server["log_bin_basename"])
        options.append(f"--log-bin={located(basename)}")
        recorded_index = server.get("log_bin_index")
        if index is not None:
            options.append(f"--log-bin-index={index}")
        elif recorded_index and binlog_index.server_path(datadir, recorded_index) != basename + ".index":
            options.append(f"--log-bin-index={located(binlog_index.server_path(datadir, recorded_index))}")
        options.append(f"--server-id={int(server.get('server_id') or 1)}")
    elif flavour != MARIADB and "log_bin" in server:
        options.append("--skip-log-bin")  # MySQL 8+ logs by default; this server did not
    page_size = int(server.get("innodb_page_size") or _DEFAULT_PAGE_SIZE)
    if page_size != _DEFAULT_PAGE_SIZE:
        options.append(f"--innodb-page-size={page_size}")
    data_file_path = server.get("innodb_data_file_path")
    if data_file_path and data_file_path != _DEFAULT_DATA_FILE_PATH:
        options.append(f"--innodb-data-file-path={data_file_path}")
    for name, option in _DIRECTORY_OPTIONS.items():
        if server.get(name):
            path = binlog_index.server_path(datadir, server[name])
            if path != os.path.normpath(datadir):
                options.append(f"{option}={place(path)}")
    if flavour != MARIADB:
        if int(server.get("lower_case_table_names") or 0):
            options.append(f"--lower-case-table-names={int(server['lower_case_table_names'])}")
        if str(server.get("gtid_mode", "")).upper() == "ON":
            options += ["--gtid-mode=ON", "--enforce-gtid-consistency=ON"]
    options.append(_skip_replication(flavour, version))
    return options


def _skip_replication(flavour: str, version: str) -> str:
    """A copy of a replica must not reconnect to its source under the live replica's server id
    (the source would drop the live replica's connection); START REPLICA when it should."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    modern = flavour != MARIADB and numbers >= (8, 0, 26)
    return "--skip-replica-start" if modern else "--skip-slave-start"


class RestoredServer:
    """Where the server's directories are in the restore ``directory`` (:meth:`restored`), and
    the steps that start it there."""

    def __init__(self, directory: Path, manifest: Mapping[str, Any]) -> None:
        self.directory, self.manifest = directory, manifest
        metadata = manifest.get("metadata", {})
        self.flavour = str(metadata.get("flavour", MARIADB))
        self.version = str(manifest.get("database", {}).get("version", ""))
        self.server_dir = os.path.normpath(
            str(metadata.get("datadir") or IMAGE_DATADIR)
        )  # @@datadir ends in /
        self.recorded: Mapping[str, Any] = metadata.get("server", {})
        self.positions: Mapping[str, Any] = metadata.get("positions", {})
        #: Each directory the server used: (server path, host path at backup time).
        self.directories = [
            (os.path.normpath(str(s)), str(h) if h else "")
            for s, h in metadata.get("directories", [(self.server_dir, metadata.get("datadir_host"))])
        ]

    def carried(self, server_path: str) -> str | None:
        """The restored location of a server path, or None when the backup did not carry it."""
        for server_root, host_root in sorted(self.directories, key=lambda d: len(d[0]), reverse=True):
            inside = os.path.relpath(server_path, server_root)
            if host_root and not inside.startswith(".."):
                found = restored_location(self.directory, self.manifest, Path(host_root) / inside)
                if found is not None:
                    return os.path.normpath(found)
        return None

    def restored(self, server_path: str) -> str:
        """The restored location of a server path; the path itself when the backup did not carry it."""
        return self.carried(server_path) or server_path

    @property
    def in_container(self) -> bool:
        """The server saw its files elsewhere than this host (``path_map``): it ran in a container."""
        return ran_in_container(self.directories)

    def steps(self, binlogs: binlog_index.Prepared | None = None) -> list[RestoreStep]:
        """Start the copy on this host, or in a container, with the options it needs; then the
        point-in-time recipe.  ``binlogs`` is what :func:`binlog_index.prepare` did."""
        binary, client, tool = (
            ("mariadbd", "mariadb", "mariadb-binlog")
            if self.flavour == MARIADB
            else ("mysqld", "mysql", "mysqlbinlog")
        )
        options = functools.partial(
            start_options, self.recorded, self.server_dir, self.flavour, version=self.version
        )
        host_index = binlogs.host_index if binlogs else None
        steps = [
            # The whole restore: DIR itself is created 0700, and the server must pass through it.
            RestoreStep.run("chown", "-R", "mysql:mysql", self.directory, route="host"),
            RestoreStep.start(
                binary, "--user=mysql", f"--datadir={self.restored(self.server_dir)}",
                *options(self.restored, index=host_index),
                comment="crash recovery, then it takes connections",
            ),
        ]  # fmt: skip
        if self.in_container:
            mounts = [(self.restored(s), s) for s in sorted({s for s, _h in self.directories})]
            others = [host for host, inside in outermost_mounts(mounts) if inside != self.server_dir]
            extra = [] if self.server_dir == IMAGE_DATADIR else [f"--datadir={self.server_dir}"]
            steps += container_steps(
                outermost_mounts(mounts),
                [*extra, *options(lambda path: path)],
                os_user="mysql",
                outside=others,
            )
        end = binlogs.end if binlogs else None
        if end is not None:
            steps.append(
                RestoreStep.note(
                    f"point in time: {tool} --start-position={end[1]} {end[0]} LATER_BINLOGS... | {client}   "
                    "(the end of the restored binary log: where the backup ends, in either mode)"
                )
            )
        elif self.positions.get("binlog_file"):
            steps.append(
                RestoreStep.note(
                    f"point in time: {tool} --start-position={self.positions['binlog_position']} "
                    f"{self.positions['binlog_file']} LATER_BINLOGS... | {client}   (recorded at the split)"
                )
            )
        return steps


def restore_steps(directory: Path, manifest: Mapping[str, Any]) -> list[RestoreStep]:
    """Make the restored binary log index right for the copy, and the steps that start it."""
    server = RestoredServer(directory, manifest)
    return server.steps(binlog_index.prepare(server))
