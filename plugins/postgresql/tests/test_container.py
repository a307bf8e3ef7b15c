"""PostgreSQL in a container, its data directory bind-mounted from a host disk: the contract suite
(both modes, fault injection, restore drill into a fresh container) for every supported version
whose image exists here, and what a DBA sees when the password is wrong."""

from __future__ import annotations

import os

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
    assert f"docker run -d -v {target}:/var/lib/postgresql/data IMAGE" in result.output, result.output
