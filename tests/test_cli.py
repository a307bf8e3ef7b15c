"""The command line as a DBA uses it: real processes, real files, JSON and exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from splitmirror.catalog import SqliteCatalog, catalog_address
from splitmirror.phases import PHASE_ORDER


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitmirror", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def one_sentence(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stderr.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    return text


def test_backup_json_list_and_show(ledger: Path, write_config: Any, root: Path) -> None:
    catalog = str(root / "catalog.db")
    first = cli("backup", str(write_config(mode="freeze")), "--json")
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert {"id", "status", "mode", "window_ms", "phases", "files", "bytes", "archive"} <= set(data)
    assert data["status"] == "DONE" and data["mode"] == "freeze" and data["files"] == 2
    assert [p["name"] for p in data["phases"]] == [p.name for p in PHASE_ORDER]
    assert all(isinstance(p["duration_ms"], float) for p in data["phases"])
    archived = json.loads(cli("show", str(data["id"]), "--catalog", catalog, "--json").stdout)["members"]
    assert data["bytes"] == sum(m["size"] for m in archived if m["role"] != "manifest")
    second = json.loads(cli("backup", str(write_config(mode="hot-backup")), "--json").stdout)

    listed = json.loads(cli("list", "--catalog", catalog, "--json").stdout)
    assert [s["id"] for s in listed] == [data["id"], second["id"]]
    assert [s["mode"] for s in listed] == ["freeze", "hot-backup"]
    assert json.loads(cli("list", "--catalog", catalog, "--json", "--status", "failed").stdout) == []
    assert len(json.loads(cli("list", "--catalog", catalog, "--json", "--database", "sqlite").stdout)) == 2
    assert json.loads(cli("list", "--catalog", catalog, "--json", "--since", "2999-01-01").stdout) == []

    shown = json.loads(cli("show", str(second["id"]), "--catalog", catalog, "--json").stdout)
    assert [m["member"] for m in shown["members"]] == [
        "ledger.db",
        "ledger.db-wal",
        ".splitmirror-manifest.json",
    ]
    assert shown["redo_range"] == {"wal": "ledger.db-wal"}  # no size: the live WAL's would mislead
    with tarfile.open(shown["archive"]) as tar:
        offsets = {m.name: m.offset for m in tar.getmembers()}
    assert {m["member"]: m["offset"] for m in shown["members"]} == offsets

    human = cli("show", str(second["id"]), "--catalog", catalog)
    assert "archive members, in archive order" in human.stdout and "ledger.db-wal" in human.stdout
    assert "UNQUIESCE" in human.stdout
    table = cli("list", "--catalog", catalog)
    assert "hot-backup" in table.stdout and "DONE" in table.stdout


def test_unknown_session_id(root: Path) -> None:
    SqliteCatalog(root / "catalog.db").close()
    proc = cli("show", "42", "--catalog", str(root / "catalog.db"))
    assert proc.returncode == 5
    assert "there is no session 42 in the catalog" in one_sentence(proc)


@pytest.mark.parametrize("command", [["list"], ["show", "1"], ["verify", "1"], ["restore", "1", "--to", "r"]])
def test_reading_never_creates_a_catalog(command: list[str], root: Path) -> None:
    """A wrong path is said, not answered with a new, empty catalog (list used to print an
    empty table and leave a catalog behind)."""
    missing = root / "nowhere" / "catalog.db"
    proc = cli(*command, "--catalog", str(missing))
    assert proc.returncode == 5
    assert f"there is no catalog at {missing}" in one_sentence(proc)
    assert not missing.parent.exists()


def test_reading_commands_take_the_configuration(root: Path, make_config: Any, ledger: Path) -> None:
    """README's walkthrough: the catalog named in the config is the one list, show, verify and
    restore read with --config, and each says which it read."""
    config = make_config(mode="freeze")
    assert cli("backup", "--quiet", str(config.source)).returncode == 0
    catalog = catalog_address(config.session.catalog)
    for command in (["list"], ["show", "1"], ["verify", "1"], ["restore", "1", "--to", str(root / "r")]):
        proc = cli(*command, "--config", str(config.source))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"catalog {catalog}\n"), proc.stdout
    both = cli("list", "--config", str(config.source), "--catalog", str(catalog))
    assert both.returncode == 2 and "give --config or --catalog, not both" in one_sentence(both)


def test_bad_since_date(root: Path) -> None:
    proc = cli("list", "--since", "yesterday", "--catalog", str(root / "catalog.db"))
    assert proc.returncode == 2 and "is not a date" in proc.stderr


def test_check_changes_nothing_and_reports_ready(ledger: Path, write_config: Any, root: Path) -> None:
    before = ledger.read_bytes()
    proc = cli("check", str(write_config()), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["server"]["kind"] == "sqlite" and report["server"]["flavour"] == "wal"
    assert ledger.read_bytes() == before
    assert not (root / "catalog.db").exists(), "check writes no catalog"
    assert not list((root / "mirror").iterdir()), "check does not sync"


def test_check_hot_backup_on_rollback_journal_database(root: Path, write_config: Any) -> None:
    with closing(sqlite3.connect(root / "primary" / "ledger.db")) as db:
        db.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, writer, at, payload)")
        db.commit()
    proc = cli("check", str(write_config(mode="hot-backup")))
    assert proc.returncode == 3
    assert "journal_mode=delete, and HOT_BACKUP needs WAL" in proc.stdout
    backup = cli("backup", str(write_config(mode="hot-backup")))
    assert backup.returncode == 3 and "HOT_BACKUP needs WAL" in one_sentence(backup)
    assert not (root / "catalog.db").exists(), "a refused preflight leaves the catalog alone"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("database", "the SQLite database"),
        ("mirror-parent", "the mirror's parent"),
        ("archive-dir", "the archive directory"),
        ("outside", "outside the primary"),
    ],
)
def test_backup_refuses_bad_paths_before_quiescing(
    change: str, expected: str, ledger: Path, write_config: Any, root: Path
) -> None:
    path = write_config()
    text = path.read_text()
    if change == "database":
        text = text.replace("ledger.db", "missing.db")
    elif change == "mirror-parent":
        text = text.replace(f'mirror = "{root}/mirror"', f'mirror = "{root}/no/such/mirror"')
    elif change == "archive-dir":
        text = text.replace(f"{root}/archives/", f"{root}/no-archives/")
    else:
        other = root / "elsewhere"
        other.mkdir()
        text = text.replace(f'primary = "{root}/primary"', f'primary = "{other}"')
    path.write_text(text)
    before = ledger.read_bytes()
    proc = cli("backup", str(path))
    assert proc.returncode == 3, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ledger.read_bytes() == before
    assert not (root / "catalog.db").exists(), "refused before the session started"


def test_archive_to_stdout(ledger: Path, write_config: Any, tmp_path: Path) -> None:
    path = write_config()
    path.write_text(
        path.read_text().replace(f'path = "{tmp_path}/archives/ledger-{{session}}.tar"', 'path = "-"')
    )
    proc = subprocess.run(
        [sys.executable, "-m", "splitmirror", "backup", str(path), "--json"], capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.decode()[proc.stderr.decode().index("{") :])["archive"] == "<stdout>"
    listing = subprocess.run(["tar", "-tf", "-"], input=proc.stdout, capture_output=True, check=True)
    assert listing.stdout.decode().split() == ["ledger.db", "ledger.db-wal", ".splitmirror-manifest.json"]
    assert len(proc.stdout) % (256 * 1024) == 0


def test_plugins_lists_builtins_with_versions() -> None:
    from splitmirror import __version__

    proc = cli("plugins")
    assert proc.returncode == 0
    for name in ("sqlite", "directory", "targets"):
        assert name in proc.stdout
    assert __version__ in proc.stdout
    assert "engine:sqlite (freeze, hot-backup)" in proc.stdout, "each engine's modes are shown"
    listed = {p["name"]: p for p in json.loads(cli("plugins", "--json").stdout)}
    assert listed["sqlite"]["modes"] == {"sqlite": ["freeze", "hot-backup"]}


def test_help_documents_exit_codes() -> None:
    proc = cli("--help")
    assert "Exit codes:" in proc.stdout and "preflight check failed" in proc.stdout


def test_demo_runs_both_modes(tmp_path: Path) -> None:
    proc = cli("demo", "--dir", str(tmp_path / "demo"), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [s["session"]["mode"] for s in report["sessions"]] == ["freeze", "hot-backup"]
    for s in report["sessions"]:
        assert s["session"]["status"] == "DONE"
        assert s["restored_integrity"] == "ok"
        assert s["restored_rows"] >= 50_000 + s["writer_acks_before_session"]
    assert report["writer_commits"] > 0
    again = cli("demo", "--dir", str(tmp_path / "demo"), "--json")  # its own folder: cleared and reused
    assert again.returncode == 0, again.stderr


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("two years of work")
    proc = cli("demo", "--dir", str(mine))
    assert proc.returncode == 2
    assert "was not made by splitmirror demo" in one_sentence(proc)
    assert [p.name for p in mine.iterdir()] == ["chapter1.tex"]


def test_interrupt_before_a_session_exits_130() -> None:
    import click
    from click.testing import CliRunner

    from splitmirror.cli import handled
    from splitmirror.errors import SessionInterrupted

    @click.command()
    @handled
    def stalled() -> None:
        raise SessionInterrupted("SIGINT")

    result = CliRunner().invoke(stalled, [])
    assert result.exit_code == 130
    assert result.output.strip() == "error: interrupted by SIGINT"


def test_json_error_goes_beside_an_archive_on_stdout(root: Path, write_config: Any) -> None:
    path = write_config()
    path.write_text(
        path.read_text().replace(f'path = "{root}/archives/ledger-{{session}}.tar"', 'path = "-"')
    )
    proc = cli("backup", str(path), "--json")  # there is no database: preflight fails
    assert proc.returncode == 3
    assert proc.stdout == "", "standard output is the archive stream"
    assert "does not exist" in json.loads(proc.stderr)["error"]


def test_catalog_under_a_regular_file_is_one_sentence(ledger: Path, write_config: Any, root: Path) -> None:
    (root / "plain-file").write_text("")
    path = write_config()
    path.write_text(
        path.read_text().replace(f'catalog = "{root}/catalog.db"', f'catalog = "{root}/plain-file/c.db"')
    )
    proc = cli("backup", str(path))
    assert proc.returncode == 5
    assert "cannot create the session lock" in one_sentence(proc)


def test_an_archive_sent_to_standard_output_is_asked_for(root: Path, ledger: Path, write_config: Any) -> None:
    """The catalog records ``<stdout>``: verify and restore ask for the copy instead of
    looking for a file of that name."""
    config = write_config()
    text = config.read_text()
    config.write_text(text.replace(f'path = "{root}/archives/ledger-{{session}}.tar"', 'path = "-"'))
    assert 'path = "-"' in config.read_text()
    copy = root / "copy.tar"
    with open(copy, "wb") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "splitmirror", "backup", "--quiet", str(config)],
            stdout=stream,
            check=False,
        )
    assert done.returncode == 0
    catalog = str(root / "catalog.db")
    for command in (["verify", "1"], ["restore", "1", "--to", str(root / "r")]):
        proc = cli(*command, "--catalog", catalog)
        assert proc.returncode == 5
        assert "went to standard output" in one_sentence(proc) and "--archive PATH" in proc.stderr
    assert cli("verify", "1", "--archive", str(copy), "--catalog", catalog).returncode == 0


def test_the_summary_is_for_people() -> None:
    """Positions as words (no Python reprs, a WAL segment named once), no empty error column."""
    import io

    from rich.console import Console

    from splitmirror.catalog.base import PhaseRecord, SessionSummary
    from splitmirror.report import positions_text, print_summary

    assert positions_text({"exact": False, "wal_files": ["0000000100000002", "0000000100000002"]}) == (
        "exact no, wal files 0000000100000002"
    )
    assert positions_text({"wal_files": ["a", "b", "c"], "gtid": None}) == "wal files a to c (3), gtid -"
    summary = SessionSummary(
        id=7, name="orders-with-a-long-name", status="DONE", mode="freeze", database="sqlite",
        database_url="", config="", started_at="", phases=[PhaseRecord("INIT", "", 1.0)],
        redo_range={"exact": True},
    )  # fmt: skip
    for width in (40, 80):
        out = io.StringIO()
        print_summary(Console(file=out, width=width), summary)
        text = out.getvalue()
        assert text.startswith("session 7 (orders-with-a-long-name): DONE\n"), text  # one line
        assert "error" not in text and "positions exact yes" in text and "True" not in text
        header = next(line for line in text.splitlines() if "phase" in line)
        assert header.count("┃") == 3, f"two columns, no empty third: {header}"
    failed = dataclasses.replace(
        summary,
        status="FAILED",
        failed_phase="INIT",
        error="boom",
        phases=[PhaseRecord("INIT", "", 1.0, "boom")],
    )
    out = io.StringIO()
    print_summary(Console(file=out, width=80), failed)
    header = next(line for line in out.getvalue().splitlines() if "phase" in line)
    assert header.count("┃") == 4 and "error" in header, "the error column when a phase failed"


def test_the_docs_json_and_summary_line_are_what_the_tool_prints() -> None:
    """docs/cli.md's ``--json`` example names every key of a session, and its summary line is
    the line ``backup``/``show`` print for the example's values."""
    import io
    import re

    from rich.console import Console

    from splitmirror.catalog.base import PhaseRecord, SessionSummary
    from splitmirror.report import print_summary, summary_json
    from splitmirror.testing.docs import blocks, section

    doc = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    (example,) = blocks(section(doc, "## JSON"), "json")
    named = set(re.findall(r'"(\w+)":', example))
    summary = SessionSummary(
        id=7, name="orders", status="DONE", mode="hot-backup", database="sqlite", database_url="",
        config="", started_at="", phases=[PhaseRecord("BACKUP", "", 134.014)],
    )  # fmt: skip
    assert set(summary_json(summary)) - named == set(), "keys the example in docs/cli.md lacks"

    def value(key: str) -> str:
        found = re.search(rf'"{key}": ([^,]+),', example)
        assert found, f"the example has no {key}"
        return found.group(1).strip('"')

    for key in ("window_ms", "blocked_ms"):
        setattr(summary, key, float(value(key)))
    summary.mode, summary.files, summary.bytes = value("mode"), int(value("files")), int(value("bytes"))
    (line,) = blocks(section(doc, "## The summary"), "")
    out = io.StringIO()
    print_summary(Console(file=out, width=200), summary)
    printed = next(text for text in out.getvalue().splitlines() if text.startswith("mode "))
    assert printed == line.strip()
