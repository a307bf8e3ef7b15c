"""Test support: MariaDB / MySQL in containers, and the plugin's side of the contract suite.

The server runs in a container (image from :func:`splitmirror.testing.containers.image_for`:
upstream ``mariadb:10.11`` / ``mysql:9``, or ``splitmirror-offline/mariadb:10.11`` /
``splitmirror-offline/mysql:9`` built from Debian's packages) with binary logging on (as
compose/docker-compose.yml runs it, and MySQL by default; off with ``binlog=False``) and its
data directory bind-mounted from a host disk; splitmirror runs on the host, connects over TCP
as ``root`` with the password from an option file (``[client] password=``), and reads the
files through ``path_map``.  Restored copies start in a *fresh* container by the ``docker
run`` step ``splitmirror restore`` printed, with no server option of the harness's own
(:mod:`splitmirror.testing.steps`); they must finish crash recovery, and every table must pass
``CHECK TABLE``.
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pymysql

from splitmirror.testing import LedgerDatabase, RestoredLedger, RestoreResult, committed_within
from splitmirror.testing.containers import ContainerServer, ServerContainer, image_for
from splitmirror.testing.steps import host_steps_in_container, started_in_container

from . import ledger
from .connection import connect

#: The data directory inside the official images (and ours).
DATA = "/var/lib/mysql"
PORT = 3306
START_TIMEOUT = 120
#: What each flavour's image calls its server binary and root-password variable.
FLAVOURS = {"mariadb": ("mariadbd", "MARIADB_ROOT_PASSWORD"), "mysql": ("mysqld", "MYSQL_ROOT_PASSWORD")}


def write_option_file(path: Path, password: str) -> Path:
    """A ``[client]`` option file holding ``password`` (0600), as a DBA's ``~/.my.cnf``."""
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'[client]\npassword="{escaped}"\n')
    path.chmod(0o600)
    return path


class ContainerMysql(ContainerServer):
    """``database`` (``mariadb`` or ``mysql``) ``version`` in a container on the host
    directory ``datadir``, initialised when empty (root's password ``password``).  ``binlog``:
    True for ``--log-bin=binlog`` (the compose file's), a string for that ``--log-bin`` value,
    False for none; ``mounts`` are more host directories for the server (a binary log
    directory of its own).  :meth:`start` returns once the server takes connections;
    :meth:`restored` starts a restored copy as the restore printed."""

    data = DATA
    port = PORT
    start_timeout = START_TIMEOUT

    def __init__(
        self,
        database: str,
        version: str,
        datadir: Path,
        password: str,
        *,
        binlog: bool | str = True,
        mounts: Mapping[Path, str] | None = None,
    ) -> None:
        super().__init__(image_for(database, version), datadir, mounts)
        self.database, self.version = database, version
        self.password = password
        self.binlog = binlog

    def _binlog_options(self) -> list[str]:
        if self.binlog is False:  # MySQL 8+ logs by default, MariaDB does not: say so, both ways
            return ["--skip-log-bin"] if self.database == "mysql" else []
        return [f"--log-bin={'binlog' if self.binlog is True else self.binlog}", "--server-id=1"]

    def start(self, *arguments: str) -> ContainerMysql:
        """Start on :attr:`datadir`: MySQL on an empty one from a copy of a data directory
        initialised once per image and command (:func:`_template`), its root password then set
        to this server's; anything else initialised by the image's entrypoint, as a user would."""
        binary, password_variable = FLAVOURS[self.database]
        command = [binary, *self._binlog_options(), *arguments]
        empty = not self.datadir.exists() or not any(self.datadir.iterdir())
        if self.database != "mysql" or self.mounts or not empty:
            self.start_container({password_variable: self.password}, command)
            return self
        template = _template(self.image, self.version, command)
        self.datadir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", f"{template}/.", str(self.datadir)], check=True)
        password, self.password = self.password, _TEMPLATE_PASSWORD
        try:
            self.start_container({password_variable: _TEMPLATE_PASSWORD}, command)
            with self.connection() as conn, conn.cursor() as cursor:
                cursor.execute("SET sql_log_bin = 0")
                for host in ("localhost", "%"):
                    cursor.execute("ALTER USER 'root'@%s IDENTIFIED BY %s", (host, password))
        except BaseException:
            self.stop()
            raise
        finally:
            self.password = password
        return self

    def restored(
        self, restore: RestoreResult, route: str = "container"
    ) -> contextlib.AbstractContextManager[ContainerMysql]:
        """A copy of this server restored by ``restore``, started by the printed steps until
        the block ends: the ``docker run`` step in this server's image (nothing added but a
        published port), or with ``route="host"`` the chown and bare server line, run in a
        container of this image that stands in for the database host."""
        copy = ContainerMysql(self.database, self.version, restore.directory, self.password)
        if route == "host":
            return copy.running_in(
                host_steps_in_container(restore.steps, self.image, PORT, restore.directory)
            )
        return copy.running_in(started_in_container(restore.steps, self.image, PORT))

    @property
    def url(self) -> str:
        return f"{self.database}://root@127.0.0.1:{self.host_port}/"

    def connection(self) -> Any:
        """A root connection (password given directly: test code only)."""
        return pymysql.connect(
            host="127.0.0.1", port=self.host_port, user="root", password=self.password,
            autocommit=True, connect_timeout=2,
        )  # fmt: skip

    def probe(self) -> str | None:
        """Takes connections: ``SELECT 1`` answers."""
        try:
            with self.connection() as conn, conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                return None
        except pymysql.Error as error:
            return str(error)

    def check_tables(self) -> tuple[bool, str]:
        """``CHECK TABLE`` on every base table outside the server's own virtual schemas:
        ``(ok, "ok")``, or False with the complaints."""
        complaints = []
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
                "WHERE TABLE_TYPE = 'BASE TABLE' "
                "AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys')"
            )
            tables = cursor.fetchall()
            for schema, name in tables:
                cursor.execute(f"CHECK TABLE `{schema}`.`{name}`")
                for _table, _op, kind, text in cursor.fetchall():
                    if kind == "error" or (kind == "status" and text != "OK"):
                        complaints.append(f"{schema}.{name}: {kind} {text}")
        return (not complaints, "\n".join(complaints) or f"ok ({len(tables)} tables)")


#: The root password of the template data directories (replaced in each copy by its server's).
_TEMPLATE_PASSWORD = "splitmirror-template-" + secrets.token_urlsafe(8)
#: (image, command) → an initialised MySQL data directory, made once per test process.
_TEMPLATES: dict[tuple[str, tuple[str, ...]], Path] = {}


def _template(image: str, version: str, command: list[str]) -> Path:
    """A data directory MySQL's entrypoint initialised with ``command`` (``mysqld
    --initialize-insecure``, a temporary server for the root accounts: about 8 s a server),
    shut down cleanly, kept for copies and removed at exit."""
    key = (image, tuple(command))
    if key in _TEMPLATES:
        return _TEMPLATES[key]
    directory = Path(tempfile.mkdtemp(prefix="splitmirror-mysql-template-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    server = ContainerMysql("mysql", version, directory / "data", _TEMPLATE_PASSWORD, binlog=False)
    server.image = image
    try:
        server.start_container({FLAVOURS["mysql"][1]: _TEMPLATE_PASSWORD}, command)
        container = server.container
        if isinstance(container, ServerContainer):  # SIGTERM: a clean shutdown, no recovery per copy
            container._container.get_wrapped_container().stop(timeout=60)
    finally:
        server.stop()
    _TEMPLATES[key] = directory / "data"
    return directory / "data"


#: The table :func:`waiting_ddl` alters (in the ledger's database, never the ledger itself).
BLOCKED_TABLE = f"{ledger.DATABASE}.blocked"


@contextlib.contextmanager
def waiting_ddl(server: ContainerMysql) -> Iterator[list[int]]:
    """What makes MySQL's ``LOCK INSTANCE FOR BACKUP`` wait: one connection holds an open
    transaction that read :data:`BLOCKED_TABLE`, a second runs ``ALTER TABLE`` on it, which
    waits for that transaction while holding the backup lock's DDL side.  Yields the two
    connection ids (the idle transaction's first); the ALTER finishes once the block ends."""
    holder = server.connection()
    alter = server.connection()
    try:
        with holder.cursor() as cursor:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {BLOCKED_TABLE} (id INT PRIMARY KEY) ENGINE=InnoDB")
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT COUNT(*) FROM {BLOCKED_TABLE}")
            cursor.execute("SELECT CONNECTION_ID()")
            ids = [int(cursor.fetchone()[0])]
        with alter.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            ids.append(int(cursor.fetchone()[0]))
            cursor.execute("SET SESSION lock_wait_timeout = 300")
        thread = threading.Thread(
            target=_quietly,
            args=(alter, f"ALTER TABLE {BLOCKED_TABLE} ADD COLUMN c{ids[1]} INT"),
            daemon=True,
        )
        thread.start()
        time.sleep(1.2)  # waiting, and long enough to show up with TIME >= 1 in the process list
        try:
            yield ids
        finally:
            with holder.cursor() as cursor:
                cursor.execute("COMMIT")
            thread.join(timeout=30)
    finally:
        holder.close()
        alter.close()


def _quietly(conn: Any, statement: str) -> None:
    with contextlib.suppress(pymysql.Error), conn.cursor() as cursor:
        cursor.execute(statement)


class MysqlLedgerDatabase(LedgerDatabase):
    """A :class:`ContainerMysql` as the contract suite's database.  ``primary`` is what the
    mirror copies: the data directory, or a directory above it (the block mirror wants the
    filesystem's mount point); a restore then holds the data directory at the same place."""

    def __init__(
        self,
        server: ContainerMysql,
        option_file: Path,
        options: Mapping[str, Any] | None = None,
        *,
        primary: Path | None = None,
        route: str = "container",
    ) -> None:
        self.server = server
        self.route = route  # how restored copies start: "container" or "host" (see ContainerMysql.restored)
        self.option_file = option_file
        self.url = server.url
        self.primary = primary or server.datadir
        self.options = {"path_map": server.path_map, "option_file": str(option_file), **(options or {})}

    def create_ledger(self) -> None:
        ledger.create_ledger(self.url, self.option_file)

    def writer_command(self, writer: int, acks: Path) -> list[str]:
        return ledger.writer_command(self.url, acks, writer, self.option_file)

    def accepts_writes(self, timeout: float = 3.0) -> bool:
        """A committed write (insert and delete of a row no writer uses) within ``timeout``
        (:func:`~splitmirror.testing.committed_within`)."""

        def write() -> None:
            with connect(self.url, option_file=self.option_file, timeout=2, database="") as conn:
                conn.autocommit(False)
                with conn.cursor() as cursor:
                    cursor.execute("SET SESSION innodb_lock_wait_timeout = 1, lock_wait_timeout = 1")
                    cursor.execute(
                        f"INSERT INTO {ledger.DATABASE}.ledger (writer, seq) VALUES (-1, -CONNECTION_ID())"
                    )
                    cursor.execute(f"DELETE FROM {ledger.DATABASE}.ledger WHERE writer = -1")
                conn.commit()

        return committed_within(timeout, write, (pymysql.Error,))

    _OTHERS = (
        "SELECT ID, COMMAND, STATE, LEFT(COALESCE(INFO, ''), 60) FROM information_schema.PROCESSLIST"
        " WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump')"
        " AND USER NOT IN ('system user', 'event_scheduler')"
    )

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        with (
            connect(self.url, option_file=self.option_file, timeout=2, database="") as conn,
            conn.cursor() as cursor,
        ):
            yield cursor

    def _others(self) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(self._OTHERS)
            return list(cursor.fetchall())

    def leftovers(self) -> list[str]:
        """Client connections besides the one asking: the session's, holding a BACKUP STAGE or
        a lock, would show here."""
        return [
            f"connection {cid} ({command} {state}: {info})" for cid, command, state, info in self._others()
        ]

    def kill_connections(self) -> int:
        """``KILL`` every other client connection (the session's among them)."""
        ids = [row[0] for row in self._others()]
        with self._cursor() as cursor:
            for cid in ids:
                with contextlib.suppress(pymysql.Error):  # it may have ended by itself
                    cursor.execute(f"KILL {int(cid)}")
        return len(ids)

    @contextlib.contextmanager
    def _table_lock(self) -> Iterator[None]:
        with self._cursor() as cursor:
            cursor.execute(f"LOCK TABLES {ledger.DATABASE}.ledger WRITE")
            try:
                yield
            finally:
                cursor.execute("UNLOCK TABLES")

    def blocker(self, mode: str) -> contextlib.AbstractContextManager[None] | None:
        """``LOCK TABLES ... WRITE`` on the ledger: FTWRL and BACKUP STAGE queue behind it, in
        both modes.  MySQL's ``LOCK INSTANCE FOR BACKUP`` does not (it conflicts with DDL, not
        with table locks): for MySQL's HOT_BACKUP, a DDL statement waiting on a table of its own
        (:func:`waiting_ddl`), which holds the backup lock's DDL side while it waits."""
        if self.server.database == "mysql" and mode == "hot-backup":
            return self._ddl_waiting()
        return self._table_lock()

    @contextlib.contextmanager
    def _ddl_waiting(self) -> Iterator[None]:
        with waiting_ddl(self.server):
            yield

    def files_in_use(self) -> set[Path]:
        """Every file under the data directory but what the server recreates or what describes
        the running process (the same list as the engine's, stated here on its own: pid and
        socket files, the temporary tablespace, ``#sql`` leftovers)."""
        found = set()
        for path in self.primary.rglob("*"):
            name = path.name
            if not path.is_file() or "#innodb_temp" in path.parts:
                continue
            if name.endswith((".pid", ".sock")) or name.startswith(("ibtmp", "#sql")):
                continue
            if name.startswith("#ib_redo") and name.endswith("_tmp"):  # MySQL's spare redo files
                continue
            found.add(path)
        return found

    def restored_server(self, restore: RestoreResult) -> contextlib.AbstractContextManager[ContainerMysql]:
        """The restored copy, started by the steps the restore printed."""
        return self.server.restored(restore, self.route)

    def restored_ledger(self, restore: RestoreResult) -> RestoredLedger:
        with self.restored_server(restore) as server:
            ok, text = server.check_tables()
            rows: dict[int, set[int]] = {}
            with server.connection() as conn, conn.cursor() as cursor:
                cursor.execute(f"SELECT writer, seq FROM {ledger.DATABASE}.ledger")
                for writer, seq in cursor.fetchall():
                    rows.setdefault(int(writer), set()).add(int(seq))
        return RestoredLedger(ok, text, rows)


def weak_account(server: ContainerMysql, option_file: Path, grants: str) -> MysqlLedgerDatabase:
    """The ledger reached as ``'weak'@'%'``, created holding only ``grants`` (``"SELECT, PROCESS"``),
    its password in an option file beside ``option_file``: the privilege tests' account."""
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE USER 'weak'@'%' IDENTIFIED BY 'weak-pw'")
        cursor.execute(f"GRANT {grants} ON *.* TO 'weak'@'%'")
    weak = MysqlLedgerDatabase(server, write_option_file(option_file.with_name("weak.cnf"), "weak-pw"))
    weak.url = weak.url.replace("root@", "weak@")
    return weak
