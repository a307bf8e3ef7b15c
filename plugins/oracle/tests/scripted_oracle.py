"""A scripted stand-in for an Oracle instance, for the tests that run where Oracle cannot.

**This is not Oracle.**  It answers the engine's own queries from a little state (log mode,
backup mode, a suspended flag, SCNs, archived logs written as files) and records every
statement, so that tests can check *what the engine says to Oracle and in which order*, what it
does with the answers (preflight's sentences, the archived logs it collects, the restore it
writes), and that it reads no control-file view while the instance is suspended (Oracle would
make such a query wait for RESUME; here it fails the test).  Whether Oracle accepts those
statements and recovers the result is proven only by the container tests, where the image can
be pulled (docs/databases/oracle.md, "What is proven where").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import oracledb
from oracledb import errors

from splitmirror_oracle import connection

#: Views whose rows come from the control file or datafile headers: Oracle does I/O to answer.
CONTROL_FILE_VIEWS = ("v$datafile", "v$backup", "v$archived_log", "v$log", "v$controlfile", "v$tempfile",
                      "v$logfile", "v$database", "v$tablespace")  # fmt: skip


def oracle_error(message: str, kind: type[oracledb.Error] = oracledb.DatabaseError) -> oracledb.Error:
    """A python-oracledb error as the driver raises it (``args[0]`` carries ``full_code``)."""
    return kind(errors._Error(message))


class ScriptedOracle:
    """One "instance": files under ``oradata`` (server paths are host paths here, no ``path_map``)."""

    def __init__(self, oradata: Path, *, datafiles: int = 3, cdb: bool = True) -> None:
        self.oradata = oradata
        self.archive = oradata / "archive"
        self.archive.mkdir(parents=True, exist_ok=True)
        self.log_mode = "ARCHIVELOG"
        self.force_logging = "YES"
        #: A datafile a NOLOGGING operation changed, and the SCN (``v$datafile.unrecoverable_change#``).
        self.unrecoverable: tuple[str, int] | None = None
        #: END BACKUP returns but leaves files in backup mode (what the engine must notice).
        self.end_backup_leaves: set[int] = set()
        self.cdb = cdb
        self.container = "CDB$ROOT"
        self.user = "SYSBACKUP"
        self.status, self.database_status = "OPEN", "ACTIVE"
        self.denied_views: set[str] = set()
        self.session_privs = ["ALTER DATABASE", "ALTER SYSTEM", "CREATE SESSION"]
        self.control_files = [str(oradata / "control01.ctl"), str(oradata / "control02.ctl")]
        for name in self.control_files:
            Path(name).write_bytes(b"current control file")
        #: (file#, name, ts#, tablespace, con_id)
        self.datafiles: list[tuple[int, str, int, str, int]] = []
        for number in range(1, datafiles + 1):
            con_id = 1 if number <= 2 else 3
            path = oradata / ("pdb" if con_id == 3 else "") / f"data{number:02d}.dbf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([number]) * 65536)
            self.datafiles.append(
                (number, str(path), number - 1 if con_id == 1 else 0, f"TS{number}", con_id)
            )
        self.in_backup: set[int] = set()
        self.backup_scn: int | None = None
        self.scn = 1000
        self.sequence = 7
        #: (name, thread, sequence, first_change, next_change, dest_id)
        self.archived: list[tuple[str, int, int, int, int, int]] = []
        self.log_start = self.scn
        self.statements: list[str] = []
        #: Statements issued while suspended that Oracle would hold until RESUME.
        self.waited: list[str] = []
        self.connections: list[ScriptedConnection] = []
        #: The user of each login attempt, as parsed from its URL.
        self.logins: list[str] = []
        self.refuse_connect: oracledb.Error | None = None
        #: A statement (regex) that fails, and how, once.
        self.fail_on: tuple[str, oracledb.Error] | None = None

    # -- what the engine's connect() gets -------------------------------------------------------

    def connect(self, url: str, **_options: Any) -> ScriptedConnection:
        """What ``connection.connect`` gives; the URL is parsed as it would be (a common user's
        ``C##`` included), only the network is left out."""
        self.logins.append(connection.parse_url(url).user)
        if self.refuse_connect is not None:
            raise self.refuse_connect
        conn = ScriptedConnection(self)
        self.connections.append(conn)
        return conn

    def alters(self) -> list[str]:
        """The statements that change something, in order."""
        return [s for s in self.statements if s.startswith("ALTER")]

    # -- the "server" -----------------------------------------------------------------------------

    def answer(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]] | None:
        """The rows of ``sql`` (None: a statement without rows)."""
        self.statements.append(sql)
        if self.fail_on is not None and re.search(self.fail_on[0], sql):
            error, self.fail_on = self.fail_on[1], None
            raise error
        lowered = sql.lower()
        if self.database_status == "SUSPENDED" and any(view in lowered for view in CONTROL_FILE_VIEWS):
            self.waited.append(sql)
        for view in self.denied_views:
            if view in lowered:
                raise oracle_error("ORA-00942: table or view does not exist")
        self.scn += 1
        handler = self._handler(sql)
        return handler(sql, params)

    def _handler(self, sql: str) -> Any:
        for pattern, handler in (
            (r"^ALTER SYSTEM ARCHIVE LOG CURRENT$", self._archive_current),
            (r"^ALTER DATABASE BEGIN BACKUP$", self._begin_backup),
            (r"^ALTER DATABASE END BACKUP$", self._end_backup),
            (r"^ALTER SYSTEM SUSPEND$", self._suspend),
            (r"^ALTER SYSTEM RESUME$", self._resume),
            (r"^ALTER DATABASE BACKUP CONTROLFILE TO '(.+)' REUSE$", self._backup_controlfile),
            (r"^SELECT database_status FROM v\$instance", lambda s, p: [(self.database_status,)]),
            (r"FROM v\$instance$", lambda s, p: [("FREE", self.status, self.database_status)]),
            (
                r"unrecoverable_change# >= :1",
                lambda s, p: [
                    (self.unrecoverable[0] if self.unrecoverable and self.unrecoverable[1] >= p[0] else None,)
                ],
            ),
            (r"current_scn FROM v\$database", lambda s, p: [(self.scn,)]),
            (
                r"FROM v\$database$",
                lambda s, p: [
                    ("FREE", 1234567, self.log_mode, "YES" if self.cdb else "NO", self.force_logging)
                ],
            ),
            (r"CON_NAME", lambda s, p: [(self.container if self.cdb else "FREE",)]),
            (r"FROM v\$controlfile", lambda s, p: [(n,) for n in self.control_files]),
            (r"^SELECT d\.file#", lambda s, p: list(self.datafiles)),
            (r"^SELECT 1 FROM", lambda s, p: [(1,)]),
            (r"^SELECT USER FROM dual", lambda s, p: [(self.user,)]),
            (r"session_privs", lambda s, p: [(x,) for x in self.session_privs]),
            (r"COUNT\(\*\) FROM v\$backup", lambda s, p: [(len(self.in_backup),)]),
            (r"MIN\(change#\) FROM v\$backup", lambda s, p: [(self.backup_scn if self.in_backup else None,)]),
            (r"FROM v\$log WHERE status = 'CURRENT'", lambda s, p: [(1, self.sequence)]),
            (r"FETCH FIRST 1 ROWS ONLY", lambda s, p: [(a[0],) for a in self.archived[-1:]]),
            (r"MAX\(sequence#\)", lambda s, p: [(1, self.archived[-1][2])] if self.archived else []),
            (r"FROM v\$archived_log WHERE next_change#", self._window_logs),
            (
                r"FROM v\$parameter2",
                lambda s, p: [
                    ("db_name", "FREE", 2),
                    ("processes", "300", 3),
                    ("control_files", self.control_files[0], 2),
                    ("spfile", "/opt/oracle/dbs/spfileFREE.ora", 2),
                    ("log_archive_dest_1", f"LOCATION={self.archive}", 2),
                    ("enable_pluggable_database", "TRUE", 1),
                ],
            ),
            (
                r"FROM v\$logfile",
                lambda s, p: [(str(self.oradata / "redo01.log"),), (str(self.oradata / "redo02.log"),)],
            ),
            (r"FROM v\$tempfile", lambda s, p: [(str(self.oradata / "temp01.dbf"),)]),
        ):
            if re.search(pattern, sql):
                return handler
        raise AssertionError(f"the scripted instance has no answer for: {sql}")

    def _archive_current(self, sql: str, params: Sequence[Any]) -> None:
        name = self.archive / f"1_{self.sequence}_1.arc"
        name.write_bytes(f"redo {self.log_start}..{self.scn}".encode() * 100)
        self.archived.append((str(name), 1, self.sequence, self.log_start, self.scn, 1))
        self.sequence += 1
        self.log_start = self.scn

    def _begin_backup(self, sql: str, params: Sequence[Any]) -> None:
        if self.log_mode != "ARCHIVELOG":
            raise oracle_error("ORA-01123: cannot start online backup; media recovery not enabled")
        if self.in_backup:
            raise oracle_error("ORA-01146: cannot start online backup - file 1 is already in backup")
        self.in_backup = {d[0] for d in self.datafiles}
        self.backup_scn = self.scn

    def _end_backup(self, sql: str, params: Sequence[Any]) -> None:
        if self.database_status == "SUSPENDED":
            self.waited.append(sql)
        if not self.in_backup:
            raise oracle_error("ORA-01142: cannot end online backup - none of the files are in backup")
        self.in_backup = set(self.end_backup_leaves)

    def _suspend(self, sql: str, params: Sequence[Any]) -> None:
        self.database_status = "SUSPENDED"

    def _resume(self, sql: str, params: Sequence[Any]) -> None:
        self.database_status = "ACTIVE"

    def _backup_controlfile(self, sql: str, params: Sequence[Any]) -> None:
        match = re.search(r"TO '(.+)' REUSE", sql)
        assert match is not None
        Path(match[1].replace("''", "'")).write_bytes(f"backup control file at SCN {self.scn}".encode())

    def _window_logs(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        begin, end = params
        return [row for row in self.archived if row[4] > begin and row[3] <= end]


class ScriptedConnection:
    """What the engine uses of a python-oracledb connection."""

    def __init__(self, instance: ScriptedOracle) -> None:
        self.instance = instance
        self.version = "23.26.0.0.0"
        self.module = ""
        self.autocommit = True
        self.call_timeout = 0
        self.closed = False
        #: Set by a test: every statement now fails as a killed session's would.
        self.killed = False

    def cursor(self) -> ScriptedCursor:
        return ScriptedCursor(self)

    def ping(self) -> None:
        if self.killed or self.closed:
            raise oracle_error("DPY-4011: the database or network closed the connection")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> ScriptedConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ScriptedCursor:
    def __init__(self, conn: ScriptedConnection) -> None:
        self.conn = conn
        self.rows: list[tuple[Any, ...]] = []
        self.description: list[str] | None = None

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        if self.conn.killed or self.conn.closed:
            raise oracle_error("DPY-4011: the database or network closed the connection")
        rows = self.conn.instance.answer(sql, list(params or []))
        self.rows = list(rows) if rows is not None else []
        self.description = ["column"] if rows is not None else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self.rows = self.rows, []
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows.pop(0) if self.rows else None

    def __enter__(self) -> ScriptedCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())
