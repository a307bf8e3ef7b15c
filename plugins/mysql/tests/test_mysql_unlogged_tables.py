"""MySQL's HOT_BACKUP and tables outside InnoDB's redo log (MyISAM here).

``LOCK INSTANCE FOR BACKUP`` blocks DDL and file operations, not DML: a MyISAM table keeps
changing under it, and a crash image of a MyISAM table being written is a table to repair.  So
under the instance lock the session also takes ``FLUSH TABLES <those tables> WITH READ LOCK``
(MySQL's manual allows the pair): they are flushed, closed and unchanging in the image, while
InnoDB's writers go on.  Proven here by a write to each kind of table inside the window, and
by the restored copy.  (MariaDB's BACKUP STAGE holds non-transactional tables itself.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymysql
from click.testing import CliRunner

from splitmirror.api import Phase, impl
from splitmirror.cli import main
from splitmirror.restore import restore_archive
from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import on_every
from splitmirror_mysql.ledger import DATABASE
from splitmirror_mysql.testing import ContainerMysql, MysqlLedgerDatabase, weak_account

NOTES = f"{DATABASE}.notes"

#: MySQL's alone: MariaDB's BACKUP STAGE holds non-transactional tables itself.
pytestmark = on_every("server", "mysql", pairs=True)


def write(server: ContainerMysql, statement: str) -> str:
    """``statement`` on a connection of its own, waiting at most a second for locks: "ok", or the
    server's error."""
    try:
        with server.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SET SESSION lock_wait_timeout = 1, innodb_lock_wait_timeout = 1")
            cursor.execute(statement)
        return "ok"
    except pymysql.Error as error:
        return f"{error.args[0]} {error.args[1]}"


class WritesInTheWindow:
    """At PREPARE (inside the window, before the filesystem freeze): one write to the MyISAM
    table and one to an InnoDB table, each allowed a second."""

    def __init__(self, server: ContainerMysql) -> None:
        self.server = server
        self.outcome: dict[str, str] = {}

    @impl
    def splitmirror_phase_started(self, session: Any, phase: Phase) -> None:
        if phase is Phase.PREPARE:
            self.outcome["myisam"] = write(self.server, f"INSERT INTO {NOTES} VALUES (2, 'in the window')")
            self.outcome["innodb"] = write(self.server, f"INSERT INTO {DATABASE}.elsewhere VALUES (2)")


def test_hot_backup_holds_tables_outside_innodb_and_only_them(
    server: ContainerMysql, splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    splitmirror_database.create_ledger()
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {NOTES} (id INT PRIMARY KEY, body TEXT) ENGINE=MyISAM")
        cursor.execute(f"INSERT INTO {NOTES} VALUES (1, 'before')")
        cursor.execute(f"CREATE TABLE {DATABASE}.elsewhere (id INT PRIMARY KEY) ENGINE=InnoDB")
    during = WritesInTheWindow(server)
    summary = splitmirror_session.run(splitmirror_database, "hot-backup", during)
    assert summary.status == "DONE"
    assert during.outcome["innodb"] == "ok", during.outcome  # HOT_BACKUP: InnoDB commits go on
    assert during.outcome["myisam"].startswith("1205 Lock wait timeout"), during.outcome
    assert write(server, f"INSERT INTO {NOTES} VALUES (3, 'after')") == "ok"
    # The MyISAM table's writers were held for the window, and blocked_ms says so.
    assert summary.window_ms is not None and summary.blocked_ms is not None
    assert summary.window_ms - summary.blocked_ms < 50, (summary.window_ms, summary.blocked_ms)

    restore = splitmirror_session.restore(summary, splitmirror_session.workspace.root / "restored")
    assert restore.manifest["metadata"]["locked_tables"] == [f"`{DATABASE}`.`notes`"]
    with splitmirror_database.restored_server(restore) as copy:
        ok, text = copy.check_tables()
        assert ok, text
        with copy.connection() as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {NOTES} ORDER BY id")
            assert [row[0] for row in cursor.fetchall()] == [1]
            cursor.execute(f"SELECT id FROM {DATABASE}.elsewhere")
            assert [row[0] for row in cursor.fetchall()] == [2]


def test_hot_backup_without_tables_outside_innodb_locks_no_table(
    server: ContainerMysql, splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    splitmirror_database.create_ledger()
    summary = splitmirror_session.run(splitmirror_database, "hot-backup")
    assert summary.window_ms is not None and summary.blocked_ms is not None
    assert summary.blocked_ms < summary.window_ms, "no table held: only a freeze can block writers"
    manifest = restore_archive(Path(summary.archive or ""), splitmirror_session.workspace.root / "r").manifest
    assert manifest["metadata"]["locked_tables"] == []
    assert manifest["redo_range"]["exact"] is False and manifest["redo_range"]["innodb_lsn"] > 0


def test_a_missing_lock_tables_privilege_is_named_when_it_is_needed(
    server: ContainerMysql, splitmirror_session: SessionRunner, option_file: Path
) -> None:
    """With a MyISAM table, HOT_BACKUP needs LOCK TABLES too; FREEZE (global FTWRL) does not."""
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE DATABASE app")
        cursor.execute("CREATE TABLE app.notes (id INT PRIMARY KEY) ENGINE=MyISAM")
    weak = weak_account(server, option_file, "SELECT, PROCESS, RELOAD, BACKUP_ADMIN")
    outputs = {}
    for mode in ("hot-backup", "freeze"):
        config = splitmirror_session.config(weak, mode)
        result = CliRunner().invoke(main, ["check", str(config.source)])
        outputs[mode] = (result.exit_code, result.output)
    code, output = outputs["hot-backup"]
    assert code == 3 and "Traceback" not in output, output
    assert "account weak@% lacks the LOCK TABLES privilege; GRANT LOCK TABLES ON *.* TO 'weak'@'%'" in output
    assert outputs["freeze"][0] == 0, outputs["freeze"][1]
