"""compose/docker-compose.yml's ``mariadb-11.8`` and ``mysql-9`` services (``--profile newest``)
start the newest MariaDB and MySQL the images know on their host data directories, binary log on
as the file says, and take writes."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pymysql
import pytest

from splitmirror.testing.containers import Unavailable, compose_up, free_port, image_for, newest


@pytest.mark.parametrize("database", ["mariadb", "mysql"])
def test_the_newest_service_runs_where_the_file_says(database: str, splitmirror_primary_disk: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the compose services run as root: their data directories belong to the container's user")
    version = newest(database)
    service, suffix = f"{database}-{version}", version.replace(".", "_")
    password, port = secrets.token_urlsafe(16), free_port()

    def connect() -> pymysql.connections.Connection:  # type: ignore[type-arg]
        return pymysql.connect(host="127.0.0.1", port=port, user="root", password=password, connect_timeout=3)

    def answers() -> bool:
        try:
            connect().close()
            return True
        except pymysql.Error:
            return False

    try:
        env = {
            "SPLITMIRROR_DATA": str(splitmirror_primary_disk),
            f"SPLITMIRROR_IMAGE_{database.upper()}_{suffix}": image_for(database, version),
            f"{database.upper()}_ROOT_PASSWORD": password,
            f"{database.upper()}_{suffix}_PORT": str(port),
        }
        with compose_up(service, env, answers), connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT VERSION(), @@log_bin, @@datadir")
            reported, log_bin, datadir = cursor.fetchone()
            assert str(reported).startswith(version) and int(log_bin) == 1 and datadir == "/var/lib/mysql/"
            cursor.execute("CREATE DATABASE shop")
            cursor.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY) ENGINE=InnoDB")
            assert (splitmirror_primary_disk / service / "shop" / "orders.ibd").is_file()
    except Unavailable as reason:
        pytest.skip(str(reason))
