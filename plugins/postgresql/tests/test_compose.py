"""compose/README.md's PostgreSQL walkthrough, run as written: its shell blocks and its
``pg.toml`` are read out of the README (never copied here) and run in one bash session.  Only the
user's places are moved (the data and backup directories under the test's directory, free ports
for 5432 and 5433, a compose project of the test's own, this machine's images and compose
command); every command, the waits and the restored copy's ``docker run`` among them, is the
README's.  A README that drifts from the tool fails here."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from splitmirror.testing.containers import Unavailable, compose_command, free_port, image_for
from splitmirror.testing.docs import blocks, section

REPO = Path(__file__).resolve().parents[3]
README = REPO / "compose" / "README.md"
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"


def walkthrough() -> tuple[list[str], str]:
    """The PostgreSQL section's shell blocks and its ``pg.toml``."""
    part = section(README, "## Trying it out: a backup session against PostgreSQL in a container")
    (config,) = blocks(part, "toml")
    return blocks(part, "sh"), config


def test_the_readme_walkthrough_runs_as_written(splitmirror_primary_disk: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the compose walkthrough runs as root: splitmirror reads files the container's user owns")
    compose = compose_command()
    if compose is None or not COMPOSE_FILE.is_file():
        pytest.skip(
            "neither `docker compose` nor docker-compose is installed (compose/start-engine installs one)"
        )
    try:
        images = {"POSTGRES_15": image_for("postgres", "15"), "MARIADB_10_11": image_for("mariadb", "10.11")}
    except Unavailable as reason:
        pytest.skip(str(reason))
    live, restored = free_port(), free_port()
    data, backups = splitmirror_primary_disk, tmp_path / "backups"

    def here(text: str) -> str:
        text = text.replace("compose/docker-compose.yml", str(COMPOSE_FILE))
        text = text.replace("/path/to/splitmirror/compose/data", str(data))
        text = text.replace("/var/backups/splitmirror", str(backups))
        text = (
            text.replace("5433", str(restored))
            .replace("-p 5432", f"-p {live}")
            .replace(":5432/", f":{live}/")
        )
        text = re.sub(r"^docker-compose ", " ".join(compose) + " ", text, flags=re.MULTILINE)
        text = re.sub(r"(&& )docker-compose ", rf"\1{' '.join(compose)} ", text)
        for name, image in images.items():
            text = re.sub(
                rf"^export SPLITMIRROR_IMAGE_{name}=\S+",
                f"export SPLITMIRROR_IMAGE_{name}={image}",
                text,
                flags=re.M,
            )
        return "\n".join(
            line for line in text.splitlines() if not line.startswith("make ")
        )  # images are built

    shell, config = walkthrough()
    (tmp_path / "pg.toml").write_text(here(config))
    (tmp_path / "pg.toml").chmod(0o600)
    password = secrets.token_urlsafe(16)
    script = "\n".join(here(block) for block in shell).replace("'choose-one'", f"'{password}'")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "SPLITMIRROR_DATA": str(data),
        "POSTGRES_PORT": str(live),
        "MARIADB_PORT": str(free_port()),
        "COMPOSE_PROJECT_NAME": f"splitmirror-walkthrough-{os.getpid()}",
    }
    env.pop("SPLITMIRROR_CATALOG", None)
    env["SPLITMIRROR_CATALOG"] = str(tmp_path / "catalog.db")  # the user's own default catalog
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        counts = [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()]
        assert counts == ["10000"], done.stdout  # the restored copy's SELECT count(*) FROM orders
    finally:
        subprocess.run(["docker", "rm", "-f", "pg-restored"], capture_output=True, check=False)
        subprocess.run(
            [*compose, "-f", str(COMPOSE_FILE), "down", "--volumes"],
            env=env,
            capture_output=True,
            check=False,
        )
