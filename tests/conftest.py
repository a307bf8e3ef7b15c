"""Shared fixtures: a live SQLite ledger on a primary folder, configs, and a private catalog."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from splitmirror.config import Config, load_config
from splitmirror.hooks import Hooks
from splitmirror.plugins import load_plugins
from splitmirror.testing.loopfs import loop_filesystem, loop_filesystem_unavailable
from splitmirror.tracking import left_behind
from splitmirror.tracking import unavailable as tracking_unavailable
from splitmirror.workload import create_ledger

CONFIG = """\
[session]
name = "{name}"
max_window = "{max_window}"
catalog = "{root}/catalog.db"

[database]
url = "sqlite://{root}/primary/ledger.db"
mode = "{mode}"

[mirror]
provider = "directory"
primary = "{root}/primary"
mirror = "{root}/mirror"

[target]
path = "{root}/archives/ledger-{{session}}.tar"
block_size = "{block_size}"
"""


@pytest.fixture(autouse=True)
def _private_catalog(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's real catalog."""
    monkeypatch.setenv("SPLITMIRROR_CATALOG", str(tmp_path_factory.mktemp("catalog") / "catalog.db"))
    monkeypatch.delenv("SPLITMIRROR_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("SPLITMIRROR_BLOCK_PLUGINS", raising=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for sub in ("primary", "mirror", "archives"):
        (tmp_path / sub).mkdir()
    return tmp_path


@pytest.fixture
def ledger(root: Path) -> Path:
    """A WAL-mode ledger database with 2000 seed rows on the primary."""
    db = root / "primary" / "ledger.db"
    create_ledger(db, rows=2000)
    return db


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(root: Path) -> WriteConfig:
    def write(
        mode: str = "freeze",
        name: str = "ledger",
        max_window: str = "30s",
        block_size: str = "256KiB",
        extra: str = "",
    ) -> Path:
        path = root / f"{name}-{mode}.toml"
        text = CONFIG.format(root=root, mode=mode, name=name, max_window=max_window, block_size=block_size)
        path.write_text(text + extra)
        path.chmod(0o600)
        return path

    return write


@pytest.fixture
def make_config(write_config: WriteConfig) -> Callable[..., Config]:
    def make(**kwargs: Any) -> Config:
        return load_config(write_config(**kwargs))

    return make


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    """Built-in plugins only: what a test registers is all that runs besides them.  Strict: an
    observer a test registers that raises (an assertion in it) fails the session, not a log."""
    yield Hooks(load_plugins(entry_points_enabled=False), strict=True)


@pytest.fixture
def lenient_hooks() -> Iterator[Hooks]:
    """As :func:`hooks`, with the policy a user gets: a failing observer is logged."""
    yield Hooks(load_plugins(entry_points_enabled=False), strict=False)


def writable_now(db: Path) -> bool:
    """True when another connection can take the write lock at once (nobody holds it)."""
    with closing(sqlite3.connect(db, timeout=0, isolation_level=None)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        conn.execute(
            "INSERT INTO ledger (writer, seq, at, payload)"
            " SELECT 99, COALESCE(MAX(seq), 0) + 1, 0, x'00' FROM ledger WHERE writer = 99"
        )
        conn.execute("COMMIT")
        return True


def integrity(db: Path) -> tuple[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        return (
            conn.execute("PRAGMA integrity_check").fetchone()[0],
            conn.execute("SELECT count(*) FROM ledger").fetchone()[0],
        )


def write_distribution(source: Path, name: str, version: str, entry_points: dict[str, str]) -> Path:
    """A minimal pyproject.toml for a splitmirror plugin distribution in ``source``."""
    source.mkdir(parents=True, exist_ok=True)
    points = "\n".join(f'{key} = "{value}"' for key, value in entry_points.items())
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n\n'
        f"[project.entry-points.splitmirror]\n{points}\n"
    )
    return source


def install_in_venv(source: Path, venv: Path) -> Path:
    """pip-install the distribution at ``source`` into a fresh virtual environment that also
    sees this one's packages (splitmirror, pytest); returns its python.  Offline: no index."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    parent_site = sysconfig.get_paths()["purelib"]
    (site / "zz_parent.pth").write_text(f"import site; site.addsitedir({parent_site!r})\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
         "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        check=True,
        env={**os.environ, "PIP_CONSTRAINT": ""},
    )  # fmt: skip
    return venv / "bin" / "python"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 MiB loop-device ext4 mounted at ``tmp_path/disk`` (the rest of ``tmp_path`` stays
    free for the mirror, the catalog and archives); skipped where loop devices are not ours."""
    reason = loop_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    (tmp_path / "disk").mkdir()
    with loop_filesystem(tmp_path / "disk", 96 << 20) as mount:
        yield mount


@pytest.fixture
def tracked_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB loop-device ext4 where writes can be tracked (root, tracefs); no tracing
    instance may outlive the test."""
    reason = loop_filesystem_unavailable() or tracking_unavailable()
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path, 64 << 20) as mount:
        yield mount
    assert not left_behind(), "a tracing instance outlived its test"
