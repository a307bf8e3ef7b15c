"""``check`` refuses a primary that is not the running server's data directory: an older copy of
the same cluster, or another cluster, before anything is quiesced or synced (issue 14: a config
left pointing at an old directory quiesced the live server, synced, and failed in BACKUP)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.testing import SessionRunner
from splitmirror_postgresql import identity
from splitmirror_postgresql.testing import HostLedgerDatabase, HostPostgres


def check_with_primary(runner: SessionRunner, server: HostPostgres, primary: Path) -> tuple[int, str]:
    """``check`` of a config whose primary (and path_map: the server's directory is found
    there) is ``primary``."""
    assert server.datadir is not None
    database = HostLedgerDatabase(server, primary=primary)
    database.options = {"path_map": {str(server.datadir): str(primary)}}
    config = runner.config(database, "hot-backup")
    result = CliRunner().invoke(main, ["check", str(config.source)])
    return result.exit_code, result.output


def test_the_live_directory_passes_and_matches_the_server(
    host_postgres: HostPostgres, splitmirror_session: SessionRunner
) -> None:
    assert host_postgres.datadir is not None
    with psycopg.connect(host_postgres.conninfo) as conn:
        row = conn.execute(
            "SELECT s.system_identifier, c.checkpoint_lsn::text "
            "FROM pg_control_system() s, pg_control_checkpoint() c"
        ).fetchone()
    assert row is not None
    assert identity.on_disk(host_postgres.datadir) == (row[0], identity.lsn(row[1]))
    code, output = check_with_primary(splitmirror_session, host_postgres, host_postgres.datadir)
    assert code == 0, output


def test_an_older_copy_of_the_cluster_is_refused(
    host_postgres: HostPostgres, splitmirror_session: SessionRunner, tmp_path: Path
) -> None:
    assert host_postgres.datadir is not None
    with psycopg.connect(host_postgres.conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        subprocess.run(["cp", "-a", str(host_postgres.datadir), str(tmp_path / "old")], check=True)
        conn.execute("CREATE TABLE later AS SELECT 1 AS x")
        conn.execute("CHECKPOINT")
    code, output = check_with_primary(splitmirror_session, host_postgres, tmp_path / "old")
    assert code == 3, output
    assert f"the data directory {tmp_path / 'old'} holds an older copy of the server's cluster" in output


def test_another_cluster_is_refused(
    host_postgres: HostPostgres, splitmirror_session: SessionRunner, tmp_path: Path
) -> None:
    HostPostgres(tmp_path / "other-pg").init(tmp_path / "other")  # initdb only: a cluster of its own
    code, output = check_with_primary(splitmirror_session, host_postgres, tmp_path / "other")
    assert code == 3, output
    assert "holds another cluster (system identifier" in output and "point [mirror] primary" in output
