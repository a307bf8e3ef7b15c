"""``splitmirror drill`` for MySQL and MariaDB: the restored copy started by the restore's own
steps is reached over TCP, waited for through crash recovery, and checked by the server itself.

* **Reaching the copy.**  As the URL's user, with the password from where the backup took it
  (``MYSQL_PWD``, else the ``[client]`` group of ``option_file`` or ``~/.my.cnf``), but over TCP
  to the drill's address only: nothing else is read from the option file, whose ``socket=``
  would otherwise take the connection to the live server.
* **Waiting.**  Until ``copy.deadline``, retrying while the server recovers (InnoDB's redo, the
  binary log's prepared transactions); an account the copy refuses fails at once.
* **Checking.**  ``CHECK TABLE`` on every base table of every schema, the server's own ``mysql``
  and ``sys`` included (their tables hold accounts, time zones and ``sys_config``), batched;
  ``information_schema`` and ``performance_schema`` are views of the running server, not files,
  and are skipped.  A table whose engine has no check (MEMORY, BLACKHOLE) is counted as such.
  Then the GTIDs: the copy must hold at least the backup's recorded set.  Then the DBA's query.
* **The host route's environment** (:func:`environment`): the port and socket the copy gets, and
  an option file of the drill's own that outranks the host's (Debian's MariaDB names the live
  server's socket and pid file in ``/etc/mysql``, which ``MYSQL_UNIX_PORT`` cannot override).
"""

from __future__ import annotations

import configparser
import contextlib
import os
import pwd
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pymysql
import pymysql.connections
from pymysql.optionfile import Parser

from splitmirror.api import DrillCopy, DrillFailed, answer, first_line

from .connection import default_option_file, parse_url

#: Views of the running server, not files of the copy.
VIRTUAL_SCHEMAS = ("information_schema", "performance_schema")
#: Tables per ``CHECK TABLE`` statement.
BATCH = 50
#: Errors that no amount of waiting cures: the copy refuses the account.
REFUSED = (1044, 1045, 1130)
#: The option file :func:`environment` writes, in a directory of its own under the scratch.
HOME = "mysql-home"


def environment(port: int, scratch: Path) -> dict[str, str]:
    """The variables the host route's server start runs under: ``MYSQL_TCP_PORT`` and
    ``MYSQL_UNIX_PORT`` (the servers take them when no option file names its own: Debian's
    MariaDB names the live server's socket, so MariaDB keeps that one), and ``MYSQL_HOME``,
    whose ``my.cnf`` both servers read after ``/etc/mysql``'s, so it wins: the port, the socket
    and the pid file in ``scratch``, and MySQL's X Protocol off (it would bind the live
    server's 33060; ``loose-`` makes MariaDB, which has none, ignore the line).  The directory
    holding the socket belongs to the ``mysql`` account (the start step's ``--user=mysql``)
    where the host has one."""
    home = scratch / HOME
    run = scratch / "mysqld"
    for made in (home, run):
        made.mkdir(mode=0o755, exist_ok=True)
    with contextlib.suppress(KeyError):
        account = pwd.getpwnam("mysql")
        os.chown(run, account.pw_uid, account.pw_gid)
    socket, pid = run / "mysqld.sock", run / "mysqld.pid"
    option_file = home / "my.cnf"
    option_file.write_text(
        "# splitmirror drill: the copy keeps out of the live server's way\n"
        "[mysqld]\n"
        f"port = {port}\n"
        f"socket = {socket}\n"
        f"pid-file = {pid}\n"
        "loose-mysqlx = OFF\n"
    )
    option_file.chmod(0o644)  # the server ignores a world-writable option file
    return {
        "MYSQL_TCP_PORT": str(port),
        "MYSQL_UNIX_PORT": str(socket),
        "MYSQL_HOME": str(home),
    }


def password(option_file: Path | None) -> str:
    """The password as the backup's connection finds it (:func:`.connection.connect`):
    ``MYSQL_PWD``, else the ``[client]`` group's ``password`` (PyMySQL's own parser)."""
    if os.environ.get("MYSQL_PWD"):
        return os.environ["MYSQL_PWD"]
    path = option_file or default_option_file()
    if path is None:
        return ""
    parser = Parser()
    parser.read(os.path.expanduser(str(path)))
    try:
        return str(parser.get("client", "password") or "")
    except configparser.Error:  # no [client] group, or no password in it: PyMySQL's rule too
        return ""


def connect(copy: DrillCopy) -> pymysql.connections.Connection[Any]:
    """A connection to the copy once it takes one; :class:`DrillFailed` past the deadline or
    when the copy refuses the account."""
    if copy.host is None or copy.port is None:
        raise DrillFailed("a MySQL/MariaDB copy is a server: it must be started (the restore steps' route)")
    host, port = copy.host, copy.port
    user = parse_url(copy.url).user
    secret = password(getattr(copy.options, "option_file", None))
    last = "no attempt"
    while True:
        try:
            return pymysql.connect(
                host=host, port=port, user=user, password=secret, database=None,
                connect_timeout=max(1, min(5, int(copy.left()))), autocommit=True, charset="utf8mb4",
            )  # fmt: skip
        except pymysql.Error as error:
            last = message(error)
            if error.args and error.args[0] in REFUSED:
                raise DrillFailed(
                    f"the restored copy refuses {user}: {last}; the copy has the accounts of the backup, "
                    "and must admit this one from where the drill connects (in a container: the "
                    "Docker bridge's address, such as 172.17.0.1)"
                ) from None
        if not copy.running():
            raise DrillFailed(
                f"the restored copy stopped before it took connections; the last attempt said: {last}"
            )
        if copy.left() <= 0:
            raise DrillFailed(
                f"the restored copy did not take connections on {host}:{port} within the drill's "
                f"timeout; the last attempt said: {last}"
            )
        time.sleep(min(0.5, copy.left()))


def check(copy: DrillCopy) -> list[str]:
    """Connect, ``CHECK TABLE`` everything, compare GTIDs, run the query; what was checked."""
    with connect(copy) as conn, conn.cursor() as cursor:
        checks = [check_tables(cursor)]
        checks += check_gtids(cursor, copy.manifest)
        if copy.query:
            try:
                cursor.execute(copy.query)
                rows = list(cursor.fetchall()) if cursor.description else []
            except pymysql.Error as error:
                raise DrillFailed(
                    f"the [drill] query failed on the restored copy: {message(error)}"
                ) from None
            checks.append(f"query: {answer(rows)}")
        return checks


def check_tables(cursor: Any) -> str:
    """``CHECK TABLE`` on every base table outside :data:`VIRTUAL_SCHEMAS`; the phrase, or
    :class:`DrillFailed` naming the first table that is not OK and what the server said."""
    cursor.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
        f"AND TABLE_SCHEMA NOT IN ({', '.join(['%s'] * len(VIRTUAL_SCHEMAS))}) "
        "ORDER BY TABLE_SCHEMA, TABLE_NAME",
        VIRTUAL_SCHEMAS,
    )
    tables = [(str(schema), str(name)) for schema, name in cursor.fetchall()]
    if not tables:
        raise DrillFailed(
            "CHECK TABLE: the restored copy shows this account no table at all; it needs SELECT on "
            "every schema (GRANT SELECT ON *.*)"
        )
    unchecked: list[str] = []
    for start in range(0, len(tables), BATCH):
        batch = tables[start : start + BATCH]
        cursor.execute("CHECK TABLE " + ", ".join(f"{_quoted(s)}.{_quoted(n)}" for s, n in batch))
        said: dict[str, list[tuple[str, str]]] = {}
        for table, _op, kind, text in cursor.fetchall():
            said.setdefault(str(table), []).append((str(kind).lower(), str(text)))
        for schema, name in batch:
            unchecked += _verdict(f"{schema}.{name}", said.get(f"{schema}.{name}", []))
    schemas = len({schema for schema, _name in tables})
    checked = len(tables) - len(unchecked)
    phrase = f"CHECK TABLE: {checked} tables in {schemas} schemas OK"
    if unchecked:
        shown = ", ".join(unchecked[:3]) + (", …" if len(unchecked) > 3 else "")
        phrase += f" ({len(unchecked)} with no check in their engine: {shown})"
    return phrase


def _verdict(table: str, rows: list[tuple[str, str]]) -> list[str]:
    """``[]`` for a table the server found OK, ``[table]`` for one whose engine has no check;
    :class:`DrillFailed` for anything else.  Warnings before an OK status (a MyISAM table "not
    closed properly" in a crash image) are the server's notes, as is the unsupported check."""
    errors = [text for kind, text in rows if kind == "error"]
    status = [text for kind, text in rows if kind == "status"]
    if errors or (status and status[-1] != "OK"):
        said = "; ".join(errors or status)[:300]
        raise DrillFailed(f"CHECK TABLE {table} on the restored copy says: {said}")
    if status:
        return []
    if any("doesn't support check" in text for _kind, text in rows):
        return [table]
    raise DrillFailed(f"CHECK TABLE {table} on the restored copy gave no status: {rows!r}"[:300])


def check_gtids(cursor: Any, manifest: Mapping[str, Any]) -> list[str]:
    """The copy came up from the archive's redo, not from older files: its GTIDs hold the set
    recorded at the split (MySQL ``gtid_executed``; MariaDB ``gtid_binlog_pos``, domain by
    domain).  Nothing to compare when the backup recorded none."""
    metadata = manifest.get("metadata", {})
    positions = metadata.get("positions") or {}
    if positions.get("gtid_executed"):
        recorded = str(positions["gtid_executed"])
        cursor.execute("SELECT GTID_SUBSET(%s, @@global.gtid_executed), @@global.gtid_executed", (recorded,))
        inside, found = cursor.fetchone()
        if not int(inside):
            raise DrillFailed(
                f"the restored copy's gtid_executed ({_short(found)}) lacks transactions the backup "
                f"recorded at the split ({_short(recorded)})"
            )
        return [f"GTIDs: the copy holds the backup's {_short(recorded)}"]
    if positions.get("gtid_binlog_pos"):
        recorded = str(positions["gtid_binlog_pos"])
        cursor.execute("SELECT @@global.gtid_binlog_pos")
        found = str(cursor.fetchone()[0] or "")
        have = _mariadb_gtids(found)
        behind = [
            f"{domain}-{server}-{seq}"
            for domain, (server, seq) in _mariadb_gtids(recorded).items()
            if have.get(domain, (0, -1))[1] < seq
        ]
        if behind:
            raise DrillFailed(
                f"the restored copy's gtid_binlog_pos ({found or 'empty'}) is behind the backup's "
                f"({recorded}) in {', '.join(behind)}"
            )
        return [f"GTIDs: the copy holds the backup's {_short(recorded)}"]
    return []


def _mariadb_gtids(text: str) -> dict[int, tuple[int, int]]:
    """``0-1-42,1-2-7`` → ``{domain: (server, seq)}``."""
    found = {}
    for domain, server, seq in re.findall(r"(\d+)-(\d+)-(\d+)", text):
        found[int(domain)] = (int(server), int(seq))
    return found


def _short(gtids: Any) -> str:
    text = " ".join(str(gtids or "empty").split())
    return text if len(text) <= 80 else text[:79] + "…"


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def message(error: BaseException) -> str:
    """PyMySQL errors are ``(code, message)``; the message is what a DBA needs."""
    if isinstance(error, pymysql.Error) and len(error.args) >= 2:
        return first_line(Exception(f"{error.args[1]} ({error.args[0]})"))
    return first_line(error)
