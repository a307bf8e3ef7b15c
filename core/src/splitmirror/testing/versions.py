"""What ran where: each database version a test run met, the image it ran from (upstream or the
offline one built from Debian's packages), the exact version in it, and how its tests ended.

Two uses, so that the tables of supported versions in ``docs/databases/`` are written from a run
and never by hand:

* a pytest plugin (``-p splitmirror.testing.versions``, as this repository's configuration loads
  it): it notes the image choices (:func:`~splitmirror.testing.images.take_choices`) each test
  made and the test's outcome, prints one line per version at the end, and writes them as JSON
  to ``$SPLITMIRROR_VERSIONS_REPORT`` when that is set (``make test`` sets it);
* ``python -m splitmirror.testing.versions REPORT DOC...`` (``make versions``): rewrites, in each
  DOC, the block between ``<!-- versions: FAMILY... -->`` and ``<!-- /versions -->`` with a table
  of every version :data:`~splitmirror.testing.images.IMAGES` knows of those families.  It
  refuses the report of a partial run (a ``-k``, ``-m`` or a path chosen) or one where a
  database's test failed, unless given ``--partial``: the docs show what the whole suite proved.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from .images import IMAGES, OFFLINE_PREFIX, Choice, take_choices, versions

#: Where the plugin writes its JSON report, when set.
REPORT_VARIABLE = "SPLITMIRROR_VERSIONS_REPORT"

_BLOCK = re.compile(r"(<!-- versions: ([a-z0-9 ]+) -->\n)(.*?)(<!-- /versions -->)", re.DOTALL)


@dataclasses.dataclass
class VersionRun:
    """One database version in one test run."""

    database: str
    version: str
    image: str | None = None
    exact: str = ""
    unavailable: str = ""
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def note(self, choice: Choice, outcome: str) -> None:
        if choice.image is not None:
            self.image, self.exact, self.unavailable = choice.image, choice.exact, ""
        elif self.image is None:
            self.unavailable = choice.unavailable
        setattr(self, outcome, getattr(self, outcome) + 1)

    def line(self) -> str:
        counts = f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"
        if self.image is None:
            return f"{self.database} {self.version}: not run here ({self.unavailable}); {counts}"
        return f"{self.database} {self.version}: {self.image} ({self.exact or 'version unknown'}): {counts}"


class Recorder:
    """The plugin: a test's outcome is its worst phase (failed over skipped over passed)."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], VersionRun] = {}
        self._outcomes: dict[str, str] = {}

    def pytest_collection_finish(self) -> None:
        take_choices()  # what collection asked (on_newest) belongs to no test

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        before = self._outcomes.get(report.nodeid)
        if report.failed:
            self._outcomes[report.nodeid] = "failed"
        elif report.skipped and before != "failed":
            self._outcomes[report.nodeid] = "skipped"
        elif report.when == "call" and report.passed and before is None:
            self._outcomes[report.nodeid] = "passed"

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        outcome = self._outcomes.pop(nodeid, "passed")
        seen: dict[tuple[str, str], Choice] = {}
        for choice in take_choices():
            seen[(choice.database, choice.version)] = choice
        for key, choice in seen.items():
            self.runs.setdefault(key, VersionRun(*key)).note(choice, outcome)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.runs:
            terminalreporter.section("database versions (splitmirror.testing.versions)")
            for run in self.ordered():
                terminalreporter.write_line(run.line())

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        destination = os.environ.get(REPORT_VARIABLE)
        if destination and self.runs:
            config = session.config
            whole = (
                config.args_source == pytest.Config.ArgsSource.TESTPATHS
                and not config.option.keyword
                and not config.option.markexpr
            )
            path = Path(destination)
            path.parent.mkdir(parents=True, exist_ok=True)
            report = {
                "ran_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
                "host": f"{platform.system()} {platform.release()} ({platform.machine()})",
                "whole_suite": whole,
                "exit_status": int(exitstatus),
                "versions": [dataclasses.asdict(run) for run in self.ordered()],
            }
            path.write_text(json.dumps(report, indent=2) + "\n")

    def ordered(self) -> list[VersionRun]:
        return sorted(self.runs.values(), key=lambda run: _order(run.database, run.version))


def _order(database: str, version: str) -> tuple[str, int]:
    known = versions(database) if any(name == database for name, _ in IMAGES) else []
    return database, known.index(version) if version in known else len(known)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(Recorder(), "splitmirror-versions")


def table(report: dict[str, Any], families: Sequence[str]) -> str:
    """The Markdown table of every version of ``families`` the images know, from ``report``."""
    runs = {(r["database"], r["version"]): VersionRun(**r) for r in report["versions"]}
    lines = [
        f"Written by `make versions` from the test run of {report['ran_at']} on {report['host']}.",
        "",
        "| database | version | ran on | exact version | tests |",
        "|---|---|---|---|---|",
    ]
    for family in families:
        for version in versions(family):
            run = runs.get((family, version))
            if run is None:
                lines.append(f"| {family} | {version} | not in this run | | |")
            elif run.image is None:
                lines.append(
                    f"| {family} | {version} | not run here: {_cell(run.unavailable)} | | "
                    f"{run.skipped} skipped |"
                )
            else:
                where = "offline image" if run.image.startswith(OFFLINE_PREFIX) else "upstream image"
                counts = f"{run.passed} passed, {run.failed} failed, {run.skipped} skipped"
                lines.append(f"| {family} | {version} | {where} `{run.image}` | {run.exact} | {counts} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rewrite(text: str, report: dict[str, Any]) -> str:
    """``text`` with each versions block replaced by its table."""
    return _BLOCK.sub(lambda m: m.group(1) + table(report, m.group(2).split()) + m.group(4), text)


def families_in(text: str) -> list[list[str]]:
    """The families each versions block of ``text`` names."""
    return [m.group(2).split() for m in _BLOCK.finditer(text)]


def complete(report: dict[str, Any]) -> bool:
    """A report the docs may show: the whole suite ran and no test of a database failed.  The
    run's exit status is recorded, not required: a failure elsewhere (the check of these very
    tables, before they are written) says nothing about the versions."""
    failed = sum(int(run.get("failed", 0)) for run in report.get("versions", []))
    return bool(report.get("whole_suite")) and not failed


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    partial = "--partial" in args
    args = [arg for arg in args if arg != "--partial"]
    if len(args) < 2:
        print("usage: python -m splitmirror.testing.versions [--partial] REPORT DOC...", file=sys.stderr)
        return 2
    source = Path(args[0])
    try:
        report = json.loads(source.read_text())
    except (OSError, ValueError) as error:
        print(
            f"cannot read the versions report {source} ({error}); run `make test` first, which writes it",
            file=sys.stderr,
        )
        return 2
    if not partial and not complete(report):
        failed = sum(int(run.get("failed", 0)) for run in report.get("versions", []))
        print(
            f"{source} is not the report of a whole suite whose database tests passed (whole suite: "
            f"{bool(report.get('whole_suite'))}, {failed} failed); run `make test` to the end, or pass "
            "--partial to write it anyway",
            file=sys.stderr,
        )
        return 2
    for doc in map(Path, args[1:]):
        text = doc.read_text()
        if not families_in(text):
            print(f"{doc} has no '<!-- versions: FAMILY -->' block to rewrite", file=sys.stderr)
            return 2
        doc.write_text(rewrite(text, report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
