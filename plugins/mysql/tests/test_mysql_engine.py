"""The MySQL/MariaDB engine against a real server: bad input, long queries and lock timeouts,
positions, discovery, restore steps.

What the server's version changes runs on every version: the locks and their timeouts, the
files InnoDB keeps, and the restored copies started by the printed steps.  Tests marked
``newest_only`` check splitmirror's side (its sentences, the checks before the window, what it
records and prints) where the engine branches on the flavour alone: they run on the newest
MariaDB and the newest MySQL.  Every version still runs the same statements on the way that
succeeds, in its contract sessions and drills."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from click.testing import CliRunner

from splitmirror.catalog import SqliteCatalog
from splitmirror.cli import main
from splitmirror.errors import PreflightError, SessionFailed
from splitmirror.restore import restore_archive
from splitmirror.testing import SessionRunner, run_drill
from splitmirror.testing.containers import on_every, on_newest
from splitmirror_mysql.engine import MysqlEngine, MysqlOptions
from splitmirror_mysql.ledger import DATABASE
from splitmirror_mysql.testing import (
    ContainerMysql,
    MysqlLedgerDatabase,
    waiting_ddl,
    weak_account,
    write_option_file,
)

#: One run on the newest of each flavour (see the module docstring).
newest_only = on_newest("server", "mariadb", "mysql")


def check(runner: SessionRunner, database: MysqlLedgerDatabase, mode: str = "freeze") -> tuple[int, str]:
    config = runner.config(database, mode)
    result = CliRunner().invoke(main, ["check", str(config.source)])
    return result.exit_code, result.output.strip()


def one_sentence(output: str) -> str:
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    return output


def test_a_password_in_the_url_is_refused_without_echoing_it() -> None:
    engine = MysqlEngine("mariadb://root:hunter2@127.0.0.1:3306/", MysqlOptions())
    with pytest.raises(
        PreflightError, match="carries a password; remove it and put the password in MYSQL_PWD"
    ) as e:
        engine.connect()
    assert "hunter2" not in str(e.value)


@newest_only
def test_a_wrong_password_is_one_sentence(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    splitmirror_database.create_ledger()
    write_option_file(splitmirror_database.option_file, "wrong")
    code, output = check(splitmirror_session, splitmirror_database)
    assert code != 0
    assert "Access denied for user 'root'" in one_sentence(output) and "option file" in output
    assert "wrong" not in output.replace("wrong password", "")


@newest_only  # the privileges needed branch on the flavour and the mode, never on the version
def test_a_missing_privilege_names_the_grant(
    server: ContainerMysql, splitmirror_session: SessionRunner, option_file: Path
) -> None:
    weak = weak_account(server, option_file, "SELECT, PROCESS")
    code, output = check(splitmirror_session, weak, "hot-backup")
    assert code == 3, output
    assert "account weak@% lacks the RELOAD privilege" in output
    assert "GRANT RELOAD ON *.* TO 'weak'@'%'" in output
    if server.database == "mysql":
        assert "GRANT BACKUP_ADMIN ON *.* TO 'weak'@'%'" in output


@newest_only
def test_a_server_that_is_down_is_one_sentence(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner, server: ContainerMysql
) -> None:
    server.stop()
    code, output = check(splitmirror_session, splitmirror_database)
    assert code != 0
    assert "cannot connect to MySQL/MariaDB at mariadb://root@127.0.0.1" in one_sentence(output) or (
        "cannot connect to MySQL/MariaDB at mysql://root@127.0.0.1" in output
    )


class Busy:
    """Another client holding the server: runs ``statements`` on its own connection in a thread,
    the last one long; :meth:`end` kills it."""

    def __init__(self, server: ContainerMysql, *statements: str) -> None:
        self.server = server
        self.conn = server.connection()
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            row = cursor.fetchone()
        self.ident = int(row[0]) if row else 0
        self.thread = threading.Thread(target=self._run, args=(statements,), daemon=True)
        self.thread.start()
        time.sleep(1.2)  # long enough to show up with TIME >= 1 in the process list

    def _run(self, statements: tuple[str, ...]) -> None:
        try:
            with self.conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        except pymysql.Error:
            pass  # killed by end()

    def end(self) -> None:
        with self.server.connection() as other, other.cursor() as cursor:
            cursor.execute(f"KILL {self.ident}")
        self.thread.join(timeout=10)


@pytest.fixture
def busy(server: ContainerMysql) -> Iterator[list[Busy]]:
    started: list[Busy] = []
    yield started
    for client in started:
        client.end()


@newest_only  # one PROCESSLIST query on every version; lock waits behind it run on all below
def test_check_names_a_long_running_statement(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner, busy: list[Busy]
) -> None:
    splitmirror_database.create_ledger()
    busy.append(Busy(splitmirror_database.server, "SELECT SLEEP(60)"))
    database = MysqlLedgerDatabase(
        splitmirror_database.server, splitmirror_database.option_file, {"long_query_threshold": "1s"}
    )
    code, output = check(splitmirror_session, database)
    assert code == 3, output
    assert f"connection {busy[0].ident} (root@" in output and "'SELECT SLEEP(60)'" in output
    assert "has been running for over 1 s" in output and "KILL" in output


def write_elsewhere(server: ContainerMysql) -> float:
    """Seconds a committed write to a table nobody locks takes (the server is not blocked)."""
    started = time.monotonic()
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SET SESSION lock_wait_timeout = 2, innodb_lock_wait_timeout = 2")
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {DATABASE}.elsewhere (id INT) ENGINE=InnoDB")
        cursor.execute(f"INSERT INTO {DATABASE}.elsewhere VALUES (1)")
    return time.monotonic() - started


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_lock_held_by_another_client_times_out_cleanly(
    mode: str, splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """LOCK TABLES ... WRITE held by an idle client blocks BACKUP STAGE / FTWRL (MySQL's LOCK
    INSTANCE FOR BACKUP ignores table locks: a DDL statement waiting behind an idle transaction
    blocks it instead): the session waits lock_timeout, names the client, releases everything;
    the server keeps taking writes, and the next session runs once the client is gone."""
    splitmirror_database.create_ledger()
    write_elsewhere(splitmirror_database.server)
    server = splitmirror_database.server
    database = MysqlLedgerDatabase(
        server, splitmirror_database.option_file, {"lock_timeout": "2s", "long_query_threshold": "1h"}
    )
    with contextlib.ExitStack() as blocking:
        if server.database == "mysql" and mode == "hot-backup":
            ident = blocking.enter_context(waiting_ddl(server))[0]
        else:
            client = Busy(server, f"LOCK TABLES {DATABASE}.ledger WRITE", "SELECT SLEEP(60)")
            blocking.callback(client.end)
            ident = client.ident
        started = time.monotonic()
        with pytest.raises(SessionFailed) as failure:
            splitmirror_session.run(database, mode)
        assert time.monotonic() - started < 15
        assert failure.value.phase == "QUIESCE"
        assert "waited 2 s for a lock held by" in failure.value.reason
        assert f"connection {ident} (root@" in failure.value.reason, failure.value.reason
        assert "(ended by the server's lock_wait_timeout)" in failure.value.reason
        assert write_elsewhere(server) < 1.0, "the server must keep taking writes"
        row = SqliteCatalog(splitmirror_session.workspace.catalog).get(failure.value.session_id)
        assert (row.status, row.failed_phase) == ("FAILED", "QUIESCE")

    assert splitmirror_session.run(database, mode).status == "DONE"


def test_an_open_transaction_does_not_block_and_is_not_in_the_restore(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner, busy: list[Busy]
) -> None:
    """FREEZE holds commits, not transactions: an uncommitted insert neither blocks the lock
    nor survives into the restored copy (crash recovery rolls it back)."""
    splitmirror_database.create_ledger()
    server = splitmirror_database.server
    busy.append(
        Busy(
            server, "BEGIN", f"INSERT INTO {DATABASE}.ledger (writer, seq) VALUES (-7, 1)", "SELECT SLEEP(60)"
        )
    )
    summary = splitmirror_session.run(splitmirror_database, "freeze")
    assert summary.status == "DONE"
    restored = splitmirror_database.restored_ledger(
        splitmirror_session.restore(summary, splitmirror_session.workspace.root / "restored")
    )
    assert restored.integrity_ok, restored.integrity
    assert -7 not in restored.rows


# The positions' statements branch on the flavour; the one version branch (SHOW MASTER STATUS
# before MySQL 8.2) needs a version IMAGES lacks.  The point-in-time test below replays from a
# FREEZE position on every version.
@newest_only
def test_freeze_records_exact_positions_in_catalog_manifest_and_show(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """MySQL: from performance_schema.log_status, with the GTID set and InnoDB's LSN."""
    splitmirror_database.create_ledger()
    mariadb = splitmirror_database.server.database == "mariadb"
    with splitmirror_database.server.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SHOW BINLOG STATUS" if mariadb else "SHOW BINARY LOG STATUS")
        before: Any = cursor.fetchone()
        if not mariadb:
            cursor.execute("SELECT @@server_uuid")
            uuid = cursor.fetchone()[0]
    summary = splitmirror_session.run(splitmirror_database, "freeze")
    positions = dict(summary.redo_range)
    assert positions["exact"] is True
    assert str(positions["binlog_file"]).startswith("binlog.")
    assert positions["binlog_file"] == before[0] and int(positions["binlog_position"]) >= int(before[1])
    if mariadb:
        assert positions["gtid_binlog_pos"]
    else:  # the ledger's own transactions are in the GTID set; the LSN is past its checkpoint
        assert str(positions["gtid_executed"]).startswith(f"{uuid}:1-"), positions
        assert int(positions["innodb_lsn"]) >= int(positions["innodb_lsn_checkpoint"]) > 0, positions
    manifest = restore_archive(Path(summary.archive or ""), splitmirror_session.workspace.root / "r").manifest
    assert manifest["redo_range"] == positions
    assert manifest["metadata"]["positions"] == positions
    shown = CliRunner().invoke(
        main, ["show", str(summary.id), "--catalog", str(splitmirror_session.workspace.catalog)]
    )
    assert f"binlog position {positions['binlog_position']}" in shown.output and "exact yes" in shown.output


def test_tablespaces_are_archived_in_innodb_space_id_order(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner, server: ContainerMysql
) -> None:
    """The archive's .ibd members follow the space ids the server reports, the ledger's new
    table included (its page 0 may not be on disk yet, so the file alone would not tell).
    MySQL's dictionary also names the undo tablespaces (undo_001, not .ibd files) and its own
    mysql.ibd (space id 4294967294: last)."""
    splitmirror_database.create_ledger()
    table = "INNODB_SYS_TABLESPACES" if server.database == "mariadb" else "INNODB_TABLESPACES"
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT NAME, SPACE FROM information_schema.{table} WHERE SPACE > 0")
        rows = cursor.fetchall()
    # The temporary tablespace (ibtmp1) is recreated at every start and never archived; undo
    # tablespaces (separate files by default since MariaDB 11.0: innodb_undo001 is undo001)
    # are system files, archived after the tables.
    undo = {f"undo{name[len('innodb_undo') :]}" for name, _ in rows if name.startswith("innodb_undo")}
    by_name = {
        f"{name}.ibd": int(space)
        for name, space in rows
        if name != "innodb_temporary" and not name.startswith("innodb_undo")
    }
    summary = splitmirror_session.run(splitmirror_database, "freeze")
    files = SqliteCatalog(splitmirror_session.workspace.catalog).files(summary.id)
    archived = [f.member for f in files if f.member.endswith(".ibd")]
    assert undo <= {f.member for f in files if f.role == "system"}, undo
    assert f"{DATABASE}/ledger.ibd" in archived
    assert set(archived) == set(by_name), set(archived) ^ set(by_name)
    assert archived == sorted(archived, key=by_name.__getitem__)


# The printed text: its one version branch (--skip-replica-start from MySQL 8.0.26) takes the same
# side on every version IMAGES knows; the copies started by these steps run on every version
# (the contract's drills, the point-in-time test).
@newest_only
def test_the_restore_prints_start_and_point_in_time_steps(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """Both start lines carry the binary log the server ran with (--log-bin=binlog
    --server-id=1 in this harness, as in compose/docker-compose.yml); --json gives the same
    commands as argument lists."""
    splitmirror_database.create_ledger()
    summary = splitmirror_session.run(splitmirror_database, "freeze")
    target = splitmirror_session.workspace.root / "restored"
    catalog = str(splitmirror_session.workspace.catalog)
    result = CliRunner().invoke(main, ["restore", str(summary.id), "--to", str(target), "--catalog", catalog])
    assert result.exit_code == 0, result.output
    options = "--log-bin=binlog --server-id=1 --skip-slave-start"
    binary = "mariadbd"
    if splitmirror_database.server.database == "mysql":  # GTIDs as the server ran; 8.0.26+'s word
        with splitmirror_database.server.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT @@gtid_mode")
            gtids = cursor.fetchone()[0] == "ON"
        binary = "mysqld"
        options = (
            "--log-bin=binlog --server-id=1"
            + (" --gtid-mode=ON --enforce-gtid-consistency=ON" if gtids else "")
            + " --skip-replica-start"
        )
    assert f"{binary} --user=mysql --datadir={target} {options} &" in result.output
    assert f"docker run -d -v {target}:/var/lib/mysql IMAGE {options}" in result.output
    assert f"--start-position={summary.redo_range['binlog_position']}" in result.output
    again = CliRunner().invoke(
        main, ["restore", str(summary.id), "--to", str(target), "--catalog", catalog, "--force", "--json"]
    )
    steps = json.loads(again.output)["steps"]
    container = [step for step in steps if step["kind"] == "container"]
    volume = f"{target}:/var/lib/mysql"
    assert [step["argv"] for step in container] == [
        ["docker", "run", "-d", "-v", volume, "IMAGE", *options.split()]
    ]


@pytest.fixture
def unlogged(server: ContainerMysql, option_file: Path) -> MysqlLedgerDatabase:
    """The same server restarted without the binary log."""
    server.stop()
    server.binlog = False
    server.start()
    return MysqlLedgerDatabase(server, option_file)


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_server_without_the_binary_log_restores_by_the_printed_steps(
    mode: str, unlogged: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """The other half of the binary-log matrix (the contract suite's drill runs with it on):
    no binary log to name, and the copy still starts by the printed step alone."""
    with unlogged.server.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT @@log_bin")
        assert cursor.fetchone() == (0,), "the fixture did not turn the binary log off"
    report = run_drill(unlogged, splitmirror_session, mode)
    assert report.acknowledged > 0 and report.passed, str(report)


def gtid_executed(conn: Any) -> str:
    with conn.cursor() as cursor:
        cursor.execute("SELECT @@global.gtid_executed")
        return str(cursor.fetchone()[0])


def ledger_rows(conn: Any) -> set[tuple[int, int]]:
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT writer, seq FROM {DATABASE}.ledger")
        return {(int(w), int(q)) for w, q in cursor.fetchall()}


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_point_in_time_recovery_replays_the_binlog_from_the_printed_position(
    mode: str, splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """The printed point-in-time step, for real: writers commit through the session and after
    it; the copy, started as printed, then replayed from the printed position with the live
    server's later binary logs, holds exactly the live server's ledger — no row missing, none
    applied twice (the ledger's primary key would refuse it).  In HOT_BACKUP commits run until
    the freeze, so the position read before the split would replay some twice: the printed one
    is the end of the restored binary log.  MySQL with GTIDs replays them as they are (no
    --skip-gtids): the copy's GTID set goes on being the live server's, and a transaction the
    copy already holds is skipped, not applied twice, as a second replay of the same binary
    logs from their first byte shows."""
    server = splitmirror_database.server
    tool, client = ("mariadb-binlog", "mariadb") if server.database == "mariadb" else ("mysqlbinlog", "mysql")
    splitmirror_database.create_ledger()
    root = splitmirror_session.workspace.root
    writers = [
        subprocess.Popen(splitmirror_database.writer_command(w, root / f"acks-{w}.txt")) for w in (1, 2)
    ]
    try:
        while not all((root / f"acks-{w}.txt").exists() for w in (1, 2)):
            time.sleep(0.05)
        summary = splitmirror_session.run(splitmirror_database, mode)
        time.sleep(0.5)  # commits after the backup, for the replay to bring back
    finally:
        for writer in writers:
            writer.terminate()
            writer.wait(timeout=30)
    restore = splitmirror_session.restore(summary, root / "restored")
    (note,) = [step.text() for step in restore.steps if step.kind == "note"]
    position, first = re.findall(r"--start-position=(\d+) (binlog\.\d+)", note)[0]
    later = restore.directory / "pitr"  # the live binary logs, beside the restored ones (never over them)
    later.mkdir()
    for binlog in sorted(server.datadir.glob("binlog.[0-9]*")):
        if binlog.name >= first:
            (later / binlog.name).write_bytes(binlog.read_bytes())
    # The copy runs as printed, without the live container's MARIADB_ROOT_PASSWORD.
    write_option_file(later / "client.cnf", server.password)
    with splitmirror_database.restored_server(restore) as copy, server.connection() as live:
        assert copy.container is not None
        files = " ".join(f"/var/lib/mysql/pitr/{p.name}" for p in sorted(later.glob("binlog.*")))
        code, output = copy.container.exec(
            [
                "sh", "-c",
                f"{tool} --start-position={position} {files} "
                f"| {client} --defaults-extra-file=/var/lib/mysql/pitr/client.cnf -uroot",
            ]
        )  # fmt: skip
        assert code == 0, output
        with copy.connection() as conn:
            assert ledger_rows(conn) == ledger_rows(live)
            if server.database == "mysql":
                assert gtid_executed(conn) == gtid_executed(live)
        if server.database == "mysql":
            code, output = copy.container.exec(
                [
                    "sh",
                    "-c",
                    f"{tool} {files} | {client} --defaults-extra-file=/var/lib/mysql/pitr/client.cnf -uroot",
                ]
            )
            assert code == 0, output
            with copy.connection() as conn:
                assert ledger_rows(conn) == ledger_rows(live)
                assert gtid_executed(conn) == gtid_executed(live)
    if mode == "freeze":
        assert (first, int(position)) == (
            summary.redo_range["binlog_file"],
            summary.redo_range["binlog_position"],
        )


def test_the_watchdog_ends_a_wait_the_server_would_let_run_longer(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner, busy: list[Busy]
) -> None:
    """lock_wait_timeout counts whole seconds: with lock_timeout 1.01 s the server would wait 2 s,
    so the watchdog (at 1.51 s) is what ends the wait; the server is released all the same."""
    splitmirror_database.create_ledger()
    server = splitmirror_database.server
    busy.append(Busy(server, f"LOCK TABLES {DATABASE}.ledger WRITE", "SELECT SLEEP(60)"))
    database = MysqlLedgerDatabase(
        server, splitmirror_database.option_file, {"lock_timeout": "1.01s", "long_query_threshold": "1h"}
    )
    with pytest.raises(SessionFailed) as failure:
        splitmirror_session.run(database, "freeze")
    assert failure.value.phase == "QUIESCE"
    assert "(ended by splitmirror's watchdog)" in failure.value.reason, failure.value.reason
    assert f"connection {busy[0].ident} (root@" in failure.value.reason
    assert write_elsewhere(server) < 1.0


@on_every("server", "mariadb", pairs=True)  # freeze_lock chooses among MariaDB's locks
def test_flush_tables_with_read_lock_is_a_working_freeze_fallback(
    server: ContainerMysql, option_file: Path, splitmirror_session: SessionRunner
) -> None:
    """freeze_lock = "ftwrl": the restore drill passes with FLUSH TABLES WITH READ LOCK as the lock."""
    database = MysqlLedgerDatabase(server, option_file, {"freeze_lock": "ftwrl"})
    report = run_drill(database, splitmirror_session, "freeze")
    assert report.acknowledged > 0 and report.passed, str(report)


@newest_only  # identity_problems branches on the flavour only
def test_an_older_copy_of_the_data_directory_is_refused(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner, tmp_path: Path
) -> None:
    """A config left pointing at an old copy passes every other check; the server's own binary
    log (MariaDB) or UUID (MySQL) tells it is not the server's, before anything is quiesced."""
    splitmirror_database.create_ledger()
    server = splitmirror_database.server
    old = tmp_path / "old-datadir"
    subprocess.run(["cp", "-a", str(server.datadir), str(old)], check=True)
    if server.database == "mysql":
        (old / "auto.cnf").write_text("[auto]\nserver-uuid=00000000-0000-0000-0000-000000000000\n")
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute(f"INSERT INTO {DATABASE}.ledger (writer, seq) VALUES (-5, 1)")
    stale = MysqlLedgerDatabase(
        server, splitmirror_database.option_file, {"path_map": {"/var/lib/mysql": str(old)}}, primary=old
    )
    code, output = check(splitmirror_session, stale)
    assert code == 3, output
    assert f"the data directory {old} holds" in output and "point [mirror] primary" in output
    assert check(splitmirror_session, splitmirror_database)[0] == 0
