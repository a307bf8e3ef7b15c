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

After the split, in either mode: ``v$backup`` checked all NOT ACTIVE, the end SCN read, no
NOLOGGING change since the begin SCN (``v$datafile.unrecoverable_change#``), ``ARCHIVE LOG
CURRENT`` (the log holding END BACKUP is archived), ``ALTER DATABASE BACKUP CONTROLFILE TO '...'
REUSE``, and the archived logs from the begin SCN to the end SCN listed (``v$archived_log``);
they and the backup control file are collected from the primary after the window
(:mod:`.layout`).  A restore recovers with ``RECOVER DATABASE USING BACKUP CONTROLFILE UNTIL
CANCEL`` and opens with RESETLOGS (:mod:`.restore`).

Backup mode and SUSPEND outlive the session that entered them, unlike every other engine's hold:
:meth:`OracleEngine.abort` falls back to a spare connection, then to fresh ones, when the
session's own cannot release (:mod:`.release`), and :meth:`OracleEngine.emergency_release` is
what the watchdog runs when the session's process dies.  Neither mode freezes a filesystem:
Oracle's I/O is held by Oracle.
"""

from __future__ import annotations

import contextlib
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

from . import checks, connection, layout, release, restore


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
    #: Refuse a database without FORCE LOGGING: a NOLOGGING operation during the backup writes
    #: blocks no redo describes, which the restored copy holds corrupt.
    require_force_logging: bool = True


#: ``v$session.module`` of the session's connection and of its spare (a DBA, or a test killing
#: the session's connection, tells them apart).
SESSION_MODULE, SPARE_MODULE = "splitmirror", "splitmirror spare"


class BackupFailed(SplitmirrorError):
    """Oracle refused a step of the backup."""


class OracleEngine(ServerEngine[oracledb.Connection, OracleOptions]):
    name = "oracle"
    url_schemes = connection.SCHEMES
    secret_variables = (connection.PASSWORD_VARIABLE,)
    options_model = OracleOptions
    server_name = "Oracle"
    password_sources = connection.PASSWORD_SOURCES
    driver_errors = (oracledb.Error,)
    frozen_files = "the datafiles"

    def __init__(self, url: str, options: pydantic.BaseModel) -> None:
        super().__init__(url, options)
        self.version: tuple[int, ...] = ()
        self.version_text = ""
        self.user = ""
        self.container = ""
        #: ``v$instance``: name, status, database_status (empty when unreadable).
        self.instance: dict[str, str] = {}
        #: What :meth:`read_facts` found: ``v$database``, the control files, the datafiles.
        self.database: dict[str, Any] = {}
        self.control_files: list[str] = []
        self.datafiles: list[layout.Datafile] = []
        #: What a restore needs that the files do not say, read outside the window (:meth:`layout`).
        self.restore_facts: dict[str, Any] = {}
        #: A second connection opened before the window: the release's fallback needs no login.
        self._spare: oracledb.Connection | None = None
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
        """Only what any account reads and a suspended instance answers (the version the login
        reported, ``v$instance`` if readable): preflight must be able to say what is wrong."""
        self.conn.module = SESSION_MODULE
        self.version_text = str(self.conn.version)
        self.version = tuple(int(part) for part in self.version_text.split(".")[:3] if part.isdigit())
        self.user = str(self._one("SELECT USER FROM dual"))
        self.container = str(self._one("SELECT SYS_CONTEXT('USERENV', 'CON_NAME') FROM dual"))
        try:
            name, status, database_status = self._rows(
                "SELECT instance_name, status, database_status FROM v$instance"
            )[0]
            self.instance = {
                "name": str(name),
                "status": str(status),
                "database_status": str(database_status),
            }
        except oracledb.DatabaseError:
            self.instance = {}  # no SELECT_CATALOG_ROLE: preflight names it
        return ServerInfo("oracle", self.version_text, "Oracle Database")

    def read_facts(self) -> None:
        """``v$database``, the control files and the datafiles: views read from the control
        file, so only once preflight knows the instance is not suspended and they are readable."""
        if self.database:
            return
        name, dbid, log_mode, cdb, force_logging = self._rows(
            "SELECT name, dbid, log_mode, cdb, force_logging FROM v$database"
        )[0]
        self.database = {
            "name": str(name), "dbid": int(dbid), "log_mode": str(log_mode), "cdb": cdb == "YES",
            "force_logging": str(force_logging),
        }  # fmt: skip
        self.control_files = [str(n) for (n,) in self._rows("SELECT name FROM v$controlfile ORDER BY name")]
        self.datafiles = layout.datafiles(self._rows(layout.DATAFILES_SQL))

    def server_data_directory(self) -> str | None:
        """Oracle has no one data directory: the directory of the first control file stands for
        it (``ServerEngine.datadir``); every datafile is checked on its own in preflight."""
        return str(PurePosixPath(self.control_files[0]).parent) if self.control_files else None

    @property
    def backup_controlfile(self) -> str:
        """The backup control file, as the server names it."""
        if self.settings.backup_controlfile:
            return self.settings.backup_controlfile
        self.read_facts()
        return str(PurePosixPath(self.control_files[0]).parent / "splitmirror-backup.ctl")

    # -- preflight ------------------------------------------------------------------------

    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        """:mod:`.checks`: NOARCHIVELOG (ORA-01123), FORCE LOGGING, privileges and views (each
        named), a PDB instead of the root, files already in backup mode, a suspended instance,
        ASM, and files this host cannot read; nothing is changed."""
        return checks.problems(self, mode)

    # -- files ----------------------------------------------------------------------------

    def layout(self) -> list[Path]:
        """The datafiles, and what is collected after the window (the backup control file's
        place, the newest archived log), so that a destination outside the primary is refused
        before the session starts, not after the window.  Also reads, outside the window, what
        a restore needs to know of the instance, and opens the spare connection the release
        falls back on (:mod:`.release`): before the window (INIT's checks call this too)."""
        if not self.datafiles:
            return []
        self.restore_facts = self._restore_facts()
        if self._spare is None:
            self._spare = self._open_spare()
        newest = self._rows(
            "SELECT name FROM v$archived_log WHERE name IS NOT NULL AND deleted = 'NO' "
            "AND standby_dest = 'NO' ORDER BY first_change# DESC, dest_id FETCH FIRST 1 ROWS ONLY"
        )
        collected = [self.host_path(self.backup_controlfile)] + [self.host_path(str(n)) for (n,) in newest]
        return [self.host_path(d.name) for d in self.datafiles] + collected

    def _restore_facts(self) -> dict[str, Any]:
        """The instance's parameters (for the restored instance's parameter file), online log
        members and tempfiles (which a restore elsewhere renames): none of them change in a
        backup, and reading the control file while SUSPENDed would wait for RESUME."""
        parameters: dict[str, list[Any]] = {}
        for name, value, kind in self._rows(
            "SELECT name, value, type FROM v$parameter2 WHERE isdefault = 'FALSE' ORDER BY name, ordinal"
        ):
            parameters.setdefault(str(name), [int(kind)]).append("" if value is None else str(value))
        return {
            "parameters": parameters,
            "redo_logs": [
                str(m) for (m,) in self._rows("SELECT member FROM v$logfile ORDER BY group#, member")
            ],
            "tempfiles": [str(n) for (n,) in self._rows("SELECT name FROM v$tempfile ORDER BY file#")],
        }

    def _open_spare(self) -> oracledb.Connection | None:
        """The spare connection, or None when it cannot be had (the release then logs in
        afresh, which Oracle may hold while the instance is suspended)."""
        try:
            spare = self.open_connection()
        except (PreflightError, oracledb.Error):
            return None
        spare.module = SPARE_MODULE
        return spare

    def _refresh_spare(self) -> None:
        """At QUIESCE: a spare that died during a long SYNC is opened again (a round trip when
        it lives, a login when it did not)."""
        if self._spare is None:
            return
        try:
            self._spare.ping()
        except oracledb.Error:
            with contextlib.suppress(oracledb.Error):
                self._spare.close()
            self._spare = self._open_spare()

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
        self._refresh_spare()
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
        """RESUME (FREEZE), END BACKUP, the end SCN, a check that no NOLOGGING change slipped
        in, ARCHIVE LOG CURRENT, the backup control file, and the archived logs between the
        two SCNs, to be collected."""
        mode = self._mode
        try:
            self.release(mode)
            self._mode = None
            still = int(self._one("SELECT COUNT(*) FROM v$backup WHERE status = 'ACTIVE'") or 0)
            if still:
                raise BackupFailed(f"END BACKUP returned, but {still} datafiles are still in backup mode")
            end_scn = int(self._one("SELECT current_scn FROM v$database"))
            unrecoverable = self._one(
                "SELECT MIN(name) FROM v$datafile WHERE unrecoverable_change# >= :1", self.begin["scn"]
            )
            if unrecoverable:
                raise BackupFailed(
                    f"a NOLOGGING operation changed {unrecoverable} during the backup, and no redo can "
                    "rebuild those blocks from it; ALTER DATABASE FORCE LOGGING, then back up again"
                )
            self._run("ALTER SYSTEM ARCHIVE LOG CURRENT")
            escaped = self.backup_controlfile.replace("'", "''")
            self._run(f"ALTER DATABASE BACKUP CONTROLFILE TO '{escaped}' REUSE")
            end_sequences = self._rows(
                "SELECT thread#, MAX(sequence#) FROM v$archived_log "
                "WHERE resetlogs_change# = (SELECT resetlogs_change# FROM v$database) "
                "GROUP BY thread# ORDER BY thread#"
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
        label = f"oracle {'freeze, suspended' if mode is Mode.FREEZE else 'hot-backup'} in backup mode"
        return UnquiesceResult(label=label, redo_range=redo, collected_files=collected)

    def release(self, mode: Mode | None) -> None:
        """RESUME what quiesce suspended, END BACKUP what it put in backup mode, on the
        session's connection ("nothing to end" is fine: quiesce stopped before it took hold);
        each flag is cleared once its statement went through."""
        with self.conn.cursor() as cursor:
            if self._suspended:
                cursor.execute("ALTER SYSTEM RESUME")
                self._suspended = False
            if self._in_backup:
                release.tolerant(cursor, "ALTER DATABASE END BACKUP")
                self._in_backup = False

    def abort(self) -> None:
        """Release on the session's connection; when that fails (a statement that timed out
        leaves it unusable, or the server killed it), on the spare one; when that fails too, on
        a fresh one (:mod:`.release`).  Closing a connection, which ends every other engine's
        hold, ends neither backup mode nor SUSPEND."""
        if not (self._in_backup or self._suspended):
            super().abort()
            return
        try:
            super().abort()  # release(); a driver error drops the connection instead
        finally:
            if self._in_backup or self._suspended:
                self._fall_back()

    def _fall_back(self) -> None:
        reasons = []
        spare, self._spare = self._spare, None
        if spare is not None:
            try:
                with spare.cursor() as cursor:
                    release.end_everything(cursor, min(self.settings.statement_timeout, 10.0))
                self._in_backup = self._suspended = False
                return
            except (oracledb.Error, release.ReleaseFailed) as error:
                reasons.append(connection.message(error))
            finally:
                spare.close()
        try:
            type(self).emergency_release(self.url, self.settings, self.emergency_state())
            self._in_backup = self._suspended = False
        except (oracledb.Error, connection.ConnectionProblem, release.ReleaseFailed) as error:
            reasons.append(connection.message(error))
            raise BackupFailed(
                f"Oracle could not be released ({'; '.join(reasons)}): the datafiles may still be in "
                "backup mode and the instance suspended; as SYSDBA run ALTER SYSTEM RESUME, then ALTER "
                "DATABASE END BACKUP"
            ) from None

    def close(self) -> None:
        try:
            super().close()
        finally:
            spare, self._spare = self._spare, None
            if spare is not None:
                spare.close()

    def emergency_state(self) -> Mapping[str, Any] | None:
        """Asked before QUIESCE and after: from then on a dead session may have left backup
        mode or SUSPEND behind, whatever it got to (:meth:`emergency_release` looks)."""
        return {"engine": "oracle", "holds": "backup mode, and in FREEZE the instance suspended"}

    @classmethod
    def emergency_release(
        cls, url: str, options: pydantic.BaseModel, state: Mapping[str, Any] | None
    ) -> None:
        """On a fresh connection, its login bounded by ``connect_timeout`` and retried for up to
        ``statement_timeout`` (:func:`.release.emergency`):
        RESUME, END BACKUP while any datafile is in backup mode, and the check that nothing is
        held.  Idempotent; preflight refused to start while another backup held files in backup
        mode, so any found now are the session's."""
        if state is None or not isinstance(options, OracleOptions):
            return
        release.emergency(
            url,
            privilege=options.privilege,
            password_file=options.password_file,
            login_timeout=options.connect_timeout,
            call_timeout=options.statement_timeout,
            deadline=options.statement_timeout,
        )

    @classmethod
    def prepare_restore(cls, directory: Path, manifest: Mapping[str, Any]) -> list[RestoreStep]:
        return restore.prepare(directory, manifest)
