"""``splitmirror drill`` on MariaDB and MySQL, through the CLI as a DBA runs it: a backup, then
the archive restored, started in the server's image by the restore's container route, checked
(``CHECK TABLE`` on every table, the GTIDs, the DBA's query), recorded, and cleaned up.  The
newest version of each only: the drill is splitmirror's side, not the server's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from splitmirror.api import DrillFailed
from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import image_for, newest_usable, on_newest
from splitmirror_mysql import drill
from splitmirror_mysql.testing import ContainerMysql, MysqlLedgerDatabase

SERVERS = on_newest("server", "mariadb", "mysql")


def seed(server: ContainerMysql) -> None:
    with server.connection() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE DATABASE shop")
        cursor.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY, total INT) ENGINE=InnoDB")
        cursor.execute("INSERT INTO shop.orders VALUES (1, 10), (2, 20), (3, 30)")
        cursor.execute("CREATE TABLE shop.cache (k INT) ENGINE=MEMORY")  # its engine has no check


def with_drill(config: Path, scratch: Path, **keys: str) -> Path:
    lines = [f"scratch = {json.dumps(str(scratch))}", *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]
    path = config.with_name(f"drill-{len(list(config.parent.glob('drill-*')))}.toml")
    path.write_text(config.read_text() + "[drill]\n" + "\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def drill_containers(scratch: Path) -> list[str]:
    """Drill containers (``label=splitmirror.drill``) mounting a directory under ``scratch``:
    this test's, not those another test's drills run at the same time."""
    listed = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", "label=splitmirror.drill"], capture_output=True, text=True
    )
    mine = []
    for container in listed.stdout.split():
        sources = subprocess.run(
            ["docker", "inspect", "-f", "{{range .Mounts}}{{.Source}} {{end}}", container],
            capture_output=True,
            text=True,
        ).stdout.split()
        if any(Path(source).is_relative_to(scratch) for source in sources):
            mine.append(container)
    return mine


@SERVERS
def test_a_drill_starts_the_archive_in_the_servers_image_and_checks_every_table(
    server: ContainerMysql, splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    seed(server)
    db, ws = splitmirror_database, splitmirror_session.workspace
    scratch = ws.root / "scratch"
    scratch.mkdir()
    config = splitmirror_session.config_file(db.url, "freeze", db.options, db.primary)
    backup = splitmirror_session.command("backup", config, "--json", "-q")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    session = json.loads(backup.stdout)["id"]
    image = image_for(server.database, server.version)

    passing = with_drill(config, scratch, image=image, query="SELECT count(*), sum(total) FROM shop.orders")
    done = splitmirror_session.command("drill", str(session), "--config", passing)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "CHECK TABLE: " in out and " schemas OK (1 with no check in their engine: shop.cache)" in out, out
    assert "✓ GTIDs: the copy holds the backup's " in out, out
    assert "✓ query: 1 row, the first: 3, 60" in out, out
    assert f"drill 1 of session {session}: PASSED (in a container" in out, out
    assert drill_containers(scratch) == [] and list(scratch.iterdir()) == []

    failing = with_drill(config, scratch, image=image, query="SELECT * FROM shop.no_such_table")
    done = splitmirror_session.command("drill", str(session), "--config", failing)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout and "the [drill] query failed on the restored copy: Table " in done.stdout
    assert "no_such_table' doesn't exist (1146)" in done.stdout
    assert drill_containers(scratch) == [] and list(scratch.iterdir()) == []

    # The other flavour's server cannot open this archive and exits: the drill says so as soon
    # as its container stops, not at the end of a timeout it would otherwise wait out.
    other = "mysql" if server.database == "mariadb" else "mariadb"
    wrong = with_drill(config, scratch, image=image_for(other, newest_usable(other)), timeout="5m")
    done = splitmirror_session.command("drill", str(session), "--config", wrong)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout, done.stdout
    assert "stopped before it took connections" in done.stdout or "stopped at once" in done.stdout
    assert drill_containers(scratch) == [] and list(scratch.iterdir()) == []

    shown = splitmirror_session.command("show", str(session), "--json", "--catalog", ws.catalog)
    drills = json.loads(shown.stdout)["drills"]
    assert [(d["status"], d["route"]) for d in drills] == [("PASSED", "container")] + [
        ("FAILED", "container")
    ] * 2
    assert any(c.startswith("CHECK TABLE: ") for c in drills[0]["checks"]), drills[0]


@pytest.mark.parametrize("database", ["mariadb", "mysql"])
def test_the_host_routes_environment_gives_the_copy_its_own_port_socket_and_pid_file(
    database: str, tmp_path: Path
) -> None:
    """The host route runs the printed start line (``mysqld --user=mysql --datadir=DIR ...``)
    under :func:`drill.environment`'s variables.  Here the server's image stands in for the
    database host, its Debian option files included (MariaDB's name the socket and pid file in
    /run/mysqld): the server listens on the drill's port and socket and writes its pid file in
    the drill's directory, nothing in /run/mysqld."""
    if os.geteuid() != 0:
        pytest.skip("the server's directory is handed to the image's mysql user")
    image = image_for(database, newest_usable(database))
    scratch = tmp_path / "drill"
    scratch.mkdir()
    scratch.chmod(0o711)
    env = drill.environment(3399, scratch)
    binary = "mariadbd" if database == "mariadb" else "mysqld"
    initialise = (
        f"mariadb-install-db --user=mysql --datadir={scratch}/data"
        if database == "mariadb"
        else f"mysqld --initialize-insecure --user=mysql --datadir={scratch}/data"
    )
    script = f"""
        set -e
        chown mysql:mysql {scratch}/mysqld  # drill.environment does it where the host has mysql
        mkdir {scratch}/data && chown mysql:mysql {scratch}/data
        {initialise} >/dev/null 2>&1
        ({binary} --user=mysql --datadir={scratch}/data > {scratch}/log 2>&1 &)
        for i in $(seq 120); do grep -q 'ready for connections' {scratch}/log && break; sleep 0.5; done
        ls {scratch}/mysqld; echo /run/mysqld:; ls /run/mysqld 2>/dev/null || true
        grep -i 'socket:' {scratch}/log
    """
    argv = ["docker", "run", "--rm", "-v", f"{scratch}:{scratch}"]
    for name, value in env.items():
        argv += ["-e", f"{name}={value}"]
    done = subprocess.run(
        [*argv, "--entrypoint", "sh", image, "-c", script], capture_output=True, text=True, timeout=180
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    before, _, after = out.partition("/run/mysqld:")
    assert {"mysqld.pid", "mysqld.sock"} <= set(before.split()), out
    assert "mysqld.pid" not in after.split() and "mysqld.sock" not in after.split(), out
    assert f"socket: '{scratch}/mysqld/mysqld.sock'  port: 3399" in out or (
        f"port: 3399  socket: {scratch}/mysqld/mysqld.sock" in out
    ), out
    assert "X Plugin ready" not in out, "MySQL's X Protocol would bind the live server's 33060"


def test_check_table_verdicts() -> None:
    assert drill._verdict("a.t", [("status", "OK")]) == []
    assert drill._verdict("a.t", [("warning", "1 client is using or hasn't closed the table properly"),
                                  ("status", "OK")]) == []  # fmt: skip
    assert drill._verdict("a.m", [("note", "The storage engine for the table doesn't support check")]) == [
        "a.m"
    ]
    for rows in ([("error", "Corrupt"), ("status", "Corrupt")], [("status", "Table is marked as crashed")]):
        with pytest.raises(DrillFailed, match=r"^CHECK TABLE a\.t on the restored copy says: "):
            drill._verdict("a.t", rows)


class Cursor:
    """Answers ``SELECT @@global.gtid_binlog_pos`` with a fixed value."""

    def __init__(self, value: str) -> None:
        self.value = value

    def execute(self, sql: str, params: Any = None) -> None:
        pass

    def fetchone(self) -> tuple[str]:
        return (self.value,)


def test_a_mariadb_copy_behind_the_backups_gtids_fails() -> None:
    manifest = {"metadata": {"positions": {"gtid_binlog_pos": "0-1-42,1-2-7"}}}
    assert drill.check_gtids(Cursor("0-1-43,1-2-7"), manifest) == [
        "GTIDs: the copy holds the backup's 0-1-42,1-2-7"
    ]
    with pytest.raises(DrillFailed, match=r"behind the backup's .* in 0-1-42"):
        drill.check_gtids(Cursor("0-1-41,1-2-9"), manifest)
    with pytest.raises(DrillFailed, match="in 1-2-7"):
        drill.check_gtids(Cursor("0-1-42"), manifest)
    assert drill.check_gtids(Cursor(""), {"metadata": {"positions": {}}}) == []


def test_the_password_comes_from_where_the_backups_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    option_file = tmp_path / "my.cnf"
    option_file.write_text('[client]\nsocket=/run/mysqld/mysqld.sock\npassword="s3cret"\n')
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    assert drill.password(option_file) == "s3cret"
    monkeypatch.setenv("MYSQL_PWD", "from-env")
    assert drill.password(option_file) == "from-env"
