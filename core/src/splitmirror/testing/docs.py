"""Reading a walkthrough out of Markdown, for the tests that run the docs as written: a section
under its heading, and its fenced blocks.  The commands stay in the docs (never copied into a
test), so a doc that drifts from the tool fails its test."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path


def section(document: Path, heading: str) -> str:
    """The text under ``heading`` (``"## The same against MariaDB"``) up to the next heading of
    the same level, or the end of the document."""
    text = document.read_text()
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    following = re.search(rf"^{level} ", text[start + len(heading) :], re.MULTILINE)
    return text[start : start + len(heading) + (following.start() if following else len(text))]


def blocks(text: str, language: str, *, indented: bool = False) -> list[str]:
    """The fenced blocks of ``language`` (``sh``, ``toml``); ``indented`` also finds those
    inside list items."""
    lead = r"[ \t]*" if indented else ""
    found = re.findall(rf"^{lead}```{language}\n(.*?)^{lead}```", text, re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(block) for block in found]
