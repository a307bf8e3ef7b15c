"""``splitmirror.api`` is the one module plugins import from core (besides ``splitmirror.testing``):
every name it promises exists, and the in-tree plugins' code imports nothing else of core."""

from __future__ import annotations

import ast
from pathlib import Path

import splitmirror.api

REPOSITORY = Path(__file__).resolve().parents[1]


def core_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import of ``splitmirror`` or one of its modules in ``source``;
    ``from splitmirror import api`` counts as ``splitmirror.api``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "splitmirror"
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "splitmirror":
                found += [(node.lineno, f"splitmirror.{alias.name}") for alias in node.names]
            elif node.module.startswith("splitmirror."):
                found.append((node.lineno, node.module))
    return found


def forbidden(module: str) -> bool:
    """Not one of the modules of core a plugin's code may import: ``splitmirror.api``,
    ``splitmirror.testing`` and its submodules."""
    return not (
        module in ("splitmirror.api", "splitmirror.testing") or module.startswith("splitmirror.testing.")
    )


def test_the_scan_sees_every_kind_of_import() -> None:
    source = (
        "import splitmirror.engine\n"
        "from splitmirror.config import Duration\n"
        "from splitmirror import impl, api\n"
        "from splitmirror.api import DatabaseEngine\n"
        "from splitmirror.testing.containers import image_for\n"
        "import splitmirror_postgresql.engine\n"
        "from . import layout\n"
        "def later():\n"
        "    import splitmirror.session\n"
    )
    modules = core_imports(source)
    assert [m for _line, m in modules if forbidden(m)] == [
        "splitmirror.engine",
        "splitmirror.config",
        "splitmirror.impl",
        "splitmirror.session",
    ]


def test_plugins_import_core_only_through_the_api() -> None:
    sources = sorted(REPOSITORY.glob("plugins/*/src/**/*.py"))
    assert len(sources) >= 20, "the plugins' sources were not found"
    offending = [
        f"{path.relative_to(REPOSITORY)}:{line}: {module}"
        for path in sources
        for line, module in core_imports(path.read_text())
        if forbidden(module)
    ]
    assert not offending, (
        "plugins import core outside splitmirror.api and splitmirror.testing:\n" + "\n".join(offending)
    )


def test_every_promised_name_resolves() -> None:
    names = splitmirror.api.__all__
    assert len(names) == len(set(names))
    missing = [name for name in names if getattr(splitmirror.api, name, None) is None]
    assert not missing
    assert {"DatabaseEngine", "ServerEngine", "PreflightError", "RestoreStep", "impl", "Mode"} <= set(names)


def test_the_testing_package_names_resolve() -> None:
    import splitmirror.testing

    for name in splitmirror.testing.__all__:
        assert getattr(splitmirror.testing, name) is not None, name
