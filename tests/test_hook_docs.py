"""Every hook is documented with its exact signature, and exercised by at least one test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from splitmirror import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = {name: fn for name, fn in vars(hookspecs).items() if name.startswith("splitmirror_")}


def documented() -> dict[str, str]:
    text = (ROOT / "docs" / "hooks.md").read_text()
    return dict(re.findall(r"^(splitmirror_\w+)(\(.*\) -> .*)$", text, flags=re.MULTILINE))


def signature(fn: object) -> str:
    return str(inspect.signature(fn)).replace("'", "")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_documented_with_matching_signature(name: str) -> None:
    docs = documented()
    assert name in docs, f"{name} is missing from docs/hooks.md"
    assert docs[name] == signature(HOOKS[name])


def test_docs_list_no_hook_that_does_not_exist() -> None:
    assert set(documented()) <= set(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_test(name: str) -> None:
    tests = "".join(
        p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_hook_docs.py"
    )
    assert f"def {name}(" in tests, f"no test implements {name}"


def test_every_hook_is_prefixed_and_marked() -> None:
    for name, fn in HOOKS.items():
        assert hasattr(fn, "splitmirror_spec"), f"{name} lacks the hookspec marker"
