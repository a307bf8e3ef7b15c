"""docs/architecture.md's module table names every module of the core package, and only those."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "core" / "src" / "splitmirror"


def tabled() -> set[str]:
    """Dotted names in the first column of the table under '## Modules'."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and "`" in cells[1]:
            names.update(re.findall(r"`([\w.]+)`", cells[1]))
    return names


def modules() -> set[str]:
    """Every module of the package, as a dotted name relative to ``splitmirror``."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts[-1] != "__main__":
            found.add(".".join(parts))
    return found


def covered(module: str, names: set[str]) -> bool:
    """Listed itself, inside a listed package (``testing``), or a package whose modules are listed."""
    return any(
        module == name or module.startswith(name + ".") or name.startswith(module + ".") for name in names
    )


def test_every_module_is_in_the_table() -> None:
    names = tabled()
    missing = sorted(module for module in modules() if not covered(module, names))
    assert not missing, f"modules missing from docs/architecture.md's table: {missing}"


def test_the_table_names_no_module_that_does_not_exist() -> None:
    assert not sorted(tabled() - modules())


def test_every_public_member_of_a_plugin_base_class_is_named() -> None:
    """The plugin API is the three base classes' public members, class attributes included:
    each class's bullet in docs/architecture.md's Plugins section names each (it once missed
    half of them, ``will_read`` among the newest)."""
    from splitmirror.engine import DatabaseEngine
    from splitmirror.mirror.base import MirrorProvider
    from splitmirror.targets.base import Target

    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## Plugins\n", 1)[1].split("\n## ", 1)[0]
    bullets = {
        found.group(1): found.group(0)
        for found in re.finditer(r"- \*\*[^*]+\*\* \(`([\w.]+)`\).*?(?=\n- \*\*|\n\n)", section, re.S)
    }
    missing = []
    for cls in (DatabaseEngine, MirrorProvider, Target):
        bullet = bullets[f"{cls.__module__.removeprefix('splitmirror.')}.{cls.__name__}"]
        names = dict.fromkeys([*vars(cls), *cls.__annotations__])
        missing += [
            f"{cls.__name__}.{name}"
            for name in names
            if not name.startswith("_") and f"`{name}`" not in bullet
        ]
    assert not missing, f"docs/architecture.md's Plugins section does not name {missing}"
