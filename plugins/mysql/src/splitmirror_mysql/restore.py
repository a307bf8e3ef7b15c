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

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from splitmirror.restore_steps import RestoreStep
from splitmirror.restored_paths import restored_location

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


def _on(value: Any) -> bool:
    return str(value).upper() in ("1", "ON", "TRUE")


def _server_path(datadir: str, value: Any) -> str:
    """A path variable as the server resolves it: relative values from the data directory."""
    return os.path.normpath(os.path.join(datadir, str(value)))


def start_options(
    server: Mapping[str, Any], datadir: str, flavour: str, place: Callable[[str], str]
) -> list[str]:
    """The server options the copy needs, from the recorded ``server`` variables; ``place``
    turns a server path outside the data directory into the path the started copy sees."""

    def located(path: str) -> str:
        inside = os.path.relpath(path, datadir)
        return inside if not inside.startswith("..") else place(path)

    options: list[str] = []
    if _on(server.get("log_bin")) and server.get("log_bin_basename"):
        basename = _server_path(datadir, server["log_bin_basename"])
        options.append(f"--log-bin={located(basename)}")
        index = server.get("log_bin_index")
        if index and _server_path(datadir, index) != basename + ".index":
            options.append(f"--log-bin-index={located(_server_path(datadir, index))}")
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
            path = _server_path(datadir, server[name])
            if path != os.path.normpath(datadir):
                options.append(f"{option}={place(path)}")
    if flavour != MARIADB:
        if int(server.get("lower_case_table_names") or 0):
            options.append(f"--lower-case-table-names={int(server['lower_case_table_names'])}")
        if str(server.get("gtid_mode", "")).upper() == "ON":
            options += ["--gtid-mode=ON", "--enforce-gtid-consistency=ON"]
    return options


def restore_steps(directory: Path, manifest: Mapping[str, Any]) -> list[RestoreStep]:
    """Start the copy on this host, or (for a server that ran in one) in a container, with the
    options it needs; then the point-in-time recipe."""
    metadata = manifest.get("metadata", {})
    flavour = str(metadata.get("flavour", MARIADB))
    server_dir = os.path.normpath(str(metadata.get("datadir") or IMAGE_DATADIR))  # @@datadir ends in "/"
    recorded = metadata.get("server", {})
    # Each directory the server used, as (server path, host path at backup time).
    directories = [
        (os.path.normpath(str(s)), str(h))
        for s, h in metadata.get("directories", [(server_dir, metadata.get("datadir_host"))])
    ]

    def restored(server_path: str) -> str:
        for server_root, host_root in sorted(directories, key=lambda d: len(d[0]), reverse=True):
            inside = os.path.relpath(server_path, server_root)
            if not inside.startswith("..") and host_root and host_root != "None":
                found = restored_location(directory, manifest, Path(host_root) / inside)
                if found is not None:
                    return str(Path(os.path.normpath(found)))
        return server_path  # not under the primary: the backup did not carry it

    datadir = restored(server_dir)
    binary, client, binlog_tool = (
        ("mariadbd", "mariadb", "mariadb-binlog")
        if flavour == MARIADB
        else ("mysqld", "mysql", "mysqlbinlog")
    )
    roots = sorted({restored(s) for s, _host in directories})
    steps = [
        RestoreStep.run("chown", "-R", "mysql:mysql", *roots, route="host"),
        RestoreStep.start(
            binary,
            "--user=mysql",
            f"--datadir={datadir}",
            *start_options(recorded, server_dir, flavour, restored),
            comment="crash recovery, then it takes connections",
        ),
    ]
    if any(os.path.normpath(s) != os.path.normpath(str(h)) for s, h in directories):
        # The server saw its files elsewhere (path_map): it ran in a container.
        mounts = [(restored(s), s) for s in sorted({s for s, _h in directories})]
        extra = [] if server_dir == IMAGE_DATADIR else [f"--datadir={server_dir}"]
        steps.append(
            RestoreStep.container(
                _outermost(mounts),
                [*extra, *start_options(recorded, server_dir, flavour, lambda path: path)],
                comment="IMAGE: the server's image; it hands the files to its mysql user",
            )
        )
    positions = metadata.get("positions", {})
    if positions.get("binlog_file"):
        exact = (
            "" if positions.get("exact") else " (HOT_BACKUP: use the restored server's SHOW BINLOG STATUS)"
        )
        steps.append(
            RestoreStep.note(
                f"point in time: {binlog_tool} --start-position={positions['binlog_position']} "
                f"{positions['binlog_file']} LATER_BINLOGS... | {client}{exact}"
            )
        )
    return steps


def _outermost(mounts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Mounts without those another one already holds (a binary log directory in the data
    directory comes with it)."""
    kept: list[tuple[str, str]] = []
    for host, inside in sorted(mounts, key=lambda m: len(m[1])):
        if not any(inside == k or inside.startswith(k.rstrip("/") + "/") for _h, k in kept):
            kept.append((host, inside))
    return kept
