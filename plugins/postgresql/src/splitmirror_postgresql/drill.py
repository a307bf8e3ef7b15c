"""``splitmirror drill`` for PostgreSQL: wait for the restored copy, amcheck it, ask the query.

The copy was started by the restore's own steps (``pg_ctl ... start`` on this host, or the
image's ``docker run``), on a port of the drill's.  :func:`check` then

1. connects as the ``[database] url``'s user and database, to the copy's host and port, with
   the password a backup would use (:mod:`.pgpass`: ``PGPASSWORD``, else the password file's
   line for the *live* server), and waits, until the drill's deadline, while the server says it
   is starting up or recovering, or refuses connections: replaying the backup's WAL is part of
   opening the copy.  A copy that is in recovery once it answers (a standby's) waits too;
2. runs amcheck, the checks ``pg_amcheck`` runs, in every database that accepts connections:
   ``verify_heapam`` on every heap table, materialized view and TOAST table, and
   ``bt_index_check(heapallindexed => true)`` on every valid B-tree index, system catalogs
   included (``CREATE EXTENSION IF NOT EXISTS amcheck`` first: the copy is scratch);
3. runs ``[drill] query`` in the URL's database.

**Why SQL, not the ``pg_amcheck`` program.**  It is the one way that works on both routes: in
the container route this host may have no PostgreSQL client programs at all (the server's are
inside the image), and a host's ``pg_amcheck`` of another major version than the copy's is not
a combination PostgreSQL promises.  The functions are the server's own, from its own contrib
package, so they always match the copy; the connection is the one the drill has anyway (its
password included, which a program would need passed in its environment); and each finding
comes back per relation, so a failure names the relation and what amcheck said about it.
``heapallindexed`` is ``pg_amcheck --heapallindexed``: every heap tuple must have its index
entry, which reading the index alone cannot show; it costs a heap scan per index.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from splitmirror.api import DrillCopy, DrillFailed, answer, first_line

from . import pgpass, restored_paths

#: What a server says while it is coming up (or the port says while nothing listens yet).
STARTING = (
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "the database system is in recovery mode",
    "connection refused",
    "server closed the connection unexpectedly",
    "connection reset by peer",
    "timeout expired",
    "no such file or directory",
)
#: Seconds between attempts to connect.
POLL_S = 0.5
#: Where the server's own tables and indexes are chosen as ``pg_amcheck`` chooses them: heap
#: tables, materialized views and TOAST tables; B-tree indexes that are ready, valid and live;
#: no other session's temporary relation.
RELATIONS = """
SELECT c.oid, c.oid::regclass::text, c.relkind = 'i'
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_am a ON a.oid = c.relam
 WHERE c.relpersistence <> 't'
   AND ((c.relkind IN ('r', 'm', 't') AND a.amname = 'heap')
     OR (c.relkind = 'i' AND a.amname = 'btree' AND EXISTS (
           SELECT 1 FROM pg_catalog.pg_index i
            WHERE i.indexrelid = c.oid AND i.indisready AND i.indisvalid AND i.indislive)))
 ORDER BY c.relkind = 'i', c.oid
"""
#: Databases ``pg_amcheck --all`` checks: those that accept connections and are not left
#: invalid by an interrupted ``DROP DATABASE``.
DATABASES = (
    "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND datconnlimit <> -2 ORDER BY datname"
)


def check(copy: DrillCopy) -> list[str]:
    """Open, amcheck and query the started ``copy``; what was checked, one phrase each."""
    if urlsplit(copy.url).password:
        raise DrillFailed(
            "the [database] url carries a password; remove it and put the password in PGPASSWORD or "
            "~/.pgpass (PGPASSFILE), which splitmirror never writes anywhere"
        )
    clock = time.monotonic()
    checks = []
    with _connect(copy) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        waited = time.monotonic() - clock
        checks.append(f"PostgreSQL {version[0] if version else '?'} opened the copy after {waited:.1f} s")
        databases = [str(name) for (name,) in conn.execute(DATABASES)]
        found = _Findings()
        for database in databases:
            if database == conn.info.dbname:
                _amcheck(conn, database, copy, found)
            else:
                with _connect(copy, database) as other:
                    _amcheck(other, database, copy, found)
        if found.corrupt:
            first = "; ".join(found.corrupt[:3])
            more = f" (and {len(found.corrupt) - 3} more)" if len(found.corrupt) > 3 else ""
            raise DrillFailed(
                f"amcheck found corruption in {_count(len(found.corrupt), 'relation')}: {first}{more}"
            )
        checks.append(
            f"amcheck: {_count(found.tables, 'table')} and {_count(found.indexes, 'index', 'indexes')} "
            f"in {_count(len(databases), 'database')}, no corruption"
        )
        if copy.query:
            checks.append(f"query: {_query(conn, copy)}")
    return checks


def stop(copy: DrillCopy) -> None:
    """Stop a copy the host route's ``pg_ctl start`` left running as a daemon: ``pg_ctl stop -m
    fast`` as the data directory's owner (pg_ctl refuses root), then ``-m immediate``, then
    SIGKILL of the postmaster.  Nothing to do for a container (the drill removes it) or a copy
    that is not running; never raises."""
    if copy.route != "host":
        return
    datadir = restored_paths.data_directory(copy.directory, copy.manifest)
    for mode in ("fast", "immediate"):
        if _postmaster(datadir) is None:
            return
        argv = ["pg_ctl", "-D", str(datadir), "-m", mode, "-w", "-t", "60", "stop"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [*_as_owner(datadir), *argv], env={**os.environ, "PATH": copy.path}, cwd="/",
                capture_output=True, timeout=90, check=False,
            )  # fmt: skip
    pid = _postmaster(datadir)
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# -- connecting -----------------------------------------------------------------------------


def _params(copy: DrillCopy, dbname: str | None) -> dict[str, Any]:
    """The URL's connection parameters (user, database, TLS, service...) with the copy's host
    and port, and the live server's password (:mod:`.pgpass`) when libpq would not find one
    itself in ``PGPASSWORD``."""
    params: dict[str, Any] = {
        key: value
        for key, value in conninfo_to_dict(copy.url).items()
        if key not in ("host", "hostaddr", "port")
    }
    params.update(host=copy.host or "127.0.0.1", port=copy.port, autocommit=True)
    if dbname is not None:
        params["dbname"] = dbname
    password = None if os.environ.get("PGPASSWORD") else pgpass.live_password(copy.url)
    if password is not None:
        params["password"] = password
    return params


def _connect(copy: DrillCopy, dbname: str | None = None) -> psycopg.Connection[Any]:
    """A connection to the copy once it is open and out of recovery; :class:`DrillFailed`
    when it refuses for good, stops, or is not open by the deadline."""
    params = _params(copy, dbname)
    last = "no answer yet"
    while True:
        try:
            conn = psycopg.connect(**params, connect_timeout=max(2, min(10, int(copy.left()))))
        except psycopg.OperationalError as error:
            last = _said(error)
            if not any(phrase in last.lower() for phrase in STARTING):
                raise DrillFailed(
                    f"the restored copy refused {params.get('user') or 'the URL’s user'} "
                    f"({params.get('dbname') or 'its database'}): {last}; the password comes from "
                    "PGPASSWORD or the password file's line for the live server, as for backups, and "
                    "the copy's pg_hba.conf must admit the user from 127.0.0.1"
                ) from None
        else:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and row[0] is False:
                _limit(conn, copy)
                return conn
            conn.close()
            last = "the server is still in recovery (a copy of a standby stays there: remove standby.signal)"
        gone = _gone(copy)
        if gone or copy.left() <= 0:
            raise DrillFailed(_not_open(copy, gone, last))
        time.sleep(min(POLL_S, copy.left()))


def _limit(conn: psycopg.Connection[Any], copy: DrillCopy) -> None:
    """No statement outlives the drill's deadline."""
    milliseconds = max(1000, int(copy.left() * 1000))
    conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, false)", (str(milliseconds),))


def _said(error: psycopg.Error) -> str:
    """What the server or the network said, without libpq's ``connection to server at ...
    failed:`` prefixes."""
    return first_line(error).rsplit(" failed: ", 1)[-1].strip()


def _not_open(copy: DrillCopy, gone: str | None, last: str) -> str:
    where = f"{copy.host}:{copy.port}"
    what = (
        f"{gone} before PostgreSQL opened the restored copy at {where} ({last})"
        if gone
        else f"PostgreSQL did not open the restored copy at {where} by the [drill] timeout ({last})"
    )
    if copy.route != "host":
        return what  # the drill adds the container's log
    log = restored_paths.data_directory(copy.directory, copy.manifest) / "startup.log"
    return f"{what}; startup.log ends: {_tail(log)}"


def _tail(log: Path, lines: int = 3) -> str:
    """The last lines of a server log, each without its time stamp and process ID."""
    try:
        text = log.read_text(errors="replace")
    except OSError as error:
        return f"(unreadable: {error.strerror})"
    kept = [re.sub(r"^\d{4}-\d\d-\d\d [\d:.]+ \S+ \[\d+\] ", "", line).strip() for line in text.splitlines()]
    return " / ".join([line for line in kept if line][-lines:]) or "(empty)"


def _gone(copy: DrillCopy) -> str | None:
    """Why waiting longer is pointless: the host route's postmaster (``pg_ctl``'s daemon) is
    gone, or the container stopped; None while it may still come up."""
    if copy.route == "host":
        datadir = restored_paths.data_directory(copy.directory, copy.manifest)
        return None if _postmaster(datadir) is not None else "the server stopped"
    return None if copy.running() else "the container stopped"


def _postmaster(datadir: Path) -> int | None:
    """The running postmaster's process ID from ``postmaster.pid``, or None."""
    try:
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _as_owner(datadir: Path) -> list[str]:
    """``runuser -u OWNER --`` when we are root and the data directory's owner is not."""
    try:
        owner = datadir.stat().st_uid
    except OSError:
        return []
    if os.geteuid() != 0 or owner == 0:
        return []
    return ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--"]


# -- amcheck --------------------------------------------------------------------------------


class _Findings:
    def __init__(self) -> None:
        self.tables = 0
        self.indexes = 0
        #: "index public.t_pkey in database app: <what amcheck said>", one per relation.
        self.corrupt: list[str] = []


def _amcheck(conn: psycopg.Connection[Any], database: str, copy: DrillCopy, found: _Findings) -> None:
    """amcheck every table and B-tree index of one database into ``found``."""
    schema = _install(conn, database)
    heap = sql.SQL(
        "SELECT blkno, offnum, attnum, msg FROM {}.verify_heapam(%s::oid::regclass, "
        "on_error_stop := false, check_toast := true, skip := 'none')"
    ).format(sql.Identifier(schema))
    index = sql.SQL("SELECT {}.bt_index_check(%s::oid::regclass, true)").format(sql.Identifier(schema))
    for oid, name, is_index in conn.execute(RELATIONS).fetchall():
        what = f"{'index' if is_index else 'table'} {name} in database {database}"
        try:
            rows = conn.execute(index if is_index else heap, (oid,)).fetchall()
        except psycopg.errors.QueryCanceled:
            raise DrillFailed(f"amcheck did not finish by the [drill] timeout (at {what})") from None
        except psycopg.errors.UndefinedTable:
            continue  # dropped meanwhile: nothing else runs on the copy, but never a false alarm
        except psycopg.OperationalError as error:
            raise DrillFailed(
                f"the copy's server went away during amcheck of {what}: {first_line(error)}"
            ) from None
        except psycopg.Error as error:  # bt_index_check raises; a page that fails its checksum too
            rows, said = [], first_line(error)
            found.corrupt.append(f"{what}: {said}")
        if is_index:
            found.indexes += 1
        else:
            found.tables += 1
        if not is_index and rows:
            blkno, offnum, attnum, msg = rows[0]
            at = ", ".join(
                f"{label} {value}"
                for label, value in (("block", blkno), ("offset", offnum), ("attribute", attnum))
                if value is not None
            )
            others = f" (and {len(rows) - 1} more findings)" if len(rows) > 1 else ""
            found.corrupt.append(f"{what}: {at}: {msg}{others}")
        if copy.left() <= 0:
            raise DrillFailed(f"amcheck did not finish by the [drill] timeout (at {what})")


def _install(conn: psycopg.Connection[Any], database: str) -> str:
    """The schema of amcheck in this database, installed (into pg_catalog, as ``pg_amcheck
    --install-missing`` does) or updated to have ``verify_heapam`` when needed."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck WITH SCHEMA pg_catalog")
        row = conn.execute(
            "SELECT n.nspname, to_regproc(quote_ident(n.nspname) || '.verify_heapam') IS NOT NULL"
            "  FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = 'amcheck'"
        ).fetchone()
        if row is not None and not row[1]:
            conn.execute("ALTER EXTENSION amcheck UPDATE")
    except psycopg.Error as error:
        raise DrillFailed(
            f"amcheck cannot run in database {database} of the copy: {first_line(error)}; drill as a "
            "superuser, or install amcheck on the live server and grant its functions to the drill's role"
        ) from None
    return str(row[0]) if row is not None else "pg_catalog"


def _query(conn: psycopg.Connection[Any], copy: DrillCopy) -> str:
    try:
        cursor = conn.execute(copy.query or "")
        rows = cursor.fetchall() if cursor.description is not None else []
    except psycopg.Error as error:
        raise DrillFailed(f"the [drill] query failed on the copy: {first_line(error)}") from None
    return answer(rows)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
