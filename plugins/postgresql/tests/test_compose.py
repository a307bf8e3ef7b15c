"""compose/README.md's walkthrough, step by step: PostgreSQL brought up by compose/docker-compose.yml
with its data directory on a host disk, a HOT_BACKUP session with the README's own config, a
restore, and the restored copy started in a fresh container with every row there."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.restore import RestoreResult
from splitmirror.restore_steps import RestoreStep
from splitmirror.testing.containers import Unavailable, compose_up, free_port, image_for
from splitmirror.testing.steps import container_step
from splitmirror_postgresql.container import ContainerPostgres

REPO = Path(__file__).resolve().parents[3]
README = REPO / "compose" / "README.md"


def answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def compose_postgres(
    splitmirror_primary_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, Path, str]]:
    """The compose file's ``postgres`` service up: (port on 127.0.0.1, host data directory, image)."""
    if os.geteuid() != 0:
        pytest.skip("the compose walkthrough runs as root: splitmirror reads files the container's user owns")
    password, port = secrets.token_urlsafe(16), free_port()
    monkeypatch.setenv("PGPASSWORD", password)  # the README's `export PGPASSWORD=...`
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        image = image_for("postgres", "15")
        env = {
            "SPLITMIRROR_DATA": str(splitmirror_primary_disk),
            "SPLITMIRROR_IMAGE_POSTGRES_15": image,
            "POSTGRES_PASSWORD": password,
            "POSTGRES_PORT": str(port),
        }
        with compose_up("postgres", env, lambda: answers(url)):
            yield port, splitmirror_primary_disk / "postgres", image
    except Unavailable as reason:
        pytest.skip(str(reason))


def readme_config(port: int, datadir: Path, backups: Path) -> str:
    """The README's pg.toml with this machine's paths and port put in."""
    block = next(
        (b for b in re.findall(r"```toml\n(.*?)```", README.read_text(), re.DOTALL) if "postgresql://" in b),
        None,
    )
    assert block, "compose/README.md lost its pg.toml"
    return (
        block.replace("/path/to/splitmirror/compose/data/postgres", str(datadir))
        .replace("/var/backups/splitmirror", str(backups))
        .replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    )


def test_the_readme_walkthrough(
    compose_postgres: tuple[int, Path, str], splitmirror_catalog: Path, tmp_path: Path
) -> None:
    port, datadir, _image = compose_postgres
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 10000) g")
    backups = tmp_path / "backups"
    backups.mkdir()
    config = tmp_path / "pg.toml"
    config.write_text(readme_config(port, datadir, backups))
    config.chmod(0o600)

    cli = CliRunner()
    checked = cli.invoke(main, ["check", str(config)])
    assert checked.exit_code == 0 and "ready for a hot-backup session" in checked.output, checked.output
    backed_up = cli.invoke(main, ["backup", str(config)])
    assert backed_up.exit_code == 0 and "DONE" in backed_up.output, backed_up.output
    restored = backups / "restored-pg"
    result = cli.invoke(main, ["restore", "1", "--to", str(restored), "--json"])
    assert result.exit_code == 0, result.output
    steps = [RestoreStep.from_json(step) for step in json.loads(result.output)["steps"]]
    # The README's own docker run line is the printed one, with a name and a port added.
    printed = container_step(steps).text().split("   #")[0]
    options = printed.removeprefix("docker run -d ").split(" IMAGE")[0]
    readme = README.read_text().replace(" \\\n    ", " ").replace("/var/backups/splitmirror", str(backups))
    assert f"-p 127.0.0.1:5433:5432 {options} " in readme, (options, readme)

    template = ContainerPostgres("15", restored, os.environ["PGPASSWORD"])  # its image and password
    restore = RestoreResult("", restored, [], [], 0, "postgresql", steps, [])
    with template.restored(restore) as copy, psycopg.connect(copy.conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (10000,)
