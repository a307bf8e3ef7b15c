"""The steps a restored cluster starts by: what they say for each kind of server, and a copy of
an archiving cluster started by them (the contract drills start every other copy by them, on
the host and in containers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from splitmirror.testing import SessionRunner, Workspace
from splitmirror_postgresql.restore import restore_steps
from splitmirror_postgresql.testing import HostLedgerDatabase, HostPostgres, give_to_postgres


def manifest(archive_mode: str, *, host: str = "/srv/pg/data") -> dict[str, Any]:
    return {
        "database": {"version": "15.18"},
        "metadata": {
            "data_directory": "/var/lib/postgresql/data",
            "data_directory_host": host,
            "archive_mode": archive_mode,
        },
    }


def lines(archive_mode: str, **kwargs: str) -> list[str]:
    return [
        " ".join(step.argv)
        for step in restore_steps(Path("/r"), Path("/r/data"), manifest(archive_mode, **kwargs))
    ]


def test_a_plain_start_where_the_server_did_not_archive() -> None:
    assert lines("off") == [
        "chown -R postgres:postgres /r",
        "runuser -u postgres -- pg_ctl -D /r/data -l /r/data/startup.log start",
        "docker run -d -e PGDATA=/var/lib/postgresql/data -v /r/data:/var/lib/postgresql/data IMAGE",
    ]


def test_a_copy_of_an_archiving_server_stays_out_of_its_archive() -> None:
    assert lines("on")[1:] == [
        "runuser -u postgres -- pg_ctl -D /r/data -l /r/data/startup.log -o -c archive_mode=off start",
        "docker run -d -e PGDATA=/var/lib/postgresql/data -v /r/data:/var/lib/postgresql/data IMAGE "
        "postgres -c archive_mode=off",
    ]
    assert (
        "archive_mode=off keeps it out of the live WAL archive"
        in restore_steps(Path("/r"), Path("/r/data"), manifest("always"))[1].text()
    )


def test_tablespaces_are_mounted_where_their_links_point() -> None:
    steps = restore_steps(Path("/r"), Path("/r/data"), manifest("off"), [Path("/r/ts/orders")])
    assert [" ".join(step.argv) for step in steps if step.route == "container"] == [
        "chown -R 999:999 /r/ts/orders",
        "docker run -d -e PGDATA=/var/lib/postgresql/data -v /r/data:/var/lib/postgresql/data "
        "-v /r/ts/orders:/r/ts/orders IMAGE",
    ]


def test_the_container_line_names_the_servers_own_data_directory_as_pgdata() -> None:
    """Upstream postgres:18 keeps its data in /var/lib/postgresql/18/docker by default and
    refuses a cluster mounted at /var/lib/postgresql/data unless PGDATA says so: the line mounts
    the copy where the server had it and names that path, whatever the image's default."""
    steps = restore_steps(
        Path("/r"), Path("/r/data"), manifest("off", host="/srv/pg") | {"metadata": {
            "data_directory": "/var/lib/postgresql/18/docker", "data_directory_host": "/srv/pg/18/docker",
        }},
    )  # fmt: skip
    assert " ".join(steps[-1].argv) == (
        "docker run -d -e PGDATA=/var/lib/postgresql/18/docker -v /r/data:/var/lib/postgresql/18/docker IMAGE"
    )


def test_a_server_on_this_host_gets_no_container_line() -> None:
    assert len(lines("off", host="/var/lib/postgresql/data")) == 2


def test_a_copy_of_an_archiving_cluster_starts_with_archiving_off(
    host_postgres: HostPostgres, splitmirror_session: SessionRunner, splitmirror_workspace: Workspace
) -> None:
    """For real: the live cluster archives (ALTER SYSTEM, so the setting travels in the restored
    postgresql.auto.conf); its copy, started by the printed steps, does not."""
    archive = splitmirror_workspace.root / "wal-archive"
    archive.mkdir()
    give_to_postgres(archive)
    with psycopg.connect(host_postgres.conninfo, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET archive_mode = on")
        conn.execute(f"ALTER SYSTEM SET archive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f'")
    host_postgres.stop()
    host_postgres.start()  # archive_mode takes a restart
    database = HostLedgerDatabase(host_postgres)
    database.create_ledger()
    summary = splitmirror_session.run(database, "hot-backup")
    restore = splitmirror_session.restore(summary, splitmirror_workspace.root / "restored")
    with database.restored_server(restore) as copy, psycopg.connect(copy.conninfo, autocommit=True) as conn:
        assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
        assert conn.execute("SHOW archive_command").fetchone() != ("",), "the live command came along"
