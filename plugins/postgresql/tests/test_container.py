"""PostgreSQL in a container, its data directory bind-mounted from a host disk: the contract suite
(both modes, fault injection, restore drill into a fresh container) for every supported version
whose image exists here, and what a DBA sees when the password is wrong.

Some rows run on the newest version only, where the version cannot change the outcome: a wrong
password (libpq's refusal at connect, before any statement of the engine's), the restore's
printed ``docker run`` line (made from the recorded data directory, the harness's ``PGDATA`` on
every version; each version's drills start their copies by it), the contract's refusal of an
undeclared mode (before connecting; this engine declares both, so it skips), and unquiesce on
failure in every window phase.  The other versions fail in QUIESCE (HOT_BACKUP's backup and slot
held, nothing frozen) and in SPLIT (the data filesystem frozen under the server, thawed before
the release): a failure in DISCOVER or PREPARE leaves the server as QUIESCE does, one in CHECK
as every successful session leaves it for UNQUIESCE, one in UNQUIESCE after ``pg_backup_stop``;
the engine sends the same statements to a server in the same state."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.phases import Phase
from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import newest_usable, on_newest, versions
from splitmirror.testing.contract import FAULTED, DatabaseContract
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres, write_pgpass

#: One run on the newest version (see the module docstring).
newest_only = on_newest("container_postgres", "postgres")
#: The unquiesce rows: every faulted window phase (contract.FAULTED) on the newest version, QUIESCE
#: and SPLIT on the others.
unquiesce_cases = pytest.mark.parametrize(
    ("container_postgres", "phase"),
    [
        pytest.param(version, phase, id=f"{version}-{phase.name}")
        for version in versions("postgres")
        for phase in (FAULTED if version == newest_usable("postgres") else [Phase.QUIESCE, Phase.SPLIT])
    ],
    indirect=["container_postgres"],
)


class TestPostgresInContainer(DatabaseContract):
    @pytest.fixture
    def splitmirror_database(self, container_postgres: ContainerPostgres) -> ContainerLedgerDatabase:
        return ContainerLedgerDatabase(container_postgres)

    @newest_only
    def test_an_undeclared_mode_is_refused_before_connecting(
        self, splitmirror_database: ContainerLedgerDatabase, splitmirror_session: SessionRunner
    ) -> None:
        super().test_an_undeclared_mode_is_refused_before_connecting(
            splitmirror_database, splitmirror_session
        )

    @unquiesce_cases
    def test_unquiesce_on_failure(
        self,
        phase: Phase,
        splitmirror_database: ContainerLedgerDatabase,
        splitmirror_session: SessionRunner,
        contract_mode: str,
    ) -> None:
        super().test_unquiesce_on_failure(phase, splitmirror_database, splitmirror_session, contract_mode)


def test_the_data_directory_is_on_its_own_disk(container_postgres: ContainerPostgres) -> None:
    """As root the host side of the bind mount is a loop-device filesystem (FREEZE needs that).
    On every version: it is also where each version's image is seen to run that version."""
    assert os.path.ismount(container_postgres.datadir.parent)
    assert (container_postgres.datadir / "PG_VERSION").read_text().strip() == container_postgres.version


@newest_only
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


@newest_only
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
