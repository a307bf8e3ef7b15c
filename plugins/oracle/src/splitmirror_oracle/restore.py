"""How a restored Oracle database starts: the files ``splitmirror restore`` writes beside it, and
the steps it prints.

The archive holds the datafiles (in backup mode: their headers stop at the begin SCN), the
archived logs up to past END BACKUP and the backup control file (:mod:`.layout`).  Oracle's
user-managed procedure turns them into an open database:

1. the backup control file is copied to every ``control_files`` location;
2. the instance starts with a parameter file written from the live instance's parameters
   (``init<SID>.ora``; no spfile is needed), mounts, and media recovery applies the archived
   logs, each named in turn: ``RECOVER DATABASE USING BACKUP CONTROLFILE UNTIL CANCEL``;
3. ``ALTER DATABASE OPEN RESETLOGS`` (and the PDBs are opened).

Step 2 and 3 are a SQL*Plus script (``recover.sql``) fed to ``sqlplus / as sysdba`` on its
standard input, because RECOVER reads the names of the logs from there.  Two routes, as for
the other servers:

* **in a container** (the server ran in one: ``path_map`` mapped its files): the restored
  directories are mounted where the server had them, so every path the control file names is
  right as it is; ``start-container.sh`` hands them to the image's ``oracle`` user, starts the
  listener, runs the recovery and keeps the container running.  The image's own entrypoint
  would run a plain STARTUP, which a database needing recovery fails, so it is replaced.
* **on this host**: the files stay in the restore; ``recover-host.sql`` renames every datafile,
  online log and tempfile to its place there (OPEN RESETLOGS creates the logs and tempfiles
  where the control file says), and the parameter file points the control files, the archive
  destination and the diagnostic and audit directories into the restore too.  It starts an
  instance with the live one's SID: run it where that instance is down.

Paths in the manifest are the server's; :func:`host_path` (with the recorded ``path_map``)
and :func:`restored_location` say where each is in the restore.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from splitmirror.api import (
    IMAGE,
    RestoreStep,
    host_path,
    outermost_mounts,
    primary_at_backup,
    ran_in_container,
    restored_location,
)

#: The directory of the restore that holds what this module writes.
HELPERS = "splitmirror-oracle"
#: Where a container route mounts :data:`HELPERS`.
MOUNTED_HELPERS = "/splitmirror-oracle"
#: Parameters the restored instance's file does not copy: the spfile (the file replaces it),
#: those each route sets itself, and those that would make the copy act as production: ship
#: redo to the live standby, register with the live listeners, run the scheduler's jobs.
NOT_COPIED = frozenset({
    "spfile", "ifile", "control_files", "job_queue_processes",
    "log_archive_config", "fal_server", "fal_client", "dg_broker_start", "dg_broker_config_file1",
    "dg_broker_config_file2", "remote_listener", "local_listener", "db_file_name_convert",
    "log_file_name_convert", "standby_file_management",
})  # fmt: skip
#: Every archive destination but the first (a standby's, a second copy's) is dropped too.
OTHER_DESTINATIONS = re.compile(r"log_archive_dest(_state)?_([2-9]|[1-9][0-9])$")
#: On this host, parameters that would point the restored instance at the live one's places.
RELOCATED = (
    "log_archive_dest", "log_archive_duplex_dest", "db_recovery_file_dest", "db_create_file_dest",
    "db_create_online_log_dest", "audit_file_dest", "diagnostic_dest",
)  # fmt: skip
#: Where files the restore does not hold (a control file, an online log or a tempfile outside
#: the primary) are placed, under :data:`HELPERS`, never at the live paths.
OUTSIDE = "outside"
#: ``v$parameter2.type`` values whose values are written without quotes (boolean, integer, big integer).
UNQUOTED_TYPES = frozenset({1, 3, 6})


class Restored:
    """The restored database in ``directory``: where each server path landed, and the files
    and steps that start it."""

    def __init__(self, directory: Path, manifest: Mapping[str, Any]) -> None:
        self.directory, self.manifest = directory, manifest
        self.metadata: Mapping[str, Any] = manifest.get("metadata", {})
        self.redo: Mapping[str, Any] = manifest.get("redo_range", {})
        self.path_map = {str(s): Path(h) for s, h in self.metadata.get("directories", [])}
        self.sid = str(self.metadata.get("sid") or self.metadata.get("db_name") or "ORCL")
        self.helpers = directory / HELPERS

    def restored(self, server_path: str) -> Path | None:
        """Where the server's ``server_path`` is in the restore, or None when the backup did
        not carry it (a file outside the primary)."""
        return restored_location(self.directory, self.manifest, host_path(self.path_map, server_path))

    @property
    def in_container(self) -> bool:
        return ran_in_container((s, str(h)) for s, h in self.path_map.items())

    def outside(self, server_path: str) -> str:
        """Where a file the restore does not hold goes, inside :data:`HELPERS`."""
        return f"{OUTSIDE}/{server_path.lstrip('/')}"

    def on_host(self, server_path: str) -> str:
        """Where the instance started on this host finds ``server_path``: in the restore."""
        found = self.restored(server_path)
        return str(found) if found is not None else str(self.helpers / self.outside(server_path))

    def in_container_at(self, server_path: str) -> str:
        """Where the instance started in a container finds ``server_path``: where the server had
        it when a mounted directory holds it, else in the mounted :data:`HELPERS`."""
        for _host, inside in self.mounts():
            if server_path == inside or server_path.startswith(inside.rstrip("/") + "/"):
                return server_path
        return f"{MOUNTED_HELPERS}/{self.outside(server_path)}"

    # -- the control files ----------------------------------------------------------------

    def place_control_files(self) -> None:
        """Copy the backup control file to every control file's place: in the restore where it
        holds the control file's directory, else under ``HELPERS/outside/`` (where both routes
        look for it), never over a live control file."""
        named = self.metadata.get("backup_controlfile")
        if not named:
            raise FileNotFoundError(
                "the manifest names no backup control file, so this is not an archive of the oracle "
                "engine's backup sessions"
            )
        backup = self.restored(str(named))
        if backup is None or not backup.is_file():
            raise FileNotFoundError(f"the backup control file {named} is not in the restore")
        for name in self.metadata.get("control_files", []):
            target = Path(self.on_host(str(name)))
            target.parent.mkdir(parents=True, exist_ok=True)
            if target != backup:
                shutil.copyfile(backup, target)

    # -- the files the steps run ----------------------------------------------------------

    def parameter_file(self, *, on_host: bool) -> str:
        """``init<SID>.ora``: the live instance's explicitly set parameters but those that would
        make the copy act as production (:data:`NOT_COPIED`), with the control files where the
        started instance sees them, no scheduler job, and on this host the archive destination
        and the diagnostic and audit directories inside the restore."""
        lines = [f"# written by splitmirror restore from the parameters of {self.sid}"]
        parameters: Mapping[str, Sequence[Any]] = self.metadata.get("parameters", {})
        for name, (kind, *values) in sorted(parameters.items()):
            if (
                name in NOT_COPIED
                or OTHER_DESTINATIONS.match(name)
                or (on_host and name.startswith(RELOCATED))
            ):
                continue
            lines.append(f"*.{name}={_values(int(kind), values)}")
        place = self.on_host if on_host else self.in_container_at
        lines.append(
            f"*.control_files={_values(2, [place(str(c)) for c in self.metadata.get('control_files', [])])}"
        )
        lines += ["# no scheduler job runs in the copy until you say so", "*.job_queue_processes=0"]
        if on_host:
            archive = self.helpers / "archive"
            lines += [
                f"*.log_archive_dest_1={_values(2, [f'LOCATION={archive}'])}",
                f"*.audit_file_dest={_values(2, [str(self.helpers / 'adump')])}",
                f"*.diagnostic_dest={_values(2, [str(self.helpers)])}",
            ]
        return "\n".join(lines) + "\n"

    def recovery_script(self, pfile: str, place: Callable[[str], str], renames: Sequence[str]) -> str:
        """The SQL*Plus script: start with ``pfile``, mount, rename ``renames`` (server paths)
        to ``place(path)``, recover feeding every archived log by name (``place``d), open with
        RESETLOGS.  An error before RECOVER or at OPEN exits non-zero; RECOVER's own prompts
        and its "cancelled" are not errors."""
        logs = [place(str(name)) for name in self.redo.get("archived_logs", [])]
        lines = [
            "WHENEVER OSERROR EXIT FAILURE",
            "WHENEVER SQLERROR EXIT FAILURE",
            f"STARTUP NOMOUNT PFILE='{_sql(pfile)}'",
            "ALTER DATABASE MOUNT;",
            *(f"ALTER DATABASE RENAME FILE '{_sql(old)}' TO '{_sql(place(old))}';" for old in renames),
            "WHENEVER SQLERROR CONTINUE",
            "-- the copy keeps no flashback logs and no change tracking file of the live database's",
            "ALTER DATABASE FLASHBACK OFF;",
            "ALTER DATABASE DISABLE BLOCK CHANGE TRACKING;",
            "RECOVER DATABASE USING BACKUP CONTROLFILE UNTIL CANCEL",
            *logs,
            "CANCEL",
            "WHENEVER SQLERROR EXIT FAILURE",
            "ALTER DATABASE OPEN RESETLOGS;",
        ]
        if self.metadata.get("cdb"):
            lines.append("ALTER PLUGGABLE DATABASE ALL OPEN;")
        lines.append("EXIT")
        return "\n".join(lines) + "\n"

    def write_helpers(self) -> None:
        """The parameter files, recovery scripts and the container's start script; the
        directories of files placed under ``outside/`` (OPEN RESETLOGS creates online logs and
        tempfiles, but not their directories)."""
        self.helpers.mkdir(parents=True, exist_ok=True)
        for name in ("archive", "adump", OUTSIDE):
            (self.helpers / name).mkdir(exist_ok=True)
        files = [
            *(str(name) for _no, name in self.metadata.get("datafiles", [])),
            *self.metadata.get("redo_logs", []),
            *self.metadata.get("tempfiles", []),
        ]
        for path in files:
            if self.restored(path) is None:
                (self.helpers / self.outside(path)).parent.mkdir(parents=True, exist_ok=True)
        host_pfile = self.helpers / f"init{self.sid}-host.ora"
        host_pfile.write_text(self.parameter_file(on_host=True))
        renames = [p for p in files if self.on_host(p) != p]
        (self.helpers / "recover-host.sql").write_text(
            self.recovery_script(str(host_pfile), self.on_host, renames)
        )
        (self.helpers / "recover-host.sh").write_text(
            _script(
                f"export ORACLE_SID={shlex.quote(self.sid)}",
                '"$ORACLE_HOME/bin/sqlplus" -S -L / as sysdba < '
                + shlex.quote(str(self.helpers / "recover-host.sql")),
            )
        )
        if self.in_container:
            pfile = f"{MOUNTED_HELPERS}/init{self.sid}.ora"
            (self.helpers / f"init{self.sid}.ora").write_text(self.parameter_file(on_host=False))
            renames = [p for p in files if self.in_container_at(p) != p]
            (self.helpers / "recover.sql").write_text(
                self.recovery_script(pfile, self.in_container_at, renames)
            )
            (self.helpers / "start-container.sh").write_text(self._container_script())
        for path in self.helpers.rglob("*"):
            path.chmod(0o777 if path.is_dir() else 0o644)
        self.helpers.chmod(0o755)

    def _container_script(self) -> str:
        """Run as root in a container of the server's image: hand the mounted directories to
        its ``oracle`` user, then as that user start the listener, recover and open, and stay
        (the container runs as long as the database should)."""
        owned = " ".join(shlex.quote(inside) for _host, inside in self.mounts())
        env = (
            f"env ORACLE_SID={shlex.quote(self.sid)} "
            'ORACLE_HOME="$ORACLE_HOME" ORACLE_BASE="${ORACLE_BASE:-/opt/oracle}"'
        )
        recover = f'"$ORACLE_HOME/bin/sqlplus" -S -L / as sysdba < {MOUNTED_HELPERS}/recover.sql'
        return _script(
            f"chown -R oracle:oinstall {owned} {MOUNTED_HELPERS}/archive {MOUNTED_HELPERS}/adump "
            f"{MOUNTED_HELPERS}/{OUTSIDE}",
            'as_oracle() { if command -v runuser >/dev/null; then runuser -u oracle -- "$@"; '
            'else su oracle -s /bin/bash -c "$(printf "%q " "$@")"; fi; }',
            f'as_oracle {env} "$ORACLE_HOME/bin/lsnrctl" start >/dev/null',
            f"as_oracle {env} bash -c {shlex.quote(recover)}",
            'echo "splitmirror: the restored database is open"',
            "exec sleep infinity",
        )

    def mounts(self) -> list[tuple[str, str]]:
        """(restored host path, server path) for each mapped directory the restore holds, and
        for the restore itself where the primary was inside a mapped directory (a primary of
        ``/srv/ora/FREE`` under ``"/opt/oracle/oradata" = "/srv/ora"``); none inside another."""
        found = [(str(self.restored(s)), s) for s in self.path_map if self.restored(s) is not None]
        root = primary_at_backup(self.manifest)
        for server, host in self.path_map.items():
            if root is not None and root.is_relative_to(host):
                found.append((str(self.directory), posixpath.join(server, str(root.relative_to(host)))))
        return outermost_mounts([(h, posixpath.normpath(s)) for h, s in found])

    # -- the steps --------------------------------------------------------------------------

    def steps(self) -> list[RestoreStep]:
        steps: list[RestoreStep] = []
        steps += [
            RestoreStep.run("chown", "-R", "oracle:oinstall", self.directory, route="host"),
            RestoreStep.run(
                "su", "-", "oracle", "-c", f"bash {shlex.quote(str(self.helpers / 'recover-host.sh'))}",
                comment=f"an instance {self.sid} where the live one is down: recover, then OPEN RESETLOGS",
                route="host",
            ),
        ]  # fmt: skip
        if self.in_container:
            volumes = [arg for host, inside in self.mounts() for arg in ("-v", f"{host}:{inside}")]
            argv = (
                "docker", "run", "-d", *volumes, "-v", f"{self.helpers}:{MOUNTED_HELPERS}",
                "--user", "root", "--entrypoint", "bash", IMAGE, f"{MOUNTED_HELPERS}/start-container.sh",
            )  # fmt: skip
            steps.append(
                RestoreStep(
                    "container",
                    argv,
                    "IMAGE: the server's image; the script recovers and opens the database, then stays",
                    "container",
                )
            )
        end = self.redo.get("end_scn")
        steps.append(
            RestoreStep.note(
                "the copy starts with job_queue_processes=0 and without the live instance's standby "
                "destinations and listeners; set them when it is to serve"
            )
        )
        steps.append(
            RestoreStep.note(
                f"recovered to the end of the backup (SCN {end}); for a later point, add later archived logs "
                f"before CANCEL in {self.helpers}/recover*.sql before running it"
            )
        )
        return steps


def prepare(directory: Path, manifest: Mapping[str, Any]) -> list[RestoreStep]:
    """Place the control files, write the helpers, return the steps."""
    restored = Restored(directory, manifest)
    restored.place_control_files()
    restored.write_helpers()
    return restored.steps()


def _values(kind: int, values: Sequence[Any]) -> str:
    if kind in UNQUOTED_TYPES:
        return ",".join(str(v) for v in values)
    return ",".join(f"'{_sql(str(v))}'" for v in values)


def _sql(text: str) -> str:
    return text.replace("'", "''")


def _script(*lines: str) -> str:
    return "\n".join(["#!/bin/bash", "# written by splitmirror restore", "set -euo pipefail", *lines]) + "\n"
