"""``splitmirror drill`` on PostgreSQL, as a DBA runs it: ``splitmirror backup CONFIG``, then
``splitmirror drill ID --config CONFIG`` with ``[drill] image`` (the container route) or ``[drill]
binaries`` (the host route).  The copy must open, pass amcheck and answer the query; the outcome
is recorded in the catalog; no container, server process or scratch file outlives the drill.

The drill does not change with the server's version beyond the image: the newest only."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from splitmirror.catalog import SqliteCatalog
from splitmirror.testing import SessionRunner, Workspace
from splitmirror.testing.containers import Unavailable, image_for, on_newest, versions
from splitmirror_postgresql import pgpass
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres, pgpass_line
from splitmirror_postgresql.testing import (
    HostLedgerDatabase,
    HostPostgres,
    PostgresLedgerDatabase,
    give_to_postgres,
    make_traversable,
)

ON_NEWEST = on_newest("container_postgres", "postgres")
AMCHECK = re.compile(r"amcheck: (\d+) tables and (\d+) indexes in (\d+) databases, no corruption")
#: Where a Debian-built server makes its socket unless its configuration says otherwise; a host
#: with PostgreSQL installed has it (the package makes it), so the host route's copy uses it.
SOCKET_DIR = Path("/var/run/postgresql")


def cli(*args: str | Path | int, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``splitmirror ARGS`` in a process of its own, with this test's environment (PGPASSFILE)."""
    argv = [sys.executable, "-m", "splitmirror", *(str(arg) for arg in args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def drill_config(
    runner: SessionRunner, database: PostgresLedgerDatabase, mode: str = "hot-backup", **drill: str
) -> Path:
    """The session's configuration with a ``[drill]`` section; the scratch directory is the
    workspace's ``scratch``, made traversable for the server's OS user (as a DBA's is)."""
    scratch = runner.workspace.root / "scratch"
    scratch.mkdir(exist_ok=True)
    make_traversable(scratch / "x")
    config = runner.config_file(database.url, mode, database.options, database.primary)
    keys = {"scratch": str(scratch), "timeout": "300s", **drill}
    config.write_text(
        config.read_text() + "[drill]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    )
    return config


def backup(config: Path) -> int:
    done = cli("backup", config, "--json", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    return int(json.loads(done.stdout)["id"])


def drills(workspace: Workspace) -> list[Any]:
    catalog = SqliteCatalog(workspace.catalog)
    try:
        return catalog.drills()
    finally:
        catalog.close()


def drill_containers(image: str) -> list[str]:
    """Drill containers of ``image`` that still exist, running or not (another engine's drills
    may run beside this test: only this image's count)."""
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=splitmirror.drill", "--filter", f"ancestor={image}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return listed.stdout.split()


def processes_under(directory: Path) -> list[str]:
    """Command lines of running processes that name ``directory`` (a copy's postgres -D ...)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            words = cmdline.read_bytes().decode(errors="replace").split("\0")
            if any(str(directory) in word for word in words):
                found.append(" ".join(words).strip())
    return found


def orders(conninfo: str, password: str | None = None) -> None:
    """A table of the DBA's own, with an index, for the query and for amcheck to find."""
    with psycopg.connect(conninfo, password=password, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g")
        conn.execute("CREATE INDEX orders_note ON orders (note)")


def takes_an_order(conninfo: str, password: str | None = None) -> bool:
    """The live server still takes writes (the drill left it alone)."""
    with psycopg.connect(conninfo, password=password, autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (1001, 'after the drill')")
        return conn.execute("SELECT count(*) FROM orders").fetchone() == (1001,)


@pytest.fixture
def live_pgpass(
    container_postgres: ContainerPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password file whose one line names the *live* server's port, as a DBA's usually does:
    libpq's own lookup for the copy (another port) finds nothing, so the drill must look the
    password up as a backup does."""
    line = pgpass_line(container_postgres.password).replace(":*:", f":{container_postgres.host_port}:", 1)
    path = tmp_path / "pgpass-live"
    path.write_text(line)
    path.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(path))


@ON_NEWEST
def test_a_container_drill_opens_checks_records_and_cleans_up(
    container_postgres: ContainerPostgres, live_pgpass: None, splitmirror_session: SessionRunner
) -> None:
    database = ContainerLedgerDatabase(container_postgres)
    orders(database.url, container_postgres.password)
    config = drill_config(
        splitmirror_session, database, image=container_postgres.image, query="SELECT count(*) FROM orders"
    )
    session = backup(config)
    done = cli("drill", session, "--config", config)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    checked = AMCHECK.search(done.stdout)
    assert checked, done.stdout
    tables, indexes, databases = (int(n) for n in checked.groups())
    assert databases == 2 and tables > 50 and indexes > 100  # postgres and template1, catalogs included
    assert "✓ query: 1 row, the first: 1000" in done.stdout
    [record] = drills(splitmirror_session.workspace)
    assert (record.session_id, record.status, record.route) == (session, "PASSED", "container")
    assert record.checks[1:] == [checked.group(0), "query: 1 row, the first: 1000"]
    assert record.checks[0].startswith(f"PostgreSQL {container_postgres.version}.")
    print(f"container drill: {record.duration_ms / 1000:.1f} s")
    assert drill_containers(container_postgres.image) == []
    assert list((splitmirror_session.workspace.root / "scratch").iterdir()) == []
    assert takes_an_order(database.url, container_postgres.password)


@ON_NEWEST
def test_a_copy_the_image_cannot_open_fails_the_drill_with_the_servers_reason(
    container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    """The image of the previous major version refuses the newer copy and exits: the drill says
    why from the server's log, at once, not at the timeout.  (PostgreSQL 17 stops at 18's
    postgresql.conf, whose new parameters it does not know, before it reads PG_VERSION.)"""
    older = versions("postgres")[versions("postgres").index(container_postgres.version) - 1]
    try:
        image = image_for("postgres", older)
    except Unavailable as reason:
        pytest.skip(str(reason))
    database = ContainerLedgerDatabase(container_postgres)
    config = drill_config(splitmirror_session, database, image=image, timeout="120s")
    session = backup(config)
    done = cli("drill", session, "--config", config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout
    [record] = drills(splitmirror_session.workspace)
    print(f"failed drill: {record.duration_ms / 1000:.1f} s: {record.error}")
    assert record.status == "FAILED" and record.route == "container"
    error = record.error or ""
    assert error.startswith("the container stopped before PostgreSQL opened the restored copy"), error
    assert re.search(
        r"\(the server.s last words: .*FATAL: +"
        r"(configuration file .* contains errors|database files are incompatible)",
        error,
    )
    assert record.duration_ms < 60_000, "the stopped container must end the wait, not the timeout"
    assert drill_containers(image) == []
    assert list((splitmirror_session.workspace.root / "scratch").iterdir()) == []


@ON_NEWEST
def test_a_corrupt_index_fails_the_drill_naming_it(
    container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    """An index page damaged on the primary (as a bad disk leaves it) is archived faithfully: the
    archive's checksums match, and only amcheck on the opened copy finds it."""
    orders(container_postgres.url, container_postgres.password)
    with psycopg.connect(
        container_postgres.url, password=container_postgres.password, autocommit=True
    ) as conn:
        row = conn.execute("SELECT pg_relation_filepath('orders_note')").fetchone()
        conn.execute("CHECKPOINT")
    assert row is not None
    container_postgres.stop()
    with (container_postgres.datadir / row[0]).open("r+b") as index:
        index.seek(8192 + 4000)  # inside block 1, the index's first leaf page
        index.write(b"\xff" * 16)
    container_postgres.start()  # on another port
    database = ContainerLedgerDatabase(container_postgres)
    config = drill_config(splitmirror_session, database, image=container_postgres.image)
    session = backup(config)
    done = cli("drill", session, "--config", config)
    assert done.returncode == 1, done.stdout + done.stderr
    [record] = drills(splitmirror_session.workspace)
    print(record.error)
    assert record.status == "FAILED"
    assert (record.error or "").startswith(
        "amcheck found corruption in 1 relation: index orders_note in database postgres: "
    )
    assert "block 1" in (record.error or "")
    assert drill_containers(container_postgres.image) == []


@contextlib.contextmanager
def port_taken(port: int) -> Iterator[None]:
    """``port`` held on 127.0.0.1 and ::1, where a live server on this host listens."""
    held = []
    try:
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = socket.socket(family, socket.SOCK_STREAM)
            held.append(sock)
            try:
                sock.bind((address, port))
            except OSError as error:
                if family == socket.AF_INET:
                    pytest.skip(f"port {port} is taken here ({error}); the test needs to hold it itself")
                continue  # no IPv6 loopback: nothing to hold there
            sock.listen()
        yield
    finally:
        for sock in held:
            sock.close()


def test_a_host_drill_starts_the_copy_out_of_the_live_servers_way_and_stops_it(
    host_postgres: HostPostgres, splitmirror_session: SessionRunner
) -> None:
    """The host route: the copy starts by the printed ``runuser -u postgres -- pg_ctl ... start``
    with ``[drill] binaries`` on PATH.  Port 5432 is held meanwhile, as a live server on this
    host would hold it: the copy listens on the drill's port (``PGPORT``), and is stopped after."""
    SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    give_to_postgres(SOCKET_DIR, 0o2775)
    database = HostLedgerDatabase(host_postgres)
    orders(database.url)
    config = drill_config(
        splitmirror_session, database, binaries=str(host_postgres.bindir), query="SELECT max(id) FROM orders",
        timeout="120s",
    )  # fmt: skip
    session = backup(config)
    scratch = splitmirror_session.workspace.root / "scratch"
    with port_taken(5432):
        done = cli("drill", session, "--config", config)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    [record] = drills(splitmirror_session.workspace)
    assert (record.status, record.route) == ("PASSED", "host")
    assert AMCHECK.search(record.checks[1]) and record.checks[2] == "query: 1 row, the first: 1000"
    print(f"host drill: {record.duration_ms / 1000:.1f} s")
    assert processes_under(scratch) == [], "the copy's server outlived the drill"
    assert list(scratch.iterdir()) == []
    assert host_postgres.running and takes_an_order(database.url)


def test_the_password_is_the_live_servers_line_of_the_password_file(tmp_path: Path) -> None:
    """libpq's rules, for the live URL: first matching line, ``*`` wildcards, ``\\:`` escapes,
    a socket host as ``localhost``, and a file others may read ignored."""
    passfile = tmp_path / "pgpass"
    passfile.write_text(
        "# comment\n"
        "db1:5433:*:backup:other-port\n"
        "db1:5432:app:*:app\\:s3cret\\\\\n"
        "db1:5432:*:backup:fallback\n"
        "localhost:*:*:backup:on-the-socket\n"
    )
    passfile.chmod(0o600)
    env = {"PGPASSFILE": str(passfile)}
    assert pgpass.live_password("postgresql://backup@db1/app", env) == "app:s3cret\\"
    assert pgpass.live_password("postgresql://backup@db1:5432/postgres", env) == "fallback"
    assert pgpass.live_password("postgresql://backup@db1:6000/postgres", env) is None
    assert pgpass.live_password("postgresql:///postgres?user=backup&host=/run/postgresql", env) == (
        "on-the-socket"
    )
    assert pgpass.live_password("postgresql://backup@db1/app", {**env, "PGPASSWORD": "env"}) == "env"
    passfile.chmod(0o644)
    assert pgpass.live_password("postgresql://backup@db1/app", env) is None
