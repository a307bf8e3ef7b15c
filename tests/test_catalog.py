"""The catalog: schema migrations, refusal of what it cannot read, privacy of its files."""

from __future__ import annotations

import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from splitmirror.catalog import FileRecord, PhaseRecord, SqliteCatalog
from splitmirror.catalog.sqlite import MIGRATIONS
from splitmirror.cli import main
from splitmirror.errors import CatalogError


def test_new_catalog_is_migrated_private_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "state" / "catalog.db"
    catalog = SqliteCatalog(path)
    sid = catalog.start_session(
        name="n", mode="freeze", database="sqlite", database_url="sqlite:///x", config="/c", started_at="t"
    )
    catalog.record_phase(sid, PhaseRecord("INIT", "t", 1.5))
    catalog.record_phase(sid, PhaseRecord("MAP", "t", 0.5, "boom"))
    catalog.add_files(sid, [FileRecord(1, "a", "/p/a", (0, "x"), "data", 3, "ab", 0, "file")])
    catalog.update_session(sid, window_ms=12.5, stats={"check": {"new": 1}})
    catalog.finish_session(sid, status="FAILED", finished_at="t2", failed_phase="MAP", error="boom")
    catalog.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = SqliteCatalog(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    row = again.get(sid)
    assert [(p.name, p.error) for p in row.phases] == [("INIT", None), ("MAP", "boom")]
    assert row.stats == {"check": {"new": 1}} and row.window_ms == 12.5
    assert again.files(sid)[0].logical_key == (0, "x")
    assert [s.id for s in again.sessions(status="FAILED")] == [sid]


def test_catalog_from_a_newer_splitmirror_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    SqliteCatalog(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(CatalogError, match="schema version 99, newer than this splitmirror"):
        SqliteCatalog(path)


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b""])
def test_garbage_catalog_is_one_sentence_exit_5(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "catalog.db"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["list", "--catalog", str(path)])
    if not content:  # an empty file is a fresh catalog, not an error
        assert result.exit_code == 0
        return
    assert result.exit_code == 5
    assert "cannot be opened" in result.output and "Traceback" not in result.output
    assert path.read_bytes() == content, "a catalog we cannot read is left as it was"


def test_uncreatable_catalog_location(tmp_path: Path) -> None:
    """A session creates its catalog: where it cannot, one sentence (reading commands never
    create one, test_cli.py)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CatalogError, match="cannot be created"):
        SqliteCatalog(blocker / "catalog.db")


def test_environment_variable_chooses_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env-catalog.db"
    monkeypatch.setenv("SPLITMIRROR_CATALOG", str(path))
    missing = CliRunner().invoke(main, ["list"])
    assert missing.exit_code == 5 and f"there is no catalog at {path}" in missing.output
    assert not path.exists(), "reading never creates a catalog"
    SqliteCatalog(path).close()
    listed = CliRunner().invoke(main, ["list"])
    assert listed.exit_code == 0 and listed.output.startswith(f"catalog {path}\n"), listed.output


def test_many_processes_creating_one_catalog_at_once(tmp_path: Path) -> None:
    """Two sessions of different configurations may create a shared catalog at the same moment;
    every one of them must open it (the migration runs once, under the write lock)."""
    import subprocess
    import sys
    import time

    path = tmp_path / "shared" / "catalog.db"
    start = time.time() + 1.0
    script = (
        "import sys, time; from pathlib import Path; from splitmirror.catalog import SqliteCatalog\n"
        "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
        "SqliteCatalog(Path(sys.argv[1])).sessions()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(start)], stderr=subprocess.PIPE, text=True
        )
        for _ in range(24)
    ]
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [e for e in errors if e][:1]


def test_a_catalog_from_before_blocked_ms_opens_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    """A catalog written before ``blocked_ms`` existed (built here with the migrations it had):
    it opens, is upgraded in place, its rows read ``blocked_ms`` None, and new rows record it."""
    path = tmp_path / "catalog.db"
    previous = MIGRATIONS[:1]  # schema 1; blocked_ms came with schema 2
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for script in previous:
            db.executescript(script)
        db.execute(f"PRAGMA user_version = {len(previous)}")
        db.execute(
            "INSERT INTO sessions (name, status, mode, database, database_url, config, started_at,"
            " finished_at, window_ms) VALUES ('old', 'DONE', 'freeze', 'sqlite', 'sqlite:///x', '/c',"
            " 't', 't2', 12.5)"
        )
        (old,) = db.execute("SELECT id FROM sessions").fetchone()
    catalog = SqliteCatalog(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) > len(previous)
    row = catalog.get(old)
    assert (row.name, row.window_ms, row.blocked_ms) == ("old", 12.5, None)
    new = catalog.start_session(
        name="new",
        mode="hot-backup",
        database="sqlite",
        database_url="sqlite:///x",
        config="/c",
        started_at="t",
    )
    catalog.update_session(new, window_ms=20.0, blocked_ms=3.5)
    assert [(s.name, s.blocked_ms) for s in catalog.sessions()] == [("old", None), ("new", 3.5)]
    catalog.close()
    listed = CliRunner().invoke(main, ["list", "--catalog", str(path), "--json"])
    assert listed.exit_code == 0, listed.output
    assert '"blocked_ms": null' in listed.output and '"blocked_ms": 3.5' in listed.output
