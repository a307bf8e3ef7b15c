"""The Oracle engine (docs/databases/oracle.md): Oracle's user-managed backup procedure, on a
split mirror.

Both modes put every datafile in **backup mode** (``ALTER DATABASE BEGIN BACKUP``): Oracle then
logs whole images of changed blocks and freezes each datafile header's checkpoint, so a copy
taken while the database writes is repaired by media recovery from the begin SCN on.

* **HOT_BACKUP**: ``ALTER SYSTEM ARCHIVE LOG CURRENT``, ``BEGIN BACKUP``; the split; ``END
  BACKUP``.  The database keeps working throughout.
* **FREEZE**: ``BEGIN BACKUP``, ``ALTER SYSTEM SUSPEND`` (I/O to datafiles and control files
  stops; ``v$instance.database_status`` is checked for ``SUSPENDED``); the split; ``ALTER SYSTEM
  RESUME``, ``END BACKUP``: for storage that must split without I/O in flight.  SUSPEND alone
  is no substitute for backup mode (Oracle says so), hence both.  While suspended, nothing that
  reads the control file or a datafile header may run, or it would wait for RESUME: everything
  DISCOVER and PREPARE report is read before SUSPEND.

After the split, in either mode: ``ARCHIVE LOG CURRENT`` (the log holding END BACKUP is
archived), ``ALTER DATABASE BACKUP CONTROLFILE TO '...' REUSE``, ``v$backup`` checked all NOT
ACTIVE, and the archived logs from the begin SCN to the end SCN listed (``v$archived_log``);
they and the backup control file are collected from the primary after the window
(:mod:`.layout`).  A restore recovers with ``RECOVER DATABASE USING BACKUP CONTROLFILE UNTIL
CANCEL`` and opens with RESETLOGS (:mod:`.restore`).

Backup mode and SUSPEND outlive the session that entered them, unlike every other engine's hold:
:meth:`OracleEngine.abort` falls back to a fresh connection when the session's own cannot
release, and :meth:`OracleEngine.emergency_release` is what the watchdog runs when the session's
process dies.  Neither needs root: Oracle's I/O is held by Oracle, no filesystem is frozen.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import oracledb
import pydantic

from splitmirror.api import (
    DatabaseFile,
    Duration,
    Mode,
    PreflightError,
    PreflightProblem,
    RestoreStep,
    ServerEngine,
    ServerInfo,
    ServerOptions,
    SplitmirrorError,
    UnquiesceResult,
)

from . import connection, layout, restore

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
#: ``END BACKUP`` when no file is in backup mode; ``RESUME`` when nothing is suspended.
NOTHING_TO_END = ("ORA-01260", "ORA-01142")
#: Oracle 19c (the long-term release) and newer: ``v$instance.version_full``, one backup mode.
MINIMUM_VERSION = (19,)


class OracleOptions(ServerOptions):
    """``path_map`` (``"/opt/oracle/oradata" = "/srv/oradata"``) and ``connect_timeout``, and:"""

    #: The administrative privilege the session logs in with: ``sysbackup`` (Oracle's own for
    #: backups), ``sysdba``, or ``none`` (an account granted ALTER DATABASE, ALTER SYSTEM and
    #: SELECT_CATALOG_ROLE).
    privilege: Literal["sysbackup", "sysdba", "none"] = "sysbackup"
    #: A file (mode 0600) whose first line is the password; else ``$SPLITMIRROR_ORACLE_PASSWORD``.
    password_file: Path | None = None
    #: Where the server writes the backup control file, as the server names it; by default
    #: ``splitmirror-backup.ctl`` beside the first control file.  It must lie under the primary.
    backup_controlfile: str | None = None
    #: How long one statement may take (a log switch waiting for the archiver, say) before the
    #: session gives up and releases the database.
    statement_timeout: Duration = 60.0


class BackupFailed(SplitmirrorError):
    """Oracle refused a step of the backup."""


class OracleEngine(ServerEngine[oracledb.Connection, OracleOptions]):
    name = "oracle"
    url_schemes = connection.SCHEMES
    options_model = OracleOptions
    server_name = "Oracle"
    password_sources = connection.PASSWORD_SOURCES
    driver_errors = (oracledb.Error,)
    frozen_files = "the datafiles"

    def __init__(self, url: str, options: pydantic.BaseModel) -> None:
        super().__init__(url, options)
        self.version: tuple[int, ...] = ()
        self.version_text = ""
        self.database: dict[str, Any] = {}
        self.instance: dict[str, Any] = {}
        self.container = ""
        self.control_files: list[str] = []
        self.datafiles: list[layout.Datafile] = []
        #: What a restore needs that the files do not say, read outside the window (:meth:`layout`).
        self.restore_facts: dict[str, Any] = {}
        self._in_backup = False
        self._suspended = False
        self.begin: dict[str, Any] = {}

    # -- connection and facts -------------------------------------------------------------

    def open_connection(self) -> oracledb.Connection:
        settings = self.settings
        try:
            return connection.connect(
                self.url,
                privilege=settings.privilege,
                password_file=settings.password_file,
                timeout=settings.connect_timeout,
                call_timeout=settings.statement_timeout,
            )
        except connection.ConnectionProblem as problem:
            raise PreflightError(str(problem)) from None

    def error_message(self, error: Exception) -> str:
        return connection.message(error)

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, list(params))
            return list(cursor.fetchall()) if cursor.description else []

    def _run(self, statement: str) -> None:
        """A statement that returns no rows (``ALTER ...``)."""
        with self.conn.cursor() as cursor:
            cursor.execute(statement)

    def describe_server(self) -> ServerInfo:
        version, name, status, database_status = self._rows(
            "SELECT version_full, instance_name, status, database_status FROM v$instance"
        )[0]
        self.version_text = str(version)
        self.version = tuple(int(part) for part in self.version_text.split(".")[:3] if part.isdigit())
        self.instance = {"name": str(name), "status": str(status), "database_status": str(database_status)}
        db_name, dbid, log_mode, cdb = self._rows("SELECT name, dbid, log_mode, cdb FROM v$database")[0]
        self.database = {
            "name": str(db_name),
            "dbid": int(dbid),
            "log_mode": str(log_mode),
            "cdb": cdb == "YES",
        }
        self.container = str(self._one("SELECT SYS_CONTEXT('USERENV', 'CON_NAME') FROM dual"))
        self.control_files = [str(n) for (n,) in self._rows("SELECT name FROM v$controlfile ORDER BY name")]
        self.datafiles = layout.datafiles(self._rows(layout.DATAFILES_SQL))
        kind = "container database" if self.database["cdb"] else "non-CDB"
        return ServerInfo("oracle", self.version_text, f"Oracle Database ({kind})")

    def server_data_directory(self) -> str | None:
        """Oracle has no one data directory: the directory of the first control file stands for
        it (``ServerEngine.datadir``); every datafile is checked on its own in preflight."""
        return str(PurePosixPath(self.control_files[0]).parent) if self.control_files else None

    @property
    def backup_controlfile(self) -> str:
        """The backup control file, as the server names it."""
        if self.settings.backup_controlfile:
            return self.settings.backup_controlfile
        return str(PurePosixPath(self.control_files[0]).parent / "splitmirror-backup.ctl")

    # -- preflight ------------------------------------------------------------------------

    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        """Everything that would make BEGIN BACKUP fail or the backup unrestorable, checked
        before anything is touched: NOARCHIVELOG (ORA-01123), privileges and views (each one
        named), a PDB instead of the root, files already in backup mode, a suspended
        instance, ASM, and files this host cannot read."""
        problems: list[PreflightProblem] = []
        if self.version < MINIMUM_VERSION:
            problems.append(
                PreflightProblem(f"Oracle {self.version_text} is not supported", "use Oracle 19c or newer")
            )
        problems += self._privilege_problems()
        if problems:
            return problems  # without the views, the other checks cannot be made
        if self.database["log_mode"] != "ARCHIVELOG":
            problems.append(
                PreflightProblem(
                    f"the database {self.database['name']} is in {self.database['log_mode']} mode, and "
                    "BEGIN BACKUP needs ARCHIVELOG (ORA-01123)",
                    "SHUTDOWN IMMEDIATE; STARTUP MOUNT; ALTER DATABASE ARCHIVELOG; ALTER DATABASE OPEN",
                )
            )
        if self.database["cdb"] and self.container != "CDB$ROOT":
            problems.append(
                PreflightProblem(
                    f"the session is connected to the pluggable database {self.container}, and backup "
                    "mode of the whole database is entered from the root",
                    "connect to the container database's own service (such as FREE or ORCLCDB) in "
                    "[database] url",
                )
            )
        active = int(self._one("SELECT COUNT(*) FROM v$backup WHERE status = 'ACTIVE'") or 0)
        if active:
            problems.append(
                PreflightProblem(
                    f"{active} datafiles are already in backup mode (another backup, or one that died)",
                    "finish that backup, or ALTER DATABASE END BACKUP when none runs",
                )
            )
        if self.instance["database_status"] != "ACTIVE" or self.instance["status"] != "OPEN":
            problems.append(
                PreflightProblem(
                    f"the instance is {self.instance['status']} and {self.instance['database_status']}",
                    "open the database (ALTER SYSTEM RESUME if it was suspended) and run the backup again",
                )
            )
        return problems + self._file_problems()

    def _privilege_problems(self) -> list[PreflightProblem]:
        """Each unreadable view, and for a plain account each missing system privilege; an
        administrative privilege (SYSBACKUP, SYSDBA) holds them all."""
        user = str(self._one("SELECT USER FROM dual"))
        problems = []
        for view, purpose in VIEWS.items():
            try:
                self._rows(f"SELECT 1 FROM {view} WHERE ROWNUM = 1")
            except oracledb.DatabaseError:
                problems.append(
                    PreflightProblem(
                        f"user {user} cannot read {view} ({purpose})",
                        f'GRANT SELECT_CATALOG_ROLE TO {user}, or connect with privilege = "sysbackup"',
                    )
                )
        if self.settings.privilege == "none":
            held = {str(p) for (p,) in self._rows("SELECT privilege FROM session_privs")}
            problems += [
                PreflightProblem(
                    f"user {user} lacks the {privilege} privilege",
                    f'GRANT {privilege} TO {user}, or grant SYSBACKUP and set privilege = "sysbackup"',
                )
                for privilege in SYSTEM_PRIVILEGES
                if privilege not in held
            ]
        return problems

    def _file_problems(self) -> list[PreflightProblem]:
        """Every datafile must be a file this host reads (through ``path_map``), and the
        backup control file's directory must be here too."""
        problems = []
        in_asm = [d.name for d in self.datafiles if not layout.on_file_system(d.name)]
        if in_asm:
            problems.append(
                PreflightProblem(
                    f"the datafile {in_asm[0]} is in an ASM disk group, and splitmirror reads files",
                    "use RMAN for databases in ASM, or move the datafiles to a filesystem on the "
                    "mirrored disk",
                )
            )
            return problems
        for datafile in self.datafiles:
            here = self.host_path(datafile.name)
            if not here.is_file():
                problems.append(
                    PreflightProblem(
                        f"the datafile {datafile.name} is not readable here as {here}",
                        "run splitmirror on the database host, as root or the oracle user, or set "
                        "[database] path_map for a server in a container",
                    )
                )
                break
        target = self.host_path(PurePosixPath(self.backup_controlfile).parent)
        if not target.is_dir():
            problems.append(
                PreflightProblem(
                    f"the backup control file's directory {PurePosixPath(self.backup_controlfile).parent} "
                    f"is not here as {target}",
                    "set [database] backup_controlfile to a server path under the primary",
                )
            )
        return problems

    def data_directory_problems(self) -> list[PreflightProblem]:
        return self._file_problems()

    # -- files ----------------------------------------------------------------------------

    def layout(self) -> list[Path]:
        """The datafiles, and what is collected after the window (the backup control file's
        place, the newest archived log), so that a destination outside the primary is refused
        before the session starts, not after the window.  Also reads, outside the window, what
        a restore needs to know of the instance (:data:`restore.FACTS`)."""
        if not self.datafiles:
            return []
        self.restore_facts = self._restore_facts()
        newest = self._rows(
            "SELECT name FROM v$archived_log WHERE name IS NOT NULL AND deleted = 'NO' "
            "AND standby_dest = 'NO' ORDER BY first_change# DESC FETCH FIRST 1 ROWS ONLY"
        )
        collected = [self.host_path(self.backup_controlfile)] + [self.host_path(str(n)) for (n,) in newest]
        return [self.host_path(d.name) for d in self.datafiles] + collected

    def _restore_facts(self) -> dict[str, Any]:
        """The instance's parameters (for the restored instance's parameter file), online log
        members and tempfiles (which a restore elsewhere renames): none of them change in a
        backup, and reading the control file while SUSPENDed would wait for RESUME."""
        parameters: dict[str, list[Any]] = {}
        for name, value, kind in self._rows(
            "SELECT name, value, type FROM v$parameter2 WHERE isdefault = 'FALSE' AND value IS NOT NULL "
            "ORDER BY name, ordinal"
        ):
            parameters.setdefault(str(name), [int(kind)]).append(str(value))
        return {
            "parameters": parameters,
            "redo_logs": [
                str(m) for (m,) in self._rows("SELECT member FROM v$logfile ORDER BY group#, member")
            ],
            "tempfiles": [str(n) for (n,) in self._rows("SELECT name FROM v$tempfile ORDER BY file#")],
        }

    def discover(self) -> list[DatabaseFile]:
        """The datafiles as :meth:`quiesce` read them just before the split (in FREEZE the
        control file cannot be read while suspended; in HOT_BACKUP they are read again now)."""
        if self._mode is Mode.HOT_BACKUP:
            self.datafiles = layout.datafiles(self._rows(layout.DATAFILES_SQL))
        return [DatabaseFile(self.host_path(d.name), d.key, "data") for d in self.datafiles]

    def freeze_paths(self, mode: Mode) -> list[Path]:
        return []  # backup mode repairs the copy, SUSPEND holds the I/O: no filesystem is frozen

    # -- the mode -------------------------------------------------------------------------

    def quiesce(self, mode: Mode) -> None:
        """HOT_BACKUP: ARCHIVE LOG CURRENT, BEGIN BACKUP.  FREEZE: BEGIN BACKUP, then what
        DISCOVER needs, then SUSPEND.  ``_in_backup``/``_suspended`` are set before each
        statement, so a statement that fails or times out still leaves :meth:`release` (which
        tolerates "nothing to end") everything it may have done."""
        self._mode = mode
        try:
            if mode is Mode.HOT_BACKUP:
                self._run("ALTER SYSTEM ARCHIVE LOG CURRENT")
            self._in_backup = True
            self._run("ALTER DATABASE BEGIN BACKUP")
            self.begin = self._begin_positions()
            if mode is Mode.FREEZE:
                self.datafiles = layout.datafiles(self._rows(layout.DATAFILES_SQL))
                self._suspended = True
                self._run("ALTER SYSTEM SUSPEND")
                status = self._one("SELECT database_status FROM v$instance")
                if status != "SUSPENDED":
                    raise BackupFailed(f"ALTER SYSTEM SUSPEND left the instance {status}, not SUSPENDED")
        except oracledb.Error as error:
            raise BackupFailed(f"Oracle refused to enter backup mode: {connection.message(error)}") from None

    def _begin_positions(self) -> dict[str, Any]:
        """The begin SCN (the oldest ``v$backup.change#``: where recovery starts) and each
        thread's current log sequence."""
        scn = self._one("SELECT MIN(change#) FROM v$backup WHERE status = 'ACTIVE'")
        if scn is None:
            raise BackupFailed("BEGIN BACKUP returned, but v$backup shows no datafile in backup mode")
        sequences = self._rows(
            "SELECT thread#, sequence# FROM v$log WHERE status = 'CURRENT' ORDER BY thread#"
        )
        return {"scn": int(scn), "sequences": {int(t): int(s) for t, s in sequences}}

    def prepare(self) -> Mapping[str, Any]:
        """What a restore needs: the database's identity, where every file was (server paths,
        and the host directories of the mapped ones), and the parameters, all read before the
        window or in QUIESCE (nothing here reads the control file while suspended)."""
        return {
            "db_name": self.database.get("name"),
            "dbid": self.database.get("dbid"),
            "sid": self.instance.get("name"),
            "cdb": self.database.get("cdb"),
            "version": self.version_text,
            "control_files": self.control_files,
            "backup_controlfile": self.backup_controlfile,
            "datafiles": [[d.file_no, d.name] for d in self.datafiles],
            **self.restore_facts,
            "directories": sorted({(k, str(v)) for k, v in self.settings.path_map.items()}),
        }

    def unquiesce(self) -> UnquiesceResult:
        """RESUME (FREEZE), END BACKUP, the end SCN, ARCHIVE LOG CURRENT, the backup control
        file, and the archived logs between the two SCNs, to be collected."""
        mode = self._mode
        try:
            if self._suspended:
                self._run("ALTER SYSTEM RESUME")
                self._suspended = False
            self._run("ALTER DATABASE END BACKUP")
            self._in_backup = False
            self._mode = None
            still = int(self._one("SELECT COUNT(*) FROM v$backup WHERE status = 'ACTIVE'") or 0)
            if still:
                raise BackupFailed(f"END BACKUP returned, but {still} datafiles are still in backup mode")
            end_scn = int(self._one("SELECT current_scn FROM v$database"))
            self._run("ALTER SYSTEM ARCHIVE LOG CURRENT")
            escaped = self.backup_controlfile.replace("'", "''")
            self._run(f"ALTER DATABASE BACKUP CONTROLFILE TO '{escaped}' REUSE")
            end_sequences = self._rows(
                "SELECT thread#, MAX(sequence#) FROM v$archived_log GROUP BY thread# ORDER BY thread#"
            )
            logs = layout.window_logs(
                layout.archived_logs(self._rows(layout.ARCHIVED_LOGS_SQL, self.begin["scn"], end_scn)),
                self.begin["scn"],
                end_scn,
                lambda name: self.host_path(name).is_file(),
            )
        except oracledb.Error as error:
            raise BackupFailed(f"Oracle refused to end the backup: {connection.message(error)}") from None
        except layout.LogsMissing as missing:
            raise BackupFailed(str(missing)) from None
        collected = [DatabaseFile(self.host_path(log.name), log.key, "archived-log") for log in logs]
        collected.append(
            DatabaseFile(
                self.host_path(self.backup_controlfile), (layout.BACKUP_CONTROLFILE,), "backup-controlfile"
            )
        )
        redo = {
            "begin_scn": self.begin["scn"],
            "end_scn": end_scn,
            "begin_sequences": self.begin["sequences"],
            "end_sequences": {int(t): int(s) for t, s in end_sequences},
            "archived_logs": [log.name for log in logs],
        }
        label = f"oracle {'freeze (suspended)' if mode is Mode.FREEZE else 'hot-backup'} (backup mode)"
        return UnquiesceResult(label=label, redo_range=redo, collected_files=collected)

    def release(self, mode: Mode | None) -> None:
        """RESUME what quiesce suspended, END BACKUP what it put in backup mode, on the
        session's connection; "nothing to end" is fine (quiesce stopped before it took hold)."""
        if self._suspended:
            _tolerant(self._run, "ALTER SYSTEM RESUME")
            self._suspended = False
        if self._in_backup:
            _tolerant(self._run, "ALTER DATABASE END BACKUP")
            self._in_backup = False

    def abort(self) -> None:
        """Release on the session's connection; when that fails (a statement that timed out
        leaves it unusable), on a fresh one: closing the connection, which ends every other
        engine's hold, ends neither backup mode nor SUSPEND."""
        held = self._in_backup or self._suspended
        try:
            super().abort()
        finally:
            if held and (self._in_backup or self._suspended or self._conn is None):
                self._in_backup = self._suspended = False
                try:
                    type(self).emergency_release(self.url, self.settings, self.emergency_state())
                except (oracledb.Error, connection.ConnectionProblem) as error:
                    raise BackupFailed(
                        f"Oracle could not be released ({connection.message(error)}): the datafiles may "
                        "still be in backup mode and the instance suspended; as SYSDBA run ALTER SYSTEM "
                        "RESUME, then ALTER DATABASE END BACKUP"
                    ) from None

    def emergency_state(self) -> Mapping[str, Any] | None:
        """Asked before QUIESCE and after: from then on a dead session may have left backup
        mode or SUSPEND behind, whatever it got to (:meth:`emergency_release` looks)."""
        return {"engine": "oracle", "holds": "backup mode, and in FREEZE the instance suspended"}

    @classmethod
    def emergency_release(
        cls, url: str, options: pydantic.BaseModel, state: Mapping[str, Any] | None
    ) -> None:
        """On a fresh connection: RESUME a suspended instance (I/O first: END BACKUP writes the
        datafile headers), then END BACKUP while any datafile is in backup mode.  Idempotent;
        preflight refused to start while another backup held files in backup mode, so any
        found now are the session's."""
        if state is None or not isinstance(options, OracleOptions):
            return
        conn = connection.connect(
            url,
            privilege=options.privilege,
            password_file=options.password_file,
            timeout=options.connect_timeout,
            call_timeout=options.statement_timeout,
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT database_status FROM v$instance")
                row = cursor.fetchone()
                if row is not None and row[0] == "SUSPENDED":
                    _tolerant(cursor.execute, "ALTER SYSTEM RESUME")
                    _wait_active(cursor)
                cursor.execute("SELECT COUNT(*) FROM v$backup WHERE status = 'ACTIVE'")
                row = cursor.fetchone()
                if row is not None and int(row[0]):
                    _tolerant(cursor.execute, "ALTER DATABASE END BACKUP")
        finally:
            conn.close()

    @classmethod
    def prepare_restore(cls, directory: Path, manifest: Mapping[str, Any]) -> list[RestoreStep]:
        return restore.prepare(directory, manifest)


def _tolerant(run: Any, statement: str) -> None:
    """Run ``statement``; Oracle saying there is nothing to end (:data:`NOTHING_TO_END`) is success."""
    try:
        run(statement)
    except oracledb.DatabaseError as error:
        if connection.code(error) not in NOTHING_TO_END:
            raise


def _wait_active(cursor: Any, timeout: float = 10.0) -> None:
    """Until ``v$instance`` says ACTIVE again after RESUME (at most ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cursor.execute("SELECT database_status FROM v$instance")
        row = cursor.fetchone()
        if row is None or row[0] == "ACTIVE":
            return
        time.sleep(0.1)
