"""The MySQL / MariaDB engine (docs/databases/mysql.md): one engine, two flavours.

InnoDB cannot be repaired from a copy taken file by file: its redo log is circular and records
checkpoints the copied pages may not reflect.  So in **both** modes SPLIT freezes every
filesystem holding the data directory, InnoDB's files and the binary logs, and the mirror is
an atomic crash image that a plain server start recovers.  The modes differ in what the
database does until that instant:

* **FREEZE** holds commits for the window: MariaDB ``BACKUP STAGE`` up to ``BLOCK_COMMIT``
  (or ``FLUSH TABLES WITH READ LOCK``, ``freeze_lock = "ftwrl"``), MySQL ``FLUSH TABLES WITH READ
  LOCK``.  The binary log position read under that lock is exactly the image's.
* **HOT_BACKUP** blocks only DDL (MariaDB ``BACKUP STAGE BLOCK_DDL``; MySQL ``LOCK INSTANCE FOR
  BACKUP``): transactions commit until the filesystem freeze, which lasts milliseconds.  The
  position is read just before the split, so the image may hold a few later commits; the end of
  the restored binary log is exact (:mod:`.binlog_index`).  MySQL's backup lock does not hold
  DML on tables outside InnoDB's redo log (MyISAM, ARCHIVE, CSV): when there are any, they
  alone are also locked, ``FLUSH TABLES t1, t2 WITH READ LOCK`` under the instance lock, as
  MySQL's manual allows, so they are closed and unchanging in the image while InnoDB's
  writers continue.  MySQL's redo log archiving is not used: mysqld cannot replay the archive,
  the atomic image does not need it, and a second archive in the same directory fails
  (``File exists``), so it would only turn the next session into a failure.

Every lock is taken through :mod:`.locks`: bounded by ``lock_timeout`` and a watchdog, never
leaving the server queued behind it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import pymysql

from splitmirror.api import (
    DatabaseFile,
    DrillCopy,
    Duration,
    Mode,
    PreflightError,
    PreflightProblem,
    RestoreStep,
    ServerEngine,
    ServerInfo,
    ServerOptions,
    UnquiesceResult,
)

from . import drill, layout, locks, restore
from .connection import UrlError, connect
from .drill import message as _message

MARIADB, MYSQL = "MariaDB", "MySQL"


class MysqlOptions(ServerOptions):
    """``path_map`` (``"/var/lib/mysql" = "/srv/mysql"``) and ``connect_timeout``, and:"""

    #: An option file whose ``[client]`` group holds the password (default ``~/.my.cnf``).
    option_file: Path | None = None
    #: How long one lock statement may wait before the session gives up and releases the server.
    lock_timeout: Duration = 5.0
    #: ``check`` and INIT refuse while a statement has been running this long (it would block the lock).
    long_query_threshold: Duration = 10.0
    #: MariaDB's FREEZE lock: ``BACKUP STAGE`` (default) or ``FLUSH TABLES WITH READ LOCK``.
    freeze_lock: Literal["backup-stage", "ftwrl"] = "backup-stage"


class MysqlEngine(ServerEngine[locks.Connection, MysqlOptions]):
    name = "mysql"
    url_schemes = ("mysql", "mariadb")
    secret_variables = ("MYSQL_PWD",)
    options_model = MysqlOptions
    server_name = "MySQL/MariaDB"
    password_sources = "MYSQL_PWD or the [client] group of an option file (option_file, or ~/.my.cnf)"
    driver_errors = (pymysql.Error,)
    frozen_files = "the data directory, InnoDB's files and the binary logs"
    freeze_reason = "InnoDB needs an atomic split, so both modes freeze the data filesystem"

    def __init__(self, url: str, options: pydantic.BaseModel) -> None:
        super().__init__(url, options)
        #: What quiesce took, as the statements that release it, in order.
        self._held: list[str] = []
        #: Tables outside InnoDB locked under MySQL's instance lock (HOT_BACKUP).
        self.locked_tables: list[str] = []
        self.flavour = ""
        self.version: tuple[int, ...] = ()
        self.variables: dict[str, Any] = {}
        self.positions: dict[str, Any] = {}

    # -- connection and facts -------------------------------------------------------------

    def open_connection(self) -> locks.Connection:
        try:
            return connect(
                self.url,
                option_file=self.settings.option_file,
                timeout=self.settings.connect_timeout,
                database="",
            )
        except UrlError as error:
            raise PreflightError(str(error)) from None

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params or None)
            return list(cursor.fetchall())

    def error_message(self, error: Exception) -> str:
        return _message(error)

    def describe_server(self) -> ServerInfo:
        version, comment = self._rows("SELECT VERSION(), @@version_comment")[0]
        self.flavour = MARIADB if self._is_mariadb(str(version), str(comment)) else MYSQL
        self.version = tuple(int(n) for n in re.findall(r"\d+", str(version))[:3])
        names = ["datadir", *restore.RECORDED]
        if self.flavour == MYSQL:
            names += list(restore.RECORDED_MYSQL)
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(f"@@{name}" for name in names))
            self.variables = dict(zip(names, cursor.fetchone() or (), strict=False))
        comment = str(comment or "").strip("() ")  # Debian's build says "(Debian)"
        return ServerInfo("mysql", str(version), f"{self.flavour} ({comment})" if comment else self.flavour)

    def _is_mariadb(self, version: str, comment: str) -> bool:
        """VERSION() can be overridden, so a MariaDB-only variable decides (reference 3.3)."""
        if "mariadb" in version.lower() or "mariadb" in comment.lower():
            return True
        try:
            self._one("SELECT @@aria_block_size")
            return True
        except pymysql.err.OperationalError:
            return False

    def _server_dir(self, name: str) -> Path | None:
        """A directory variable, relative values taken from the data directory as the server does."""
        value = self.variables.get(name)
        if not value:
            return None
        return Path(os.path.normpath(os.path.join(str(self.variables["datadir"]), str(value))))

    def server_data_directory(self) -> str | None:
        value = self.variables.get("datadir")
        return None if value is None else str(value)

    def server_dirs(self) -> list[Path]:
        """Every server directory holding the database's files: data, InnoDB's, binary logs."""
        server_dirs = [Path(str(self.variables["datadir"]))]
        for name in ("innodb_data_home_dir", "innodb_log_group_home_dir", "innodb_undo_directory"):
            found = self._server_dir(name)
            if found is not None:
                server_dirs.append(found)
        if self.variables.get("log_bin_basename"):
            server_dirs.append(Path(str(self.variables["log_bin_basename"])).parent)
        return server_dirs

    def roots(self) -> list[Path]:
        """The host directories of :meth:`server_dirs`, none inside another."""
        roots: list[Path] = []
        for server_dir in self.server_dirs():
            host = self.host_path(server_dir)
            if not any(host == r or host.is_relative_to(r) for r in roots):
                roots = [r for r in roots if not r.is_relative_to(host)] + [host]
        return roots

    @property
    def binlog_basename(self) -> str | None:
        base = self.variables.get("log_bin_basename")
        return str(self.host_path(str(base))) if base else None

    # -- preflight ------------------------------------------------------------------------

    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        problems: list[PreflightProblem] = []
        minimum = (10, 4, 1) if self.flavour == MARIADB else (8, 0, 17)
        if self.version < minimum:
            problems.append(
                PreflightProblem(
                    f"{self.flavour} {'.'.join(map(str, self.version))} is not supported",
                    f"use {self.flavour} {'.'.join(map(str, minimum))} or newer",
                )
            )
        problems += self._privilege_problems(mode)
        problems += self.data_directory_problems()
        problems += self._long_query_problems()
        return problems + self.freeze_problems(mode)

    def identity_problems(self) -> list[PreflightProblem]:
        """The data directory here is the running server's, not an old copy or another server's
        (a config left pointing at one quiesced the live server and failed late).  MySQL: the
        server's UUID against its ``auto.cnf``; MariaDB, which keeps no UUID file: the binary
        log the server is writing must be here and at least as long as the server says."""
        found: str | None = None
        try:
            if self.flavour == MYSQL:
                live = str(self._one("SELECT @@server_uuid"))
                text = (self.datadir / "auto.cnf").read_text()
                if f"server-uuid={live}" not in text.replace(" ", ""):
                    found = f"another server's files (its auto.cnf does not name server {live})"
            elif self.binlog_basename:
                status = self._rows("SHOW BINLOG STATUS")
                if status:
                    name, position = str(status[0][0]), int(status[0][1])
                    current = Path(self.binlog_basename).parent / name
                    if not current.is_file() or current.stat().st_size < position:
                        found = (
                            f"an older copy or another server's files ({current} is not the binary log "
                            "the server is writing)"
                        )
        except (OSError, pymysql.Error):
            return []  # unreadable files are reported above; without the facts, no comparison
        if found is None:
            return []
        return [self.foreign_data_directory(found)]

    def _grants(self) -> set[str]:
        """Global privileges of the current account (``ALL PRIVILEGES`` kept as such)."""
        privileges: set[str] = set()
        for (line,) in self._rows("SHOW GRANTS"):
            match = re.match(r"GRANT (.+?) ON \*\.\* TO", str(line))
            if match:
                privileges |= {p.strip().upper() for p in match[1].split(",")}
        return privileges

    def _privilege_problems(self, mode: Mode) -> list[PreflightProblem]:
        """RELOAD always (FTWRL, BACKUP STAGE).  MySQL's HOT_BACKUP needs BACKUP_ADMIN for the
        instance lock and ``log_status``: without it the session is refused rather than quietly
        run under FTWRL, which would hold every writer the DBA chose this mode to keep running
        (``mode = "freeze"`` is that choice, made openly).  With tables outside InnoDB it also
        needs LOCK TABLES, for ``FLUSH TABLES ... WITH READ LOCK`` on them."""
        needed = ["RELOAD"]
        if self.flavour == MYSQL and mode is Mode.HOT_BACKUP:
            needed.append("BACKUP_ADMIN")
            if self._unlogged_tables():
                needed.append("LOCK TABLES")
        granted = self._grants()
        if "ALL PRIVILEGES" in granted:
            return []
        account = str(self._one("SELECT CURRENT_USER()"))
        user, _, host = account.rpartition("@")
        return [
            PreflightProblem(
                f"account {account} lacks the {privilege} privilege"
                + (" (HOT_BACKUP's LOCK INSTANCE FOR BACKUP)" if privilege == "BACKUP_ADMIN" else ""),
                f"GRANT {privilege} ON *.* TO '{user}'@'{host}'"
                + (', or use mode = "freeze"' if privilege == "BACKUP_ADMIN" else ""),
            )
            for privilege in needed
            if privilege not in granted
        ]

    def _unlogged_tables(self) -> list[str]:
        """MySQL tables whose changes InnoDB's redo log does not cover, quoted for SQL: what
        ``LOCK INSTANCE FOR BACKUP`` lets writers change.  Engines without files (MEMORY,
        BLACKHOLE, FEDERATED, the server's own) have nothing to copy; the log tables cannot be
        locked and are not written unless general or slow logging goes to tables."""
        rows = self._rows(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_TYPE = 'BASE TABLE' AND ENGINE IS NOT NULL AND ENGINE NOT IN "
            f"({', '.join(['%s'] * len(_NO_FILES))}) "
            "AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema') "
            "AND NOT (TABLE_SCHEMA = 'mysql' AND TABLE_NAME IN ('general_log', 'slow_log')) "
            "ORDER BY TABLE_SCHEMA, TABLE_NAME",
            *_NO_FILES,
        )
        return [f"{_quoted(schema)}.{_quoted(name)}" for schema, name in rows]

    def _long_query_problems(self) -> list[PreflightProblem]:
        threshold = self.settings.long_query_threshold
        running = locks.other_sessions(
            self.conn, locks.connection_id(self.conn), min_seconds=threshold, busy_only=True
        )
        return [
            PreflightProblem(
                f"{described} has been running for over {threshold:g} s, and the backup lock would queue "
                "behind it and stall every writer",
                "wait for it to finish, end it (KILL), or raise [database] long_query_threshold",
            )
            for described in running
        ]

    # -- files ----------------------------------------------------------------------------

    def layout(self) -> list[Path]:
        if "datadir" not in self.variables:
            return []
        return [path for _root, path in layout.walk(self.roots(), self.binlog_basename)]

    def _space_ids(self) -> dict[Path, int]:
        """``.ibd`` path on this host → InnoDB space id, from the server's dictionary."""
        table = "INNODB_SYS_TABLESPACES" if self.flavour == MARIADB else "INNODB_TABLESPACES"
        try:
            rows = self._rows(f"SELECT NAME, SPACE FROM information_schema.{table} WHERE SPACE > 0")
        except pymysql.Error:
            return {}  # ordering falls back to page 0; the backup itself does not depend on it
        return {self.datadir / f"{name}.ibd": int(space) for name, space in rows}

    def discover(self) -> list[DatabaseFile]:
        files = []
        space_ids = self._space_ids()
        for root, path in layout.walk(self.roots(), self.binlog_basename):
            key = layout.logical_key(root, path, self.binlog_basename, space_ids)
            files.append(DatabaseFile(path, key, layout.role(key)))
        return files

    def freeze_paths(self, mode: Mode) -> list[Path]:
        return self.roots() if "datadir" in self.variables else []

    # -- the mode -------------------------------------------------------------------------

    def _take(self, statement: str) -> None:
        locks.take(self.conn, statement, self.settings.lock_timeout, self.open_connection)

    def holds_writers(self, mode: Mode) -> bool:
        """HOT_BACKUP holds the writers of the tables outside InnoDB it locked, for the window."""
        return mode is Mode.FREEZE or bool(self.locked_tables)

    def quiesce(self, mode: Mode) -> None:
        """Each lock's release is noted before the lock is tried, so a lock statement that times
        out or fails still leaves :meth:`release` everything taken before it."""
        self._mode = mode
        self.locked_tables = []
        if self.flavour == MARIADB and not (mode is Mode.FREEZE and self.settings.freeze_lock == "ftwrl"):
            self._held = ["BACKUP STAGE END"]
            stages = ["START", "FLUSH", "BLOCK_DDL"] + (["BLOCK_COMMIT"] if mode is Mode.FREEZE else [])
            for stage in stages:
                self._take(f"BACKUP STAGE {stage}")
        elif mode is Mode.FREEZE:
            self._held = ["UNLOCK TABLES"]
            self._take("FLUSH TABLES WITH READ LOCK")
        else:
            self._held = ["UNLOCK INSTANCE"]
            self._take("LOCK INSTANCE FOR BACKUP")
            # Listed under the lock, which refuses the file creation any new MyISAM table needs.
            tables = self._unlogged_tables()
            if tables:
                self._held.insert(0, "UNLOCK TABLES")
                self._take(f"FLUSH TABLES {', '.join(tables)} WITH READ LOCK")
                self.locked_tables = tables
        if mode is Mode.FREEZE:
            self.positions = self._positions(exact=True)

    def _positions(self, *, exact: bool) -> dict[str, Any]:
        """Binary log file/position and GTID set, read under the lock."""
        positions: dict[str, Any] = {"exact": exact}
        try:
            if self.flavour == MARIADB:
                status = self._rows("SHOW BINLOG STATUS")
                if status:
                    positions.update(binlog_file=status[0][0], binlog_position=int(status[0][1]))
                positions["gtid_binlog_pos"] = self._one("SELECT @@global.gtid_binlog_pos")
            else:
                positions.update(self._mysql_positions())
        except pymysql.Error as error:
            positions["error"] = _message(error)  # positions are for PITR; the image is still good
        return positions

    def _mysql_positions(self) -> dict[str, Any]:
        """``performance_schema.log_status``: binary log file and position, GTID set and InnoDB's
        LSN, read together while the server briefly holds its logs (BACKUP_ADMIN).  FREEZE's
        account may lack BACKUP_ADMIN; under FTWRL nothing commits, so the plain status is as
        exact (REPLICATION CLIENT)."""
        try:
            local, engines = self._rows("SELECT LOCAL, STORAGE_ENGINES FROM performance_schema.log_status")[0]
        except pymysql.Error:
            if self._mode is not Mode.FREEZE:
                raise
            status = self._rows("SHOW BINARY LOG STATUS" if self.version >= (8, 2) else "SHOW MASTER STATUS")
            found: dict[str, Any] = {"gtid_executed": self._one("SELECT @@global.gtid_executed")}
            if status:
                found.update(binlog_file=status[0][0], binlog_position=int(status[0][1]))
            return found
        data = json.loads(local) if local else {}
        innodb = (json.loads(engines) if engines else {}).get("InnoDB", {})
        found = {
            "binlog_file": data.get("binary_log_file"),
            "binlog_position": data.get("binary_log_position"),
            "gtid_executed": data.get("gtid_executed"),
            "innodb_lsn": innodb.get("LSN"),
            "innodb_lsn_checkpoint": innodb.get("LSN_checkpoint"),
        }
        return {name: value for name, value in found.items() if value is not None}

    def prepare(self) -> Mapping[str, Any]:
        if self._mode is Mode.HOT_BACKUP:
            # Commits continue until the filesystem freeze, so this is read as late as possible.
            self.positions = self._positions(exact=False)
        return {
            "flavour": self.flavour,
            "datadir": self.variables.get("datadir"),
            "datadir_host": str(self.datadir),
            "binlog_basename": self.variables.get("log_bin_basename"),
            "positions": self.positions,
            # MySQL HOT_BACKUP: the tables outside InnoDB held by FLUSH TABLES ... WITH READ LOCK.
            "locked_tables": self.locked_tables,
            # What the restored copy must start with (.restore), and where each directory was.
            "server": {name: self.variables.get(name) for name in self.variables if name != "datadir"},
            "directories": sorted({(str(d), str(self.host_path(d))) for d in self.server_dirs()}),
        }

    def unquiesce(self) -> UnquiesceResult:
        mode, self._mode = self._mode, None
        self.release(mode)
        label = f"{self.flavour.lower()} {'freeze' if mode is Mode.FREEZE else 'hot-backup'} (crash image)"
        return UnquiesceResult(label=label, redo_range=dict(self.positions))

    def release(self, mode: Mode | None) -> None:
        """Whatever :meth:`quiesce` took, in either mode, last taken first; closing the
        connection releases it too."""
        held, self._held = self._held, []
        for statement in held:
            self._one(statement)

    @classmethod
    def prepare_restore(cls, directory: Path, manifest: Mapping[str, Any]) -> list[RestoreStep]:
        """Remove what interrupted ALTERs leave (``#sql*``; the backup skips them, but a restore
        into an old directory may meet some); the steps that start the copy (:mod:`.restore`)."""
        for leftover in directory.rglob("#sql*"):
            if leftover.is_file():
                leftover.unlink()
        return restore.restore_steps(directory, manifest)

    # -- drills (``splitmirror drill``, :mod:`.drill`) --------------------------------------

    drill_port = 3306

    @classmethod
    def drill_environment(cls, port: int, scratch: Path) -> Mapping[str, str]:
        """The port, socket and pid file for the host route's server start, in ``scratch``
        (:func:`.drill.environment`)."""
        return drill.environment(port, scratch)

    @classmethod
    def drill_check(cls, copy: DrillCopy) -> list[str]:
        """Wait for the copy's crash recovery, ``CHECK TABLE`` every table, compare GTIDs, run
        the query (:func:`.drill.check`).  No ``drill_stop``: the host route's server is a
        ``start`` step, whose process group the drill ends, and a container is removed."""
        return drill.check(copy)


#: Engines whose tables need no lock beside the instance lock: InnoDB (its redo log is in the
#: atomic image), and those with no files to copy (in memory, remote, the server's own).
_NO_FILES = (
    "InnoDB",
    "MEMORY",
    "BLACKHOLE",
    "FEDERATED",
    "PERFORMANCE_SCHEMA",
    "TempTable",
    "ndbcluster",
    "ndbinfo",
)


def _quoted(name: str) -> str:
    return "`" + str(name).replace("`", "``") + "`"
