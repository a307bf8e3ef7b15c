"""compose/README.md's MariaDB walkthrough, step by step: the compose file's ``mariadb`` service on
a host disk of its own, a HOT_BACKUP session with the README's own config and option file, a
restore, and the restored copy started in a fresh container by the printed ``docker run`` step
(which the README's own line must match) with every row there."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.restore import RestoreResult
from splitmirror.restore_steps import RestoreStep
from splitmirror.testing.containers import Unavailable, compose_up, free_port, image_for
from splitmirror.testing.steps import container_step
from splitmirror_mysql.testing import ContainerMysql, write_option_file

REPO = Path(__file__).resolve().parents[3]
README = REPO / "compose" / "README.md"


def answers(port: int, password: str) -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=port, user="root", password=password).close()
        return True
    except pymysql.Error:
        return False


@pytest.fixture
def compose_mariadb(splitmirror_primary_disk: Path) -> Iterator[tuple[int, str]]:
    """The compose file's ``mariadb`` service up: (port on 127.0.0.1, root's password)."""
    if os.geteuid() != 0:
        pytest.skip("the compose walkthrough runs as root: splitmirror reads files the container's user owns")
    password, port = secrets.token_urlsafe(16), free_port()
    try:
        env = {
            "SPLITMIRROR_DATA": str(splitmirror_primary_disk),
            "SPLITMIRROR_IMAGE_MARIADB_10_11": image_for("mariadb", "10.11"),
            "MARIADB_ROOT_PASSWORD": password,
            "MARIADB_PORT": str(port),
        }
        with compose_up("mariadb", env, lambda: answers(port, password)):
            yield port, password
    except Unavailable as reason:
        pytest.skip(str(reason))


def readme_config(port: int, disk: Path, backups: Path, option_file: Path) -> str:
    """The README's mariadb.toml with this machine's paths, port and option file put in."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.DOTALL)
    block = next((b for b in blocks if "mariadb://" in b), None)
    assert block, "compose/README.md lost its mariadb.toml"
    return (
        block.replace("/mnt/primary", str(disk))
        .replace("/var/backups/splitmirror", str(backups))
        .replace("/root/.my.cnf", str(option_file))
        .replace("127.0.0.1:3306", f"127.0.0.1:{port}")
    )


def test_the_readme_mariadb_walkthrough(
    compose_mariadb: tuple[int, str],
    splitmirror_primary_disk: Path,
    splitmirror_catalog: Path,
    tmp_path: Path,
) -> None:
    port, password = compose_mariadb
    with pymysql.connect(host="127.0.0.1", port=port, user="root", password=password) as conn:
        with conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE shop")
            cursor.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY) ENGINE=InnoDB")
            cursor.executemany("INSERT INTO shop.orders VALUES (%s)", [(n,) for n in range(1, 1001)])
        conn.commit()
    backups = tmp_path / "backups"
    backups.mkdir()
    option_file = write_option_file(tmp_path / "my.cnf", password)
    config = tmp_path / "mariadb.toml"
    config.write_text(readme_config(port, splitmirror_primary_disk, backups, option_file))
    config.chmod(0o600)

    cli = CliRunner()
    checked = cli.invoke(main, ["check", str(config)])
    assert checked.exit_code == 0 and "ready for a hot-backup session" in checked.output, checked.output
    backed_up = cli.invoke(main, ["backup", str(config)])
    assert backed_up.exit_code == 0 and "DONE" in backed_up.output, backed_up.output
    restored = backups / "restored-mariadb"
    result = cli.invoke(main, ["restore", "1", "--to", str(restored), "--json"])
    assert result.exit_code == 0, result.output
    steps = [RestoreStep.from_json(step) for step in json.loads(result.output)["steps"]]
    # The README's own docker run line keeps the printed step's server options.
    printed = container_step(steps).server_args
    assert re.search(r'mariadb:10\.11}" \\\n\s+' + re.escape(" ".join(printed)) + "\n", README.read_text()), (
        printed
    )

    server = ContainerMysql("mariadb", "10.11", restored, password)
    restore = RestoreResult("", restored, [], [], 0, "mysql", steps, [])
    with server.restored(restore) as copy, copy.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM shop.orders")
        assert cursor.fetchone() == (1000,)
