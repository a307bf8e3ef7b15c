"""Test support: Oracle Database Free in a container, and the plugin's side of the contract suite.

The server is ``gvenzl/oracle-free`` (the image testcontainers' Oracle module uses;
:func:`splitmirror.testing.containers.image_for` picks it, or ``$SPLITMIRROR_IMAGE_ORACLE_23``).
Its ``/opt/oracle/oradata`` (datafiles, control files, online logs, and here the archived logs)
is bind-mounted from a host directory, which plays the primary disk.  The regular tag, not a
``faststart`` one: a faststart image keeps its ready-made database in the image's own
``/opt/oracle/oradata``, which a bind mount hides; the regular image unpacks it into the mount
at first start.  Two scripts run at that first start (``container-init/``, mounted at
``/container-entrypoint-initdb.d``, as compose/docker-compose.yml does): ARCHIVELOG mode with the
archive destination on the mounted directory, and the plugin's own account script
(``sql/splitmirror-user.sql``, the one docs/databases/oracle.md gives DBAs).

splitmirror connects as that account ``AS SYSBACKUP`` to the root (service ``FREE``); the ledger
is an application user's table in ``FREEPDB1``.  Restored copies start in a *fresh* container by
the ``docker run`` step ``splitmirror restore`` printed (:mod:`splitmirror.testing.steps`), must
recover and open, and pass ``ANALYZE ... VALIDATE STRUCTURE CASCADE`` and
``DBMS_DICTIONARY_CHECK.FULL``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oracledb

from splitmirror.testing import LedgerDatabase, RestoredLedger, RestoreResult, committed_within
from splitmirror.testing.containers import ContainerServer, client, image_for
from splitmirror.testing.steps import started_in_container

from . import ledger
from .connection import connect
from .engine import SESSION_MODULE

DATA = "/opt/oracle/oradata"
PORT = 1521
#: The image's container database (root) and pluggable database.
ROOT_SERVICE, PDB_SERVICE = "FREE", "FREEPDB1"
#: The archive destination the first-start script sets, on the mounted directory.
ARCHIVE = f"{DATA}/FREE/archive"
#: The account splitmirror-user.sql creates, and the ledger's application user.
SESSION_USER, APP_USER = "c##splitmirror", "ledger"
#: First start unpacks the database, switches to ARCHIVELOG and restarts: minutes, not seconds.
START_TIMEOUT = 900.0

#: The first-start scripts (``/container-entrypoint-initdb.d``) and the account script they run
#: (``/splitmirror-init``): the same files compose/docker-compose.yml's ``oracle`` service mounts.
INIT_SCRIPTS, ACCOUNT_SCRIPTS = "container-init", "sql"


def packaged(directory: str) -> Path:
    """One of the plugin's directories of scripts (:data:`INIT_SCRIPTS`, :data:`ACCOUNT_SCRIPTS`)."""
    return Path(str(importlib.resources.files("splitmirror_oracle").joinpath(directory)))


def image_ids(image: str) -> tuple[int, int]:
    """The uid and gid of ``image``'s ``oracle`` user, which must own a bind-mounted data directory."""
    output = client().containers.run(
        image, ["-c", "id -u oracle; id -g oracle"], entrypoint="bash", remove=True
    )
    uid, gid = output.decode().split()
    return int(uid), int(gid)


def write_password_file(path: Path, password: str) -> Path:
    """A password file as ``[database] password_file`` wants it: the password, mode 0600."""
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


class ContainerOracle(ContainerServer):
    """Oracle Database Free ``version`` in a container on the host directory ``datadir``.
    ``password`` is SYS's, the splitmirror account's and the ledger user's (test code only);
    ``archivelog=False`` leaves the image's NOARCHIVELOG mode (the bad-input test).
    :meth:`start` returns once the database is open and the account logs in; :meth:`restored`
    starts a restored copy as the restore printed."""

    data = DATA
    port = PORT
    start_timeout = START_TIMEOUT

    def __init__(self, version: str, datadir: Path, password: str, *, archivelog: bool = True) -> None:
        super().__init__(image_for("oracle", version), datadir)
        self.version, self.password, self.archivelog = version, password, archivelog
        #: False for a restored copy: its password file is the fresh image's, so only the
        #: application user (whose password is in the restored dictionary) can log in.
        self.primary = True

    def start(self) -> ContainerOracle:
        scripts = self.datadir.parent / "oracle-init"
        shutil.rmtree(scripts, ignore_errors=True)
        shutil.copytree(packaged(INIT_SCRIPTS), scripts)
        for script in scripts.iterdir():
            script.chmod(0o755)  # run, not sourced into the image's entrypoint (a wheel may drop +x)
        if not self.archivelog:
            (scripts / "01-archivelog.sh").unlink()
        self.datadir.mkdir(parents=True, exist_ok=True)
        os.chown(self.datadir, *image_ids(self.image))
        self.mounts = {
            scripts: "/container-entrypoint-initdb.d",
            packaged(ACCOUNT_SCRIPTS): "/splitmirror-init",
        }
        self.start_container(
            {
                "ORACLE_PASSWORD": self.password,
                "APP_USER": APP_USER,
                "APP_USER_PASSWORD": self.password,
                "SPLITMIRROR_ORACLE_PASSWORD": self.password,
            },
            [],
        )
        return self

    def restored(self, restore: RestoreResult) -> contextlib.AbstractContextManager[ContainerOracle]:
        """A copy restored by ``restore``, started by the printed ``docker run`` step in this
        server's image (nothing added but a published port), until the block ends."""
        copy = ContainerOracle(self.version, restore.directory, self.password)
        copy.primary = False
        return copy.running_in(started_in_container(restore.steps, self.image, PORT))

    def url(self, user: str = SESSION_USER, service: str = ROOT_SERVICE) -> str:
        return f"oracle://{user}@127.0.0.1:{self.host_port}/{service}"

    def connection(self, user: str = APP_USER, service: str = PDB_SERVICE, *, sysbackup: bool = False) -> Any:
        """A connection with the test password given directly (test code only)."""
        mode = oracledb.AUTH_MODE_SYSBKP if sysbackup else oracledb.AUTH_MODE_DEFAULT
        return oracledb.connect(
            user=user, password=self.password, host="127.0.0.1", port=self.host_port, service_name=service,
            mode=mode, tcp_connect_timeout=2,
        )  # fmt: skip

    def probe(self) -> str | None:
        """Open: the ledger user logs in to the PDB; for the primary also the splitmirror
        account AS SYSBACKUP to the root, with the log mode the first start set."""
        try:
            with self.connection() as conn, conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM dual")
            if not self.primary:
                return None
            with self.connection(SESSION_USER, ROOT_SERVICE, sysbackup=True) as conn, conn.cursor() as cursor:
                cursor.execute("SELECT log_mode, open_mode FROM v$database")
                log_mode, open_mode = cursor.fetchone()
        except oracledb.Error as error:
            return str(error).splitlines()[0]
        wanted = "ARCHIVELOG" if self.archivelog else "NOARCHIVELOG"
        if log_mode != wanted or open_mode != "READ WRITE":
            return f"{log_mode}, {open_mode}"
        return None

    def sysdba(self, sql: str) -> tuple[int, str]:
        """``sql`` through ``sqlplus / as sysdba`` inside the container (as the image's user),
        output unwrapped (SQL*Plus wraps at 80 columns by default)."""
        if self.container is None:
            raise RuntimeError("start() first")
        script = (
            "WHENEVER SQLERROR EXIT FAILURE\nSET LINESIZE 32767 TRIMOUT ON\n"
            f"SET SERVEROUTPUT ON SIZE UNLIMITED FORMAT WRAPPED\n{sql}\nEXIT\n"
        )
        return self.container.exec(
            ["bash", "-c", f"sqlplus -s / as sysdba <<'SQL'\n{script}SQL"], user="oracle"
        )

    def integrity(self) -> tuple[bool, str]:
        """``ANALYZE TABLE ledger VALIDATE STRUCTURE CASCADE`` (Oracle raises on a corrupt
        block) and ``DBMS_DICTIONARY_CHECK.FULL`` in the root and in the PDB, whose reports must
        name no CRITICAL or FAIL check."""
        try:
            with self.connection() as conn, conn.cursor() as cursor:
                cursor.execute("ANALYZE TABLE ledger VALIDATE STRUCTURE CASCADE")
        except oracledb.Error as error:
            return False, f"ANALYZE: {str(error).splitlines()[0]}"
        reports = []
        for container in ("CDB$ROOT", PDB_SERVICE):
            code, report = self.sysdba(
                f"ALTER SESSION SET CONTAINER = {container};\nEXECUTE DBMS_DICTIONARY_CHECK.FULL"
            )
            bad = [line for line in report.splitlines() if re.search(r"\b(CRITICAL|FAIL)\b", line)]
            if code != 0 or bad:
                reports.append(f"{container} (exit {code}): " + " | ".join(bad or report.splitlines()[-3:]))
        return (not reports, "; ".join(reports) or "ok (ANALYZE, DBMS_DICTIONARY_CHECK.FULL in root and PDB)")


class OracleLedgerDatabase(LedgerDatabase):
    """A :class:`ContainerOracle` as the contract suite's database: the session as the
    splitmirror account AS SYSBACKUP on the root, the ledger as the application user."""

    def __init__(self, server: ContainerOracle, workspace: Path) -> None:
        self.server = server
        self._admin: Any = None
        self.password_file = write_password_file(workspace / "oracle.pw", server.password)
        self.url = server.url()
        self.ledger_url = server.url(APP_USER, PDB_SERVICE)
        self.primary = server.datadir
        self.options = {
            "path_map": {DATA: str(server.datadir)},
            "password_file": str(self.password_file),
            "privilege": "sysbackup",
        }

    def create_ledger(self) -> None:
        ledger.create_ledger(self.ledger_url, self.password_file)
        with self._session():
            pass  # the harness's connection, before any session suspends the instance

    def writer_command(self, writer: int, acks: Path) -> list[str]:
        return ledger.writer_command(self.ledger_url, acks, writer, self.password_file)

    def accepts_writes(self, timeout: float = 3.0) -> bool:
        """A committed write (insert and delete of a row no writer uses) within ``timeout``."""

        def write() -> None:
            with (
                connect(
                    self.ledger_url,
                    privilege="none",
                    password_file=self.password_file,
                    timeout=2,
                    call_timeout=2,
                ) as conn,
                conn.cursor() as cursor,
            ):
                conn.autocommit = False
                cursor.execute("INSERT INTO ledger (writer, seq) VALUES (-1, -SYS_CONTEXT('USERENV', 'SID'))")
                cursor.execute("DELETE FROM ledger WHERE writer = -1")
                conn.commit()

        return committed_within(timeout, write, (oracledb.Error,))

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """A cursor on the harness's own SYSBACKUP connection, opened once, before any session
        (at :meth:`create_ledger`): in FREEZE the fault matrix kills connections while the
        instance is suspended, when a new login might wait for RESUME."""
        if self._admin is None:
            self._admin = self.server.connection(SESSION_USER, ROOT_SERVICE, sysbackup=True)
            self._admin.call_timeout = 30_000
        with self._admin.cursor() as cursor:
            yield cursor

    def leftovers(self) -> list[str]:
        """Datafiles in backup mode and a suspended instance: what a session that died leaves,
        and what its emergency release must end."""
        with self._session() as cursor:
            cursor.execute("SELECT COUNT(*) FROM v$backup WHERE status = 'ACTIVE'")
            active = int(cursor.fetchone()[0])
            cursor.execute("SELECT database_status FROM v$instance")
            status = str(cursor.fetchone()[0])
        found = [f"{active} datafiles in backup mode"] if active else []
        return found + ([f"the instance is {status}"] if status != "ACTIVE" else [])

    def kill_connections(self) -> int:
        """``ALTER SYSTEM KILL SESSION`` for the session's connection (``v$session.module`` is
        ``splitmirror``), not its spare: the fault to prove is the connection lost, with the
        engine's fallbacks as they are."""
        with self._session() as cursor:
            cursor.execute(
                "SELECT sid, serial# FROM v$session "
                "WHERE module = :1 AND sid <> SYS_CONTEXT('USERENV', 'SID')",
                [SESSION_MODULE],
            )
            sessions = cursor.fetchall()
            for sid, serial in sessions:
                with contextlib.suppress(oracledb.Error):  # it may have ended by itself
                    cursor.execute(f"ALTER SYSTEM KILL SESSION '{int(sid)},{int(serial)}' IMMEDIATE")
        return len(sessions)

    def files_in_use(self) -> set[Path]:
        """The datafiles, found by walking the data directory (independently of ``v$datafile``):
        every ``*.dbf`` but the tempfiles (``temp*``), which are recreated at open.  Control
        files, online logs and archived logs are not database files of the split image: the
        backup control file and the archived logs are collected (and the drill proves them)."""
        return {
            path
            for path in self.primary.rglob("*.dbf")
            if path.is_file() and not path.name.lower().startswith("temp") and ARCHIVE_DIR not in path.parts
        }

    def restored_ledger(self, restore: RestoreResult) -> RestoredLedger:
        with self.server.restored(restore) as server:
            ok, text = server.integrity()
            with server.connection() as conn, conn.cursor() as cursor:
                cursor.execute("SELECT writer, seq FROM ledger")
                rows: dict[int, set[int]] = {}
                for writer, seq in cursor.fetchall():
                    rows.setdefault(int(writer), set()).add(int(seq))
        return RestoredLedger(ok, text, rows)


#: The archive destination's directory name, excluded from :meth:`OracleLedgerDatabase.files_in_use`.
ARCHIVE_DIR = os.path.basename(ARCHIVE)
