"""compose/docker-compose.yml's ``postgres-18`` service (``--profile newest``) starts the newest
PostgreSQL the images know on its host data directory, where the file says: the data directory
the server reports is the one bind-mounted (``PGDATA`` set for upstream postgres:18, which moved
its default), with data checksums, and it takes writes."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import psycopg
import pytest

from splitmirror.testing.containers import Unavailable, compose_up, free_port, image_for, newest


def test_the_newest_postgresql_service_runs_where_the_file_says(splitmirror_primary_disk: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the compose services run as root: their data directories belong to the container's user")
    version = newest("postgres")
    password, port = secrets.token_urlsafe(16), free_port()
    conninfo = f"host=127.0.0.1 port={port} user=postgres password={password} connect_timeout=3"

    def answers() -> bool:
        try:
            psycopg.connect(conninfo).close()
            return True
        except psycopg.Error:
            return False

    try:
        env = {
            "SPLITMIRROR_DATA": str(splitmirror_primary_disk),
            f"SPLITMIRROR_IMAGE_POSTGRES_{version}": image_for("postgres", version),
            "POSTGRES_PASSWORD": password,
            f"POSTGRES_{version}_PORT": str(port),
        }
        with (
            compose_up(f"postgres-{version}", env, answers),
            psycopg.connect(conninfo, autocommit=True) as conn,
        ):
            assert str(conn.info.server_version).startswith(version)
            assert conn.execute("SHOW data_directory").fetchone() == ("/var/lib/postgresql/data",)
            assert conn.execute("SHOW data_checksums").fetchone() == ("on",)
            conn.execute("CREATE TABLE t AS SELECT 1 AS id")
            assert (
                splitmirror_primary_disk / f"postgres-{version}" / "PG_VERSION"
            ).read_text().strip() == version
    except Unavailable as reason:
        pytest.skip(str(reason))
