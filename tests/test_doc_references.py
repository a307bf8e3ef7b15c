"""Docs and docstrings point only at what a reader of the repository (or the package) has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Documents that live beside the repository, not in it: readers of docs/ or the package lack them.
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared|reference/databases\.md|patent-claims|\bclaim \d+")


def test_no_pointer_to_a_document_outside_the_repository() -> None:
    places = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("core/src/**/*.py")]
    places += [
        *ROOT.glob("plugins/*/src/**/*.py"),
        *ROOT.glob("plugins/**/*.md"),
        ROOT / "compose" / "README.md",
    ]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in places
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "\n".join(found)
