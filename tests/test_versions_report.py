"""The tables of supported versions come from a test run (splitmirror.testing.versions), never
from a hand: the plugin notes each test's image choices and outcome, the renderer writes them
into the docs' blocks, and the docs' blocks list every version the images know."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitmirror.testing import images
from splitmirror.testing.versions import REPORT_VARIABLE, complete, families_in, main, rewrite

ROOT = Path(__file__).resolve().parents[1]
BASE = "splitmirror-offline/debian:bookworm"
pytest_plugins = ["pytester"]

#: An image with the version label compose/build-images puts on (make images builds it first).
LABELLED = "splitmirror-offline/postgres:15"

INNER = f"""
import pytest
from splitmirror.testing.images import Unavailable, image_for

@pytest.fixture
def debian(monkeypatch):
    monkeypatch.setenv("SPLITMIRROR_IMAGE_DEBIAN_12", "{LABELLED}")
    return image_for("debian", "12")

@pytest.fixture
def fails_in_teardown(debian):
    yield
    raise RuntimeError("teardown")

@pytest.fixture
def skips_in_teardown(debian):
    yield
    pytest.skip("late")

def test_runs(debian):
    assert debian == "{LABELLED}"

def test_fails(debian):
    assert False, "the failure this test is about"

def test_passes_but_its_teardown_fails(fails_in_teardown):
    pass

def test_fails_then_its_teardown_skips(skips_in_teardown):
    assert False

def test_unavailable():
    try:
        image_for("db2", "11")
    except Unavailable as reason:
        pytest.skip(str(reason))
"""


def test_a_run_reports_each_version_with_its_image_and_outcomes(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images.require(LABELLED)
    exact = images._exact_version(LABELLED)
    assert exact, f"{LABELLED} has no version label; rebuild it with `make images`"
    pytester.makepyfile(INNER)
    pytester.makeini("[pytest]\ntestpaths = .\n")  # as this repository's: a bare run is the whole suite
    monkeypatch.delenv(REPORT_VARIABLE, raising=False)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "splitmirror.testing.versions")
    assert not list(pytester.path.rglob("*.json")), "no report is written unless asked for"
    report = tmp_path / "versions.json"
    monkeypatch.setenv(REPORT_VARIABLE, str(report))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "splitmirror.testing.versions")
    result.stdout.fnmatch_lines(
        [
            "db2 11: not run here (no image is known*",
            f"debian 12: {LABELLED} ({exact}): 1 passed, 3 failed, 0 skipped",
        ]
    )
    written = json.loads(report.read_text())
    runs = {(r["database"], r["version"]): r for r in written["versions"]}
    assert runs[("debian", "12")]["image"] == LABELLED and runs[("debian", "12")]["exact"] == exact
    assert runs[("db2", "11")]["image"] is None and runs[("db2", "11")]["skipped"] == 1
    assert written["whole_suite"] is True and written["exit_status"] == 1
    partial = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "splitmirror.testing.versions", "-k", "runs"
    )
    partial.assert_outcomes(passed=1, deselected=4)
    assert json.loads(report.read_text())["whole_suite"] is False


REPORT = {
    "ran_at": "2026-12-06",
    "host": "Linux 6.1 (x86_64)",
    "whole_suite": True,
    "exit_status": 0,
    "versions": [
        {"database": "postgres", "version": "17", "image": "postgres:17", "exact": "17.7-1.pgdg13+1",
         "unavailable": "", "passed": 30, "failed": 0, "skipped": 1},
        {"database": "postgres", "version": "18", "image": "splitmirror-offline/postgres:18",
         "exact": "18.6-3", "unavailable": "", "passed": 40, "failed": 0, "skipped": 2},
        {"database": "postgres", "version": "16", "image": None, "exact": "",
         "unavailable": "postgres:16 cannot be pulled | here", "passed": 0, "failed": 0, "skipped": 9},
    ],
}  # fmt: skip


def test_the_renderer_writes_every_known_version_of_the_block_s_families() -> None:
    text = "intro\n<!-- versions: postgres -->\nold table\n<!-- /versions -->\nafter\n"
    written = rewrite(text, REPORT)
    assert written.startswith(
        "intro\n<!-- versions: postgres -->\nWritten by `make versions` from the test run of 2026-12-06"
    )
    assert written.endswith("<!-- /versions -->\nafter\n") and "old table" not in written
    image = "offline image `splitmirror-offline/postgres:18`"
    assert f"| postgres | 18 | {image} | 18.6-3 | 40 passed, 0 failed, 2 skipped |" in written
    upstream = "upstream image `postgres:17`"
    assert f"| postgres | 17 | {upstream} | 17.7-1.pgdg13+1 | 30 passed, 0 failed, 1 skipped |" in written
    assert "| postgres | 16 | not run here: postgres:16 cannot be pulled \\| here | | 9 skipped |" in written
    assert "| postgres | 15 | not in this run | | |" in written
    assert rewrite(written, REPORT) == written


def test_the_renderer_refuses_a_missing_report_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- versions: postgres -->\n<!-- /versions -->\n")
    assert main([str(tmp_path / "none.json"), str(doc)]) == 2
    assert "run `make test` first" in capsys.readouterr().err
    report = tmp_path / "r.json"
    report.write_text(json.dumps(REPORT))
    plain = tmp_path / "plain.md"
    plain.write_text("no block\n")
    assert main([str(report), str(plain)]) == 2
    assert main([str(report), str(doc)]) == 0 and "18.6-3" in doc.read_text()


@pytest.mark.parametrize(
    "change",
    [{"whole_suite": False}, {"versions": [{**REPORT["versions"][0], "failed": 1}]}],
)
def test_the_renderer_refuses_a_partial_or_failed_run_unless_told(
    change: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- versions: postgres -->\n<!-- /versions -->\n")
    report = tmp_path / "r.json"
    report.write_text(json.dumps({**REPORT, **change}))
    assert main([str(report), str(doc)]) == 2
    assert "is not the report of a whole suite whose database tests passed" in capsys.readouterr().err
    assert "Written by" not in doc.read_text()
    assert main(["--partial", str(report), str(doc)]) == 0 and "Written by" in doc.read_text()


#: The report the docs' tables were written from (``make versions`` copies it here).
COMMITTED = ROOT / "docs" / "databases" / "tested-versions.json"


@pytest.mark.parametrize(
    "doc, families",
    [("postgresql.md", ["postgres"]), ("mysql.md", ["mariadb", "mysql"]), ("oracle.md", ["oracle"])],
)
def test_each_database_page_has_the_table_of_every_version_from_the_committed_report(
    doc: str, families: list[str]
) -> None:
    """The table is exactly what the committed report renders to (no hand edits), the report is
    a whole suite that passed, and it covers every version the images know."""
    text = (ROOT / "docs" / "databases" / doc).read_text()
    assert families_in(text) == [families], f"{doc} needs one '<!-- versions: {' '.join(families)} -->' block"
    report = json.loads(COMMITTED.read_text())
    assert complete(report), f"{COMMITTED.name} is not a whole suite whose database tests passed"
    assert rewrite(text, report) == text, (
        f"{doc}'s table is not what `make versions` writes from {COMMITTED.name}"
    )
    ran = {(run["database"], run["version"]) for run in report["versions"]}
    known = {(family, version) for family in families for version in images.versions(family)}
    assert known <= ran, f"run `make test` and `make versions`: the report lacks {sorted(known - ran)}"
