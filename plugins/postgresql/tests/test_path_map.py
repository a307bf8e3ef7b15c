"""``path_map`` keys as people write them (issue 15): a trailing slash maps the data directory
itself; a key with ``..`` is refused by ``check`` when it loads the configuration, exit 2, one
sentence.  Only the last test needs a server (in a container), the newest: matching the key to
``data_directory`` is splitmirror's, the same on every version."""

from __future__ import annotations

from pathlib import Path

from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import on_newest
from splitmirror_postgresql.container import DATA, ContainerLedgerDatabase, ContainerPostgres
from splitmirror_postgresql.engine import PostgresEngine, PostgresOptions


def test_a_trailing_slash_key_maps_the_data_directory_itself() -> None:
    options = PostgresOptions.model_validate({"path_map": {f"{DATA}/": "/srv/pg"}})
    engine = PostgresEngine("postgresql://postgres@127.0.0.1/postgres", options)
    assert engine.host_path(DATA) == Path("/srv/pg")
    assert engine.host_path(f"{DATA}/pg_wal") == Path("/srv/pg/pg_wal")


def test_a_key_with_dot_dot_is_refused_by_check_in_one_sentence(splitmirror_session: SessionRunner) -> None:
    bad = {"path_map": {"/var/lib/postgresql/../data": "/srv/pg"}}
    config = splitmirror_session.config_file("postgresql://postgres@127.0.0.1:1/postgres", "hot-backup", bad)
    done = splitmirror_session.command("check", config)
    assert (done.returncode, done.stderr) == (
        2,
        f"error: {config}: [database] path_map: the key '/var/lib/postgresql/../data' has '..' in it; "
        "write the directory as the server names it, without '..' (such as '/var/lib/data')\n",
    )
    assert not splitmirror_session.workspace.catalog.exists()


@on_newest("container_postgres", "postgres")
def test_check_passes_with_a_trailing_slash_key(
    container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    """The real server's data directory (``/var/lib/postgresql/data`` in the container) found
    through a key written with a slash at its end: before, preflight said it was not readable."""
    path_map = {f"{DATA}/": str(container_postgres.datadir)}
    database = ContainerLedgerDatabase(container_postgres, {"path_map": path_map})
    done = splitmirror_session.command("check", splitmirror_session.config(database, "hot-backup").source)
    assert done.returncode == 0, done.stderr
