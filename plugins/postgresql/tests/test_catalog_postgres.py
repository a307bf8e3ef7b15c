"""The PostgreSQL catalog on a real server (the host's binaries): the catalog contract, and what
only a shared catalog has: its password rules, its schema versions, its advisory locks, and the
CLI reading it.

One server per module, with password (scram-sha-256) logins on 127.0.0.1 as a fleet's hosts
connect, and a new, empty database per test.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from splitmirror.api import CatalogAddress, CatalogError, FileRecord, PhaseRecord
from splitmirror.testing.catalog_contract import CatalogContract
from splitmirror_postgresql.catalog import PostgresCatalog
from splitmirror_postgresql.catalog_schema import LOCK_SPACE, MIGRATIONS, migrate, schema_version
from splitmirror_postgresql.testing import HostPostgres, free_port, unavailable

#: The catalog user's password (the server's superuser logs in by trust on its socket).
PASSWORD = "catalog-S3cret-pw"
USER = "backup"


class CatalogServer:
    """A server for catalogs: ``backup`` owns a new database per test and logs in by password."""

    def __init__(self, server: HostPostgres) -> None:
        self.server = server
        self._numbers = itertools.count(1)

    def new_database(self) -> str:
        name = f"catalog_{next(self._numbers)}"
        with self.admin("postgres") as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(USER))
            )
        return name

    def url(self, database: str, *, port: int | None = None, scheme: str = "postgresql") -> str:
        return f"{scheme}://{USER}@127.0.0.1:{port or self.server.port}/{database}"

    def admin(self, database: str) -> psycopg.Connection[tuple[Any, ...]]:
        """The superuser, on the server's socket."""
        conninfo = self.server.conninfo.replace("@/postgres?", f"@/{database}?")
        return psycopg.connect(conninfo, autocommit=True)


@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatalogServer]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = HostPostgres(tmp_path_factory.mktemp("catalog-pg"))
    try:
        server.init(server.workdir / "data")
        assert server.datadir is not None
        (server.datadir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        server.start("listen_addresses=127.0.0.1")
        with psycopg.connect(server.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(USER), PASSWORD))
        yield CatalogServer(server)
    finally:
        server.stop()


@pytest.fixture
def password_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """The catalog's password where splitmirror looks first; no password file, and no
    ``$PGPASSWORD`` (a developer's must not decide a test)."""
    monkeypatch.setenv("SPLITMIRROR_CATALOG_PASSWORD", PASSWORD)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return monkeypatch


class TestPostgresCatalog(CatalogContract):
    @pytest.fixture
    def splitmirror_catalog_address(
        self, catalog_server: CatalogServer, password_env: pytest.MonkeyPatch
    ) -> CatalogAddress:
        return CatalogAddress(catalog_server.url(catalog_server.new_database()))


@pytest.fixture
def address(catalog_server: CatalogServer, password_env: pytest.MonkeyPatch) -> CatalogAddress:
    return CatalogAddress(catalog_server.url(catalog_server.new_database()))


def _opens(address: CatalogAddress) -> None:
    PostgresCatalog.open(address, create=True).close()


# -- the password: $SPLITMIRROR_CATALOG_PASSWORD, else the password file, never $PGPASSWORD ----


def test_the_password_file_is_read_and_pgpassword_is_not(
    address: CatalogAddress, password_env: pytest.MonkeyPatch, catalog_server: CatalogServer, tmp_path: Path
) -> None:
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{catalog_server.server.port}:*:{USER}:{PASSWORD}\n")
    pgpass.chmod(0o600)
    password_env.delenv("SPLITMIRROR_CATALOG_PASSWORD")
    password_env.setenv("PGPASSFILE", str(pgpass))
    password_env.setenv("PGPASSWORD", "the-database-password")  # the engine's, wrong here
    _opens(address)


def test_the_catalog_password_variable_is_used_over_pgpassword(
    address: CatalogAddress, password_env: pytest.MonkeyPatch
) -> None:
    password_env.setenv("PGPASSWORD", "the-database-password")
    _opens(address)


def test_pgpassword_alone_is_never_sent_to_the_catalog(
    address: CatalogAddress, password_env: pytest.MonkeyPatch
) -> None:
    password_env.delenv("SPLITMIRROR_CATALOG_PASSWORD")
    password_env.setenv("PGPASSWORD", PASSWORD)  # would log in, were it sent
    with pytest.raises(CatalogError, match="refused the login") as refused:
        _opens(address)
    assert PASSWORD not in str(refused.value)


def test_a_wrong_password_is_one_sentence_without_it(
    address: CatalogAddress, password_env: pytest.MonkeyPatch
) -> None:
    wrong = "Wr0ng-pw-sentinel"
    password_env.setenv("SPLITMIRROR_CATALOG_PASSWORD", wrong)
    with pytest.raises(CatalogError) as refused:
        _opens(address)
    said = str(refused.value)
    assert said.startswith(f"the catalog {address.shown} refused the login (")
    assert "SPLITMIRROR_CATALOG_PASSWORD" in said and "pgpass" in said
    assert wrong not in said and "\n" not in said


def test_a_server_that_is_not_there_is_one_sentence(
    catalog_server: CatalogServer, password_env: pytest.MonkeyPatch
) -> None:
    address = CatalogAddress(catalog_server.url("splitmirror", port=free_port()))
    with pytest.raises(CatalogError) as unreached:
        _opens(address)
    said = str(unreached.value)
    assert said.startswith(f"the catalog {address.shown} cannot be opened (")
    assert "refused" in said and "\n" not in said and PASSWORD not in said


# -- the schema ---------------------------------------------------------------------------


def test_a_newer_schema_is_refused(address: CatalogAddress, catalog_server: CatalogServer) -> None:
    _opens(address)
    with catalog_server.admin(address.text.rsplit("/", 1)[1]) as conn:
        conn.execute("UPDATE splitmirror.schema_version SET version = 99")
    newer = rf"{address.shown} has schema version 99, newer than this splitmirror understands"
    with pytest.raises(CatalogError, match=newer + rf" \({len(MIGRATIONS)}\); upgrade splitmirror"):
        PostgresCatalog.open(address, create=False)


def test_an_older_catalog_is_upgraded_in_place_in_its_own_schema(
    address: CatalogAddress, catalog_server: CatalogServer
) -> None:
    """Version 2 (before prune and drills) as an older splitmirror left it, with a session."""
    with psycopg.connect(address.text, password=PASSWORD, autocommit=True) as conn:
        migrate(conn, address.shown, MIGRATIONS[:2])
        conn.execute(
            "INSERT INTO splitmirror.sessions (name, status, mode, database, database_url, config,"
            " started_at, blocked_ms) VALUES ('orders', 'DONE', 'freeze', 'sqlite', 'u', 'c', 't', 2.5)"
        )
    with closing(PostgresCatalog.open(address, create=False)) as catalog:
        (old,) = catalog.sessions()
        assert (old.name, old.blocked_ms, old.pruned, old.redo_range) == ("orders", 2.5, None, {})
        assert catalog.start_drill(old.id, name="orders", started_at="t") == 1
    with catalog_server.admin(address.text.rsplit("/", 1)[1]) as conn:
        assert schema_version(conn) == len(MIGRATIONS)
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE tableowner = %s", (USER,))
        assert {schema for schema, _ in tables} == {"splitmirror"}, "nothing outside its schema"


def test_hosts_migrating_at_the_same_moment_agree(address: CatalogAddress) -> None:
    """Connected first, then let go together: each sees no catalog and migrates at once (the
    contract's processes start one after the other, and seldom overlap this closely)."""
    connections = [psycopg.connect(address.text, password=PASSWORD, autocommit=True) for _ in range(6)]
    together = threading.Barrier(len(connections))
    failures: list[BaseException] = []

    def migrating(conn: psycopg.Connection[Any]) -> None:
        together.wait()
        try:
            migrate(conn, address.shown)
        except psycopg.Error as error:
            failures.append(error)

    threads = [threading.Thread(target=migrating, args=(conn,)) for conn in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for conn in connections:
        assert schema_version(conn) == len(MIGRATIONS)
        conn.close()
    assert failures == []


# -- the advisory locks ---------------------------------------------------------------------


def _drill_locks(catalog_server: CatalogServer, database: str, drill_id: int) -> int:
    with catalog_server.admin(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid"
            " AND objid = %s::oid AND objsubid = 2",
            (LOCK_SPACE, drill_id),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_drill_row_is_committed_with_its_lock_already_held(
    address: CatalogAddress, catalog_server: CatalogServer
) -> None:
    """Checked at the commit itself, by a deferred trigger: a host that saw the row between the
    commit and the lock would take the live drill for dead and remove what it is using."""
    database = address.text.rsplit("/", 1)[1]
    with closing(PostgresCatalog.open(address, create=True)) as catalog:
        sid = catalog.start_session(name="orders", mode="freeze", database="d", database_url="u",
                                    config="c", started_at="t")  # fmt: skip
        with catalog_server.admin(database) as conn:
            conn.execute(f"""
                CREATE FUNCTION public.drill_lock_held() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NOT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted
                                   AND pid = pg_backend_pid() AND classid = {LOCK_SPACE}::oid
                                   AND objid = NEW.id::oid AND objsubid = 2) THEN
                        RAISE EXCEPTION 'drill % committed without its lock', NEW.id;
                    END IF;
                    RETURN NULL;
                END $$;
                CREATE CONSTRAINT TRIGGER drill_lock_held AFTER INSERT ON splitmirror.drills
                    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.drill_lock_held();
            """)  # fmt: skip
        drill, let_go = catalog.drill_started(sid, name="orders", started_at="t", abandoned=print)
        assert _drill_locks(catalog_server, database, drill) == 1
        catalog.finish_drill(drill, status="PASSED", finished_at="t", duration_ms=1.0, route="", checks=[],
                             error=None)  # fmt: skip
        let_go()
        assert _drill_locks(catalog_server, database, drill) == 0, "let go once its outcome is recorded"


def test_a_drill_of_this_very_connection_is_not_taken_for_dead(address: CatalogAddress) -> None:
    with closing(PostgresCatalog.open(address, create=True)) as catalog:
        sid = catalog.start_session(name="orders", mode="freeze", database="d", database_url="u",
                                    config="c", started_at="t")  # fmt: skip
        closed: list[int] = []
        first, _ = catalog.drill_started(sid, name="orders", started_at="t", abandoned=closed.append)
        second, _ = catalog.drill_started(sid, name="orders", started_at="t", abandoned=closed.append)
        assert closed == []
        assert [d.status for d in catalog.drills()] == ["RUNNING", "RUNNING"]
        assert (first, second) == (1, 2)


def test_the_server_finds_a_host_gone_down_within_minutes(address: CatalogAddress) -> None:
    """Its drill's and prune's locks end with its connection; a machine that went down closes
    none, so the server's keepalives must find it, sooner than the system's two hours."""
    with closing(PostgresCatalog.open(address, create=True)) as catalog:
        said = catalog._conn.execute("SHOW tcp_keepalives_idle").fetchone()
    assert said == ("60",)  # seconds (a Unix-socket connection has none: it says 0)


def test_a_server_gone_mid_session_is_one_sentence(
    address: CatalogAddress, catalog_server: CatalogServer
) -> None:
    with closing(PostgresCatalog.open(address, create=True)) as catalog:
        with catalog_server.admin("postgres") as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                (address.text.rsplit("/", 1)[1], USER),
            )
        with pytest.raises(CatalogError, match=f"the catalog {address.shown} failed to answer"):
            catalog.sessions()


def test_workers_claiming_at_the_same_moment_each_take_their_own(address: CatalogAddress) -> None:
    identities = [f"loop:/images/m{n}.img" for n in range(3)]
    with closing(PostgresCatalog.open(address, create=True)) as catalog:
        for identity in identities:
            sid = catalog.start_session(name="orders", mode="freeze", database="d", database_url="u",
                                        config="c", started_at="t")  # fmt: skip
            catalog.hand_over(sid, identity=identity, host="db1", record={}, parcels=[])
    workers = [PostgresCatalog.open(address, create=False) for _ in range(5)]
    together = threading.Barrier(len(workers))
    taken: list[int | None] = []

    def claiming(worker: PostgresCatalog, n: int) -> None:
        together.wait()
        split = worker.claim_split(worker=f"b{n}:1", identities=identities, lease_s=600)
        taken.append(None if split is None else split.session_id)

    threads = [threading.Thread(target=claiming, args=(worker, n)) for n, worker in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker in workers:
        worker.close()
    assert sorted(sid for sid in taken if sid is not None) == [1, 2, 3] and taken.count(None) == 2


# -- the CLI reads it -------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitmirror", *args], capture_output=True, text=True, env=dict(os.environ),
        timeout=120, check=False,
    )  # fmt: skip


def test_list_and_show_read_a_postgres_catalog(
    address: CatalogAddress, catalog_server: CatalogServer
) -> None:
    files = [FileRecord(1, "data/base/1/1259", "/pg/base/1/1259", (1, 1259), "data", 8192, "ab" * 32, 0,
                        "extent", [(0, 4096, 8192)])]  # fmt: skip
    with closing(PostgresCatalog.open(address, create=True)) as catalog:
        sid = catalog.start_session(
            name="orders", mode="hot_backup", database="postgresql", database_url="postgresql://u@db/orders",
            config="/etc/splitmirror/orders.toml", started_at="2026-12-01T01:00:00.000+00:00",
        )  # fmt: skip
        catalog.record_phase(sid, PhaseRecord("INIT", "2026-12-01T01:00:00.000+00:00", 1.5))
        catalog.add_files(sid, files)
        catalog.update_session(sid, files=1, bytes=8192, archive="/a/orders-1.tar", window_ms=40.0)
        catalog.finish_session(sid, status="DONE", finished_at="2026-12-01T01:00:09.000+00:00")
    listed = _cli("list", "--catalog", address.text, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(s["id"], s["name"], s["status"]) for s in json.loads(listed.stdout)] == [(sid, "orders", "DONE")]
    other_scheme = catalog_server.url(address.text.rsplit("/", 1)[1], scheme="postgres")
    shown = _cli("show", str(sid), "--catalog", other_scheme, "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert (summary["window_ms"], [p["name"] for p in summary["phases"]]) == (40.0, ["INIT"])
    assert [f["member"] for f in summary["members"]] == ["data/base/1/1259"]
    table = _cli("list", "--catalog", address.text)
    assert table.returncode == 0 and f"catalog {address.shown}" in table.stdout and "orders" in table.stdout
    missing = _cli("show", "4711", "--catalog", address.text)
    assert missing.returncode == 5 and "there is no session 4711" in missing.stderr
    nowhere = _cli("list", "--catalog", catalog_server.url("splitmirror", port=free_port()))
    assert nowhere.returncode == 5 and "cannot be opened" in nowhere.stderr and PASSWORD not in nowhere.stderr
