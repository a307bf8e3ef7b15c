"""The walkthroughs in the docs, run as written: the commands are read out of the Markdown (never
copied here), with only the user's paths moved under the test's directory, and each must exit 0.
A doc that drifts from the tool fails here (issue 14: README's walkthrough failed at its third
command)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from splitmirror.workload import create_ledger

REPO = Path(__file__).resolve().parents[1]


def section(document: Path, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same level."""
    text = document.read_text()
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    following = re.search(rf"^{level} ", text[start + len(heading) :], re.MULTILINE)
    return text[start : start + len(heading) + (following.start() if following else len(text))]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """Each command line of a shell block (comments and blank lines are not commands)."""
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One line in bash, with the installed ``splitmirror`` first on PATH (the README's
    activated venv)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("SPLITMIRROR_CATALOG", None)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", line],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    walkthrough = section(REPO / "README.md", "## A five-minute walkthrough")
    (config,) = blocks(walkthrough, "toml")
    shell = blocks(walkthrough, "sh")
    assert shell, "the walkthrough lost its commands"

    def here(text: str) -> str:  # the user's machine, under tmp_path
        for path in ("/srv/data", "/backup", "/tmp/restore"):
            text = text.replace(path, f"{tmp_path}{path}")
        return text

    database = tmp_path / "srv" / "data" / "orders.db"
    database.parent.mkdir(parents=True)
    create_ledger(database, rows=1000)  # "your application's SQLite database"
    (tmp_path / "orders.toml").write_text(here(config))
    (tmp_path / "orders.toml").chmod(0o600)  # as the walkthrough says
    ran = []
    for block in shell:
        for line in commands(here(block)):
            done = run(line, tmp_path)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            ran.append(line.split()[0:2])
    assert ["splitmirror", "restore"] in ran and ["splitmirror", "verify"] in ran
    for restored in ("restore", "restore-tar"):
        assert (tmp_path / "tmp" / restored / "orders.db").is_file(), restored


@pytest.mark.parametrize("document", ["README.md", "docs/restore.md", "docs/configuration.md"])
def test_every_toml_example_loads(document: str, tmp_path: Path) -> None:
    """Every full configuration in these docs is accepted as written (paths aside)."""
    from splitmirror.config import load_config

    for number, block in enumerate(blocks((REPO / document).read_text(), "toml")):
        if "[session]" not in block or "[target]" not in block:
            continue  # a fragment, not a configuration
        path = tmp_path / f"{number}.toml"
        path.write_text(block)
        path.chmod(0o600)
        load_config(path)
