"""The tables of supported versions come from a test run (splitmirror.testing.versions), never
from a hand: the plugin notes each test's image choices and outcome, the renderer writes them
into the docs' blocks, and the docs' blocks list every version the images know."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitmirror.testing import images
from splitmirror.testing.versions import REPORT_VARIABLE, families_in, main, rewrite

ROOT = Path(__file__).resolve().parents[1]
BASE = "splitmirror-offline/debian:bookworm"
pytest_plugins = ["pytester"]

INNER = f"""
import pytest
from splitmirror.testing.images import Unavailable, image_for

def test_runs(monkeypatch):
    monkeypatch.setenv("SPLITMIRROR_IMAGE_DEBIAN_12", "{BASE}")
    assert image_for("debian", "12") == "{BASE}"

def test_fails(monkeypatch):
    monkeypatch.setenv("SPLITMIRROR_IMAGE_DEBIAN_12", "{BASE}")
    image_for("debian", "12")
    assert False, "the failure this test is about"

def test_unavailable():
    try:
        image_for("db2", "11")
    except Unavailable as reason:
        pytest.skip(str(reason))
"""


def test_a_run_reports_each_version_with_its_image_and_outcomes(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        present = images._present(BASE)
    except images.Unavailable as why:
        pytest.skip(str(why))
    if not present:
        pytest.skip(f"{BASE} is not built; run `make images`")
    report = tmp_path / "versions.json"
    monkeypatch.setenv(REPORT_VARIABLE, str(report))
    pytester.makepyfile(INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "splitmirror.testing.versions")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["db2 11: not run here (no image is known*", f"debian 12: {BASE} (*): 1 passed, 1 failed, 0 skipped"]
    )
    runs = {(r["database"], r["version"]): r for r in json.loads(report.read_text())["versions"]}
    assert runs[("debian", "12")]["image"] == BASE and runs[("debian", "12")]["failed"] == 1
    assert runs[("db2", "11")]["image"] is None and runs[("db2", "11")]["skipped"] == 1


REPORT = {
    "ran_at": "2026-12-06",
    "host": "Linux 6.1 (x86_64)",
    "versions": [
        {
            "database": "postgres",
            "version": "18",
            "image": "splitmirror-offline/postgres:18",
            "exact": "18.6-3",
            "unavailable": "",
            "passed": 40,
            "failed": 0,
            "skipped": 2,
        },
        {
            "database": "postgres",
            "version": "16",
            "image": None,
            "exact": "",
            "unavailable": "postgres:16 cannot be pulled | here",
            "passed": 0,
            "failed": 0,
            "skipped": 9,
        },
    ],
}


def test_the_renderer_writes_every_known_version_of_the_block_s_families() -> None:
    text = "intro\n<!-- versions: postgres -->\nold table\n<!-- /versions -->\nafter\n"
    written = rewrite(text, REPORT)
    assert written.startswith(
        "intro\n<!-- versions: postgres -->\nWritten by `make versions` from the test run of 2026-12-06"
    )
    assert written.endswith("<!-- /versions -->\nafter\n") and "old table" not in written
    image = "offline image `splitmirror-offline/postgres:18`"
    assert f"| postgres | 18 | {image} | 18.6-3 | 40 passed, 0 failed, 2 skipped |" in written
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
    "doc, families", [("postgresql.md", ["postgres"]), ("mysql.md", ["mariadb", "mysql"])]
)
def test_each_database_page_has_the_table_of_every_version_the_images_know(
    doc: str, families: list[str]
) -> None:
    text = (ROOT / "docs" / "databases" / doc).read_text()
    assert families_in(text) == [families], f"{doc} needs one '<!-- versions: {' '.join(families)} -->' block"
    block = text.split(f"<!-- versions: {' '.join(families)} -->")[1].split("<!-- /versions -->")[0]
    rows = {
        tuple(cell.strip() for cell in line.split("|")[1:3])
        for line in block.splitlines()
        if line.startswith("| ")
    }
    known = {(family, version) for family in families for version in images.versions(family)}
    assert known <= rows, f"run `make test` and `make versions`: {doc} lacks {sorted(known - rows)}"
