"""compose/README.md's Oracle walkthrough, run as written where the image can be pulled: its shell
block and its ``oracle.toml`` are read out of the README (never copied here) and run in one bash
session.  Only the user's places are moved (the data and backup directories under the test's
directory, free ports for 1521 and 1522, a compose project and catalog of the test's own, this
machine's image and compose command); every command, the restored copy's ``docker run`` among
them, is the README's."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from oracle_servers import require_image

from splitmirror.testing.containers import compose_command, free_port, image_for, newest
from splitmirror.testing.docs import blocks, section

REPO = Path(__file__).resolve().parents[3]
README = REPO / "compose" / "README.md"
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
NO_COMPOSE = "neither `docker compose` nor docker-compose is installed (compose/start-engine installs one)"


def walkthrough() -> tuple[str, str]:
    """The Oracle section's shell block and its ``oracle.toml``."""
    part = section(README, "## The same against Oracle")
    (shell,) = blocks(part, "sh")
    (config,) = blocks(part, "toml")
    return shell, config


def test_the_readme_walkthrough_runs_as_written(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the compose walkthrough runs as root: splitmirror reads files the container's user owns")
    compose = compose_command()
    if compose is None:
        pytest.skip(
            "neither `docker compose` nor docker-compose is installed (compose/start-engine installs one)"
        )
    version = newest("oracle")
    require_image(version)
    image = image_for("oracle", version)
    data: Path = request.getfixturevalue("splitmirror_primary_disk")
    live, restored, backups = free_port(), free_port(), tmp_path / "backups"

    def here(text: str) -> str:
        text = text.replace("compose/docker-compose.yml", str(COMPOSE_FILE))
        text = text.replace("/path/to/splitmirror/compose/data", str(data))
        text = text.replace("/var/backups/splitmirror", str(backups))
        text = text.replace("127.0.0.1:1522:", f"127.0.0.1:{restored}:").replace(
            ":1521/FREE", f":{live}/FREE"
        )
        text = text.replace("splitmirror restore 3 ", "splitmirror restore 1 ")  # this test's own catalog
        text = re.sub(r"^docker-compose ", " ".join(compose) + " ", text, flags=re.MULTILINE)
        return re.sub(r"(&& |\$\()docker-compose ", rf"\1{' '.join(compose)} ", text)

    shell, config = walkthrough()
    (tmp_path / "oracle.toml").write_text(here(config))
    (tmp_path / "oracle.toml").chmod(0o600)
    script = here(shell)
    script = script.replace("'choose-one'", f"'{secrets.token_urlsafe(12)}'")
    script = script.replace("'choose-another'", f"'{secrets.token_urlsafe(12)}'")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "SPLITMIRROR_DATA": str(data),
        f"SPLITMIRROR_IMAGE_ORACLE_{version}": image,
        "ORACLE_PORT": str(live),
        "COMPOSE_PROJECT_NAME": f"splitmirror-walkthrough-{os.getpid()}",
        "SPLITMIRROR_CATALOG": str(tmp_path / "catalog.db"),
    }
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=1800,
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        counts = [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()]
        assert counts == ["10000"], done.stdout  # the restored copy's SELECT count(*) FROM orders
    finally:
        subprocess.run(["docker", "rm", "-f", "oracle-restored"], capture_output=True, check=False)
        subprocess.run(
            [*compose, "-f", str(COMPOSE_FILE), "--profile", "oracle", "down", "--volumes"],
            env=env,
            capture_output=True,
            check=False,
        )


def test_the_service_mounts_the_plugins_own_first_start_scripts() -> None:
    """Runs everywhere compose does: the file's ``oracle`` service mounts the scripts the test
    harness runs (ARCHIVELOG, the account), from where the plugin keeps them."""
    compose = compose_command()
    if compose is None:
        pytest.skip(NO_COMPOSE)
    shown = subprocess.run(
        [*compose, "-f", str(COMPOSE_FILE), "--profile", "oracle", "config"],
        capture_output=True, text=True, check=True, env={**os.environ, "SPLITMIRROR_DATA": "/srv/data"},
    ).stdout  # fmt: skip
    service = shown[shown.index("\n  oracle:") : shown.index("\n  postgres:")]
    mounts = dict(_mounts(service))
    assert mounts["/opt/oracle/oradata"] == "/srv/data/oracle"
    scripts = Path(mounts["/container-entrypoint-initdb.d"])
    assert sorted(p.name for p in scripts.iterdir()) == ["01-archivelog.sh", "02-splitmirror-user.sh"]
    assert all(os.access(p, os.X_OK) for p in scripts.iterdir()), (
        "the image sources, not runs, a script without +x"
    )
    assert (Path(mounts["/splitmirror-init"]) / "splitmirror-user.sql").is_file()


def _mounts(service: str) -> list[tuple[str, str]]:
    """(inside, host) for each bind mount in ``config``'s output for one service: compose v1
    writes ``- HOST:INSIDE:MODE``, v2 ``source:`` and ``target:`` lines."""
    short = [
        line.strip(" -").rsplit(":", 2)[:2] for line in service.splitlines() if line.startswith("    - /")
    ]
    sources = re.findall(r"^\s+source: (\S+)$", service, re.MULTILINE)
    targets = re.findall(r"^\s+target: (\S+)$", service, re.MULTILINE)
    return [(inside, host) for host, inside in short] + list(zip(targets, sources, strict=True))
