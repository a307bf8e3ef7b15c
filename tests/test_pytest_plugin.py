"""The pytest plugin splitmirror publishes gives fixtures only, and costs nothing until used."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from splitmirror.testing import plugin

ROOT = Path(__file__).resolve().parent.parent


def test_no_fixture_of_the_published_plugin_is_autouse() -> None:
    tree = ast.parse(Path(plugin.__file__).read_text())
    autouse = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call)
        for keyword in decorator.keywords
        if keyword.arg == "autouse"
    ]
    assert not autouse, f"autouse fixtures in the published plugin: {autouse}"


def test_loading_the_plugin_imports_no_session_engine() -> None:
    """pytest loads the plugin in every project where splitmirror is installed."""
    probe = "import sys, splitmirror.testing.plugin; print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    for heavy in (
        "splitmirror.session",
        "splitmirror.testing.drill",
        "splitmirror.tracking",
        "testcontainers",
    ):
        assert f"'{heavy}'" not in loaded, f"{heavy} imported with the plugin: {loaded}"


def test_the_testing_extra_brings_what_the_fixtures_run_on() -> None:
    extras = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {requirement.split(">")[0].split("=")[0] for requirement in extras["testing"]}
    assert {"pytest", "testcontainers"} <= names
