"""What ``check`` and INIT refuse an Oracle session for, each in one sentence with its fix,
checked before anything is changed on the database (:meth:`OracleEngine.preflight`)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import oracledb

from splitmirror.api import Mode, PreflightProblem

from . import layout

if TYPE_CHECKING:
    from .engine import OracleEngine

#: The views the session reads, and what each is for (named in a missing privilege's sentence).
VIEWS = {
    "v$database": "log mode and SCNs",
    "v$instance": "the instance's state",
    "v$datafile": "the datafiles",
    "v$tablespace": "their tablespaces",
    "v$controlfile": "the control files",
    "v$backup": "backup mode",
    "v$archived_log": "the archived logs",
    "v$log": "log sequences",
    "v$logfile": "the online logs' names, for a restore",
    "v$tempfile": "the tempfiles' names, for a restore",
    "v$parameter2": "the parameters a restored instance starts with",
}
#: What a plain account (``privilege = "none"``) needs besides reading :data:`VIEWS`.
SYSTEM_PRIVILEGES = ("ALTER DATABASE", "ALTER SYSTEM")
#: Oracle 19c (the long-term release) and newer.
MINIMUM_VERSION = (19,)


def problems(engine: OracleEngine, mode: Mode) -> list[PreflightProblem]:
    """In order, stopping where later checks would need what an earlier one found missing: the
    version; a suspended instance (every control-file view would wait for RESUME); privileges
    and views; then the database's facts: NOARCHIVELOG (ORA-01123), FORCE LOGGING, a PDB
    instead of the root, files already in backup mode, a closed instance, and the files."""
    found: list[PreflightProblem] = []
    if engine.version < MINIMUM_VERSION:
        found.append(
            PreflightProblem(f"Oracle {engine.version_text} is not supported", "use Oracle 19c or newer")
        )
    if engine.instance.get("database_status") == "SUSPENDED":
        return [
            *found,
            PreflightProblem(
                "the instance is SUSPENDED (ALTER SYSTEM SUSPEND), and nothing that reads its control file "
                "can run until it resumes",
                "ALTER SYSTEM RESUME when the suspension is over (a backup that died: splitmirror's watchdog "
                "resumes its own), then run the backup again",
            ),
        ]
    found += privilege_problems(engine)
    if found:
        return found  # without the views, the other checks cannot be made
    engine.read_facts()
    database = engine.database
    if database["log_mode"] != "ARCHIVELOG":
        found.append(
            PreflightProblem(
                f"the database {database['name']} is in {database['log_mode']} mode, and BEGIN BACKUP needs "
                "ARCHIVELOG (ORA-01123)",
                "SHUTDOWN IMMEDIATE; STARTUP MOUNT; ALTER DATABASE ARCHIVELOG; ALTER DATABASE OPEN",
            )
        )
    if database["force_logging"] != "YES" and engine.settings.require_force_logging:
        found.append(
            PreflightProblem(
                f"the database {database['name']} is not in FORCE LOGGING mode: a NOLOGGING operation during "
                "the backup would write blocks no redo describes, and a restore would hold them corrupt",
                "ALTER DATABASE FORCE LOGGING, or set [database] require_force_logging = false",
            )
        )
    if database["cdb"] and engine.container != "CDB$ROOT":
        found.append(
            PreflightProblem(
                f"the session is connected to the pluggable database {engine.container}, and backup mode of "
                "the whole database is entered from the root",
                "connect to the container database's own service (such as FREE or ORCLCDB) in [database] url",
            )
        )
    active = int(engine._one("SELECT COUNT(*) FROM v$backup WHERE status = 'ACTIVE'") or 0)
    if active:
        found.append(
            PreflightProblem(
                f"{active} datafiles are already in backup mode (another backup, or one that died)",
                "finish that backup, or ALTER DATABASE END BACKUP when none runs",
            )
        )
    if engine.instance.get("status") != "OPEN":
        found.append(
            PreflightProblem(
                f"the instance is {engine.instance.get('status')}, not OPEN",
                "open the database, then run the backup",
            )
        )
    return found + file_problems(engine)


def privilege_problems(engine: OracleEngine) -> list[PreflightProblem]:
    """Each unreadable view, and for a plain account each missing system privilege; an
    administrative privilege (SYSBACKUP, SYSDBA) holds them all."""
    user = engine.user
    found = []
    for view, purpose in VIEWS.items():
        try:
            engine._rows(f"SELECT 1 FROM {view} WHERE ROWNUM = 1")
        except oracledb.DatabaseError:
            found.append(
                PreflightProblem(
                    f"user {user} cannot read {view} ({purpose})",
                    f'GRANT SELECT_CATALOG_ROLE TO {user}, or connect with privilege = "sysbackup"',
                )
            )
    if engine.settings.privilege == "none":
        held = {str(p) for (p,) in engine._rows("SELECT privilege FROM session_privs")}
        found += [
            PreflightProblem(
                f"user {user} lacks the {privilege} privilege",
                f'GRANT {privilege} TO {user}, or grant SYSBACKUP and set privilege = "sysbackup"',
            )
            for privilege in SYSTEM_PRIVILEGES
            if privilege not in held
        ]
    return found


def file_problems(engine: OracleEngine) -> list[PreflightProblem]:
    """Every datafile must be a file this host reads (through ``path_map``), and the backup
    control file's directory must be here too."""
    in_asm = [d.name for d in engine.datafiles if not layout.on_file_system(d.name)]
    if in_asm:
        return [
            PreflightProblem(
                f"the datafile {in_asm[0]} is in an ASM disk group, and splitmirror reads files",
                "use RMAN for databases in ASM, or move the datafiles to a filesystem on the mirrored disk",
            )
        ]
    found = []
    for datafile in engine.datafiles:
        here = engine.host_path(datafile.name)
        if not here.is_file():
            found.append(
                PreflightProblem(
                    f"the datafile {datafile.name} is not readable here as {here}",
                    "run splitmirror on the database host, as root or the oracle user, or set [database] "
                    "path_map for a server in a container",
                )
            )
            break
    directory = PurePosixPath(engine.backup_controlfile).parent
    here = engine.host_path(directory)
    if not here.is_dir():
        found.append(
            PreflightProblem(
                f"the backup control file's directory {directory} is not here as {here}",
                "set [database] backup_controlfile to a server path under the primary",
            )
        )
    return found
