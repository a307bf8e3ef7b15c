"""PostgreSQL in a container, its data directory bind-mounted from a host disk: the contract suite
(both modes, fault injection, restore drill into a fresh container) for every supported version
whose image exists here, and what a DBA sees when the password is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.testing import SessionRunner
from splitmirror.testing.contract import DatabaseContract
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres, write_pgpass


class TestPostgresInContainer(DatabaseContract):
    @pytest.fixture
    def splitmirror_database(self, container_postgres: ContainerPostgres) -> ContainerLedgerDatabase:
        return ContainerLedgerDatabase(container_postgres)


def test_the_data_directory_is_on_its_own_disk(container_postgres: ContainerPostgres) -> None:
    """As root the host side of the bind mount is a loop-device filesystem (FREEZE needs that)."""
    assert os.path.ismount(container_postgres.datadir.parent)
    assert (container_postgres.datadir / "PG_VERSION").read_text().strip() == container_postgres.version


def test_a_wrong_password_is_one_sentence_and_touches_nothing(
    container_postgres: ContainerPostgres,
    splitmirror_session: SessionRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = ContainerLedgerDatabase(container_postgres)
    database.create_ledger()
    config = splitmirror_session.config(database, "hot-backup")
    good = os.environ["PGPASSFILE"]
    monkeypatch.setenv(
        "PGPASSFILE", str(write_pgpass(splitmirror_session.workspace.root / "pgpass-wrong", "wrong"))
    )
    result = CliRunner().invoke(main, ["check", str(config.source)])
    monkeypatch.setenv("PGPASSFILE", good)
    assert result.exit_code != 0
    message = result.output.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert "password authentication failed" in message and "~/.pgpass" in message, message
    assert not splitmirror_session.workspace.mirror.exists() or not any(
        splitmirror_session.workspace.mirror.iterdir()
    )
    assert database.accepts_writes()


def test_the_restore_says_how_to_start_the_copy_in_a_container(
    container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    database = ContainerLedgerDatabase(container_postgres)
    database.create_ledger()
    summary = splitmirror_session.run(database, "hot-backup")
    target = splitmirror_session.workspace.root / "restored"
    result = CliRunner().invoke(
        main,
        [
            "restore",
            str(summary.id),
            "--to",
            str(target),
            "--catalog",
            str(splitmirror_session.workspace.catalog),
        ],
    )
    assert result.exit_code == 0, result.output
    line = f"docker run -d -e PGDATA=/var/lib/postgresql/data -v {target}:/var/lib/postgresql/data IMAGE"
    assert line in result.output, result.output


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_copy_with_a_tablespace_starts_in_a_container_by_the_printed_steps(
    mode: str,
    container_postgres: ContainerPostgres,
    splitmirror_primary_disk: Path,
    splitmirror_session: SessionRunner,
) -> None:
    """A tablespace on the server's own mount: the copy's pg_tblspc link names the restored
    tablespace by its host path, and the printed docker run mounts it there (after handing it
    to the image's postgres user)."""
    spaces = splitmirror_primary_disk / "tablespaces"
    spaces.mkdir()
    os.chown(spaces, 999, 999)  # the image's postgres user
    container_postgres.stop()
    container_postgres.mounts = {spaces: "/var/lib/postgresql/tablespaces"}
    container_postgres.start()
    with psycopg.connect(
        container_postgres.url, password=container_postgres.password, autocommit=True
    ) as conn:
        conn.execute("SELECT pg_catalog.pg_sleep(0)")
        os.makedirs(spaces / "orders")
        os.chown(spaces / "orders", 999, 999)
        conn.execute("CREATE TABLESPACE orders LOCATION '/var/lib/postgresql/tablespaces/orders'")
        conn.execute(
            "CREATE TABLE orders TABLESPACE orders AS SELECT g AS id FROM generate_series(1, 5000) g"
        )
    database = ContainerLedgerDatabase(container_postgres, primary=splitmirror_primary_disk)
    database.create_ledger()
    summary = splitmirror_session.run(database, mode)
    restore = splitmirror_session.restore(summary, splitmirror_session.workspace.root / "restored")
    with (
        database.restored_server(restore) as copy,
        psycopg.connect(copy.conninfo, password=container_postgres.password) as conn,
    ):
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (5000,)
        assert conn.execute(
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'orders'"
        ).fetchone() == (str(restore.directory / "tablespaces" / "orders"),)
        assert copy.amcheck()[0]
