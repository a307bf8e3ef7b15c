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
from splitmirror.testing.docs import blocks, section
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


def test_the_readme_mariadb_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """compose/README.md's MariaDB section run as written in one bash session: its own disk (a
    loop-device ext4), compose up, data, the session, the restore, the restored copy started by
    the README's docker run line and counted, cleanup.  Only places move (under the test's
    directory), ports, the compose project and command, and the session id (the README says to
    use the one backup printed: a fresh catalog's first)."""
    import subprocess
    import sys

    from splitmirror.testing.containers import compose_command

    if os.geteuid() != 0:
        pytest.skip("the walkthrough mounts a loop device and reads files the container's user owns")
    compose = compose_command()
    if compose is None:
        pytest.skip(
            "neither `docker compose` nor docker-compose is installed (compose/start-engine installs one)"
        )
    try:
        image = image_for("mariadb", "10.11")
    except Unavailable as reason:
        pytest.skip(str(reason))
    part = section(README, "## The same against MariaDB")
    (config,) = blocks(part, "toml")
    (shell,) = blocks(part, "sh")
    live, copy = free_port(), free_port()
    mount = tmp_path / "mnt-primary"

    def here(block: str) -> str:
        for old, new in (
            ("/var/tmp/primary.img", str(tmp_path / "primary.img")),
            ("/mnt/primary", str(mount)),
            ("/root/.my.cnf", str(tmp_path / "my.cnf")),
            ("/var/backups/splitmirror", str(tmp_path / "backups")),
            ("compose/docker-compose.yml", str(REPO / "compose" / "docker-compose.yml")),
            ("127.0.0.1:3307:3306", f"127.0.0.1:{copy}:3306"),
            ("127.0.0.1:3306/", f"127.0.0.1:{live}/"),
            ("splitmirror restore 2 ", "splitmirror restore 1 "),
        ):
            block = block.replace(old, new)
        return re.sub(r"\bdocker-compose ", " ".join(compose) + " ", block)

    (tmp_path / "mariadb.toml").write_text(here(config))
    (tmp_path / "mariadb.toml").chmod(0o600)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "MARIADB_ROOT_PASSWORD": secrets.token_urlsafe(16),
        "SPLITMIRROR_IMAGE_MARIADB_10_11": image,
        "MARIADB_PORT": str(live),
        "COMPOSE_PROJECT_NAME": f"splitmirror-walkthrough-{os.getpid()}",
        "SPLITMIRROR_CATALOG": str(tmp_path / "catalog.db"),
    }
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", here(shell)], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        assert "\n10000\n" in done.stdout, done.stdout  # the restored copy's count(*)
    finally:
        subprocess.run(["docker", "rm", "-f", "mariadb-restored"], capture_output=True, check=False)
        subprocess.run(
            [*compose, "-f", str(REPO / "compose" / "docker-compose.yml"), "down", "--volumes"],
            env=env, capture_output=True, check=False,
        )  # fmt: skip
        if os.path.ismount(mount):
            subprocess.run(["umount", str(mount)], check=False)
