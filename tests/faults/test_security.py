"""The security model's mechanical parts: no shell anywhere, private files, and a watcher of
process arguments that does see a secret when one is there (the plugins' secrets tests rely
on it to see nothing)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

from splitmirror.config import load_config
from splitmirror.hooks import Hooks
from splitmirror.session import Session
from splitmirror.testing.secrets import ArgvWatch, private, sentinel_password

REPO = Path(__file__).resolve().parents[2]


def _python_files() -> list[Path]:
    skip = {".venv", "node_modules", ".git", "splitmirror-demo"}
    return [p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts)]


def test_no_shell_anywhere() -> None:
    """No ``shell=True``, ``os.system`` or ``os.popen``: arguments go to programs as a list, so
    nothing in a path or a name is ever parsed by a shell."""
    offenders = []
    files = _python_files()
    assert len(files) > 50, "the scan found too few files to mean anything"
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                shell = any(
                    k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords
                )
                if shell or func in ("os.system", "os.popen"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {func}")
    assert not offenders, offenders


def test_the_catalog_lock_and_archive_are_private(ledger: Path, write_config: Any, tmp_path: Path) -> None:
    catalog_dir = tmp_path / "fresh" / "catalog-dir"
    config = write_config(extra="")
    text = config.read_text().replace(f'catalog = "{tmp_path}/catalog.db"', f'catalog = "{catalog_dir}/c.db"')
    config.write_text(text)
    summary = Session(load_config(config), Hooks()).run()
    archive = Path(summary.archive or "")
    for path in (catalog_dir, catalog_dir / "c.db", catalog_dir / "locks", archive):
        assert private(path), f"{path} is readable by others ({oct(path.stat().st_mode)})"


def test_the_argv_watch_sees_a_secret_when_one_is_there() -> None:
    secret = sentinel_password()
    with ArgvWatch(secret) as watch:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)", secret], check=True)
    assert watch.seen and secret in next(iter(watch.seen))
