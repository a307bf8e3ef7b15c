"""The walkthroughs in the docs, run as written: the commands are read out of the Markdown (never
copied here), with only the user's paths moved under the test's directory, and each must exit 0.
A doc that drifts from the tool fails here (issue 14: README's walkthrough failed at its third
command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitmirror.testing.docs import blocks, section
from splitmirror.workload import create_ledger

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def orders_archive(tmp_path: Path) -> Path:
    """A HOT_BACKUP of ``orders.db`` (WAL mode, so the archive holds ``orders.db-wal`` too),
    taken with README's configuration."""
    (config,) = blocks(section(REPO / "README.md", "## A five-minute walkthrough"), "toml")
    for path in ("/srv/data", "/backup"):
        config = config.replace(path, f"{tmp_path}{path}")
    (tmp_path / "srv" / "data").mkdir(parents=True)
    create_ledger(tmp_path / "srv" / "data" / "orders.db", rows=1000)
    for directory in ("backup/mirror", "backup/archives"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "orders.toml").write_text(config)
    (tmp_path / "orders.toml").chmod(0o600)
    assert run("splitmirror backup --quiet orders.toml", tmp_path).returncode == 0
    return tmp_path / "backup" / "archives" / "orders-1.tar"


def test_the_emergency_restore_with_gnu_tar_runs_as_written(orders_archive: Path, tmp_path: Path) -> None:
    """docs/restore.md's emergency section: plain tar, then each of the three checksum checks,
    every file OK; then the same checks find a flipped byte."""
    emergency = section(REPO / "docs" / "restore.md", "## Emergency restore with plain GNU tar")

    def here(text: str) -> str:
        text = text.replace("/backup/archives/orders-7.tar", str(orders_archive))
        return text.replace("/restore/orders", str(tmp_path / "restore" / "orders"))

    shell = [here(block) for block in blocks(emergency, "sh", indented=True)]
    extract, with_xattrs, with_manifest = shell
    for line in commands(extract):
        line = line.replace("mkdir ", "mkdir -p ")  # the first block runs again after the xattrs one
        assert run(line, tmp_path).returncode == 0, line
    checks = run(with_xattrs, tmp_path)
    assert checks.stdout.splitlines() == ["OK  orders.db", "OK  orders.db-wal"], checks.stdout + checks.stderr
    manifest = run(with_manifest, tmp_path)
    assert manifest.returncode == 0 and "orders.db: OK" in manifest.stdout, manifest.stdout + manifest.stderr
    (python,) = blocks(emergency, "python", indented=True)
    script = tmp_path / "check.py"
    script.write_text(python)
    straight = subprocess.run(
        [sys.executable, str(script), str(orders_archive)], capture_output=True, text=True
    )
    assert straight.returncode == 0 and "OK  orders.db" in straight.stdout, straight.stdout

    restored = tmp_path / "restore" / "orders" / "orders.db"
    data = bytearray(restored.read_bytes())
    data[5000] ^= 0xFF
    restored.write_bytes(bytes(data))
    check_only = with_xattrs.split("\n", 1)[1]  # the block without its tar line, which would extract again
    assert "BAD orders.db" in run(check_only, tmp_path).stdout
    assert run(with_manifest, tmp_path).returncode != 0


def test_the_restore_drill_snippet_runs_as_written(tmp_path: Path) -> None:
    """docs/restore.md's drill from Python, as written (its scratch directory moved here)."""
    drills = section(REPO / "docs" / "restore.md", "## Restore drills")
    (snippet,) = blocks(drills, "python")
    script = tmp_path / "drill.py"
    script.write_text(snippet.replace("/var/tmp/drill", str(tmp_path / "drill")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "drill hot-backup, 4 writers:" in done.stdout and " 0 lost, 0 gaps" in done.stdout, done.stdout


def test_the_readme_nightly_section_runs_as_written(tmp_path: Path) -> None:
    """README's "Running it every night": its sections added to the walkthrough's config, its
    commands run twice over (a night, then the next), the metrics and the drill as it says."""
    walkthrough = section(REPO / "README.md", "## A five-minute walkthrough")
    nightly = section(REPO / "README.md", "## Running it every night")
    (config,) = blocks(walkthrough, "toml")
    (sections,) = blocks(nightly, "toml")
    (shell,) = blocks(nightly, "sh")

    def here(text: str) -> str:
        return text.replace("/srv/data", f"{tmp_path}/srv/data").replace("/backup", f"{tmp_path}/backup")

    database = tmp_path / "srv" / "data" / "orders.db"
    database.parent.mkdir(parents=True)
    create_ledger(database, rows=1000)
    for directory in ("backup/mirror", "backup/archives"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "orders.toml").write_text(here(config) + "\n" + here(sections))
    (tmp_path / "orders.toml").chmod(0o600)
    lines = commands(here(shell))
    assert any("backup --prune" in line for line in lines) and any("drill" in line for line in lines)
    for night in range(2):
        for line in lines:
            done = run(line, tmp_path)
            assert done.returncode == 0, f"night {night}: {line}\n{done.stdout}\n{done.stderr}"
    listed = run("splitmirror list --config orders.toml --all", tmp_path).stdout
    assert "last drill of orders: session 2 PASSED" in listed
    metrics = (tmp_path / "backup" / "metrics" / "splitmirror-orders.prom").read_text()
    assert 'splitmirror_last_drill_success{name="orders"} 1.0' in metrics
    # Both nights fell on one day: the daily, weekly and monthly rules keep its newest archive.
    assert 'splitmirror_archives{name="orders"} 1.0' in metrics
    assert "DONE (pruned)" in listed
