"""``splitmirror catalog copy``: a catalog into another, ids kept, as a DBA runs it before
pointing the configurations at a fleet's catalog (docs/fleet.md; the copy into PostgreSQL is
proven in plugins/postgresql/tests/test_catalog_postgres.py)."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from splitmirror.catalog import DrillRecord, SessionSummary, SqliteCatalog
from test_cli import cli, one_sentence


@pytest.fixture
def backed_up(ledger: Path, write_config: Any, root: Path) -> Path:
    """A catalog with three DONE sessions of two configurations."""
    for config in (write_config(mode="freeze"), write_config(mode="hot-backup"), write_config(name="other")):
        assert cli("backup", "--quiet", str(config)).returncode == 0
    return root / "catalog.db"


def test_a_copy_keeps_every_session_under_its_id_and_reads_back(backed_up: Path, root: Path) -> None:
    copy = root / "fleet" / "catalog.db"
    done = cli("catalog", "copy", str(backed_up), str(copy))
    assert done.returncode == 0, done.stderr
    assert "copied 3 session(s)" in done.stdout and str(copy) in done.stdout
    before = json.loads(cli("list", "--catalog", str(backed_up), "--json").stdout)
    after = json.loads(cli("list", "--catalog", str(copy), "--json").stdout)
    assert after == before
    for sid in (1, 2):
        shown = [
            json.loads(cli("show", str(sid), "--catalog", str(c), "--json").stdout) for c in (backed_up, copy)
        ]
        assert shown[0] == shown[1]
        assert cli("verify", str(sid), "--catalog", str(copy)).returncode == 0
    with closing(SqliteCatalog(copy)) as catalog:
        assert (
            catalog.start_session(
                name="n", mode="freeze", database="sqlite", database_url="u", config="c", started_at="t"
            )
            == 4
        ), "the next session follows the copied ids"


def test_a_second_copy_skips_what_is_there(backed_up: Path, root: Path) -> None:
    copy = root / "fleet.db"
    assert cli("catalog", "copy", str(backed_up), str(copy)).returncode == 0
    again = cli("catalog", "copy", str(backed_up), str(copy), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"copied": [], "skipped": [1, 2, 3], "files": 0, "drills": 0}


def test_an_id_taken_by_another_session_stops_the_copy_before_it_writes(backed_up: Path, root: Path) -> None:
    copy = root / "other.db"
    with closing(SqliteCatalog(copy)) as other:
        other.start_session(name="billing", mode="freeze", database="sqlite", database_url="u", config="c",
                            started_at="2020-01-01T00:00:00.000+00:00")  # fmt: skip
    refused = cli("catalog", "copy", str(backed_up), str(copy))
    assert refused.returncode == 5
    assert "session 1 of" in one_sentence(refused) and "copy into a new, empty catalog" in refused.stderr
    with closing(SqliteCatalog(copy)) as other:
        assert [s.name for s in other.sessions()] == ["billing"], "nothing was copied"


def test_copy_bad_input_is_one_sentence(backed_up: Path, root: Path) -> None:
    missing = cli("catalog", "copy", str(root / "nothere.db"), str(root / "new.db"))
    assert missing.returncode == 5 and "there is no catalog at" in one_sentence(missing)
    assert not (root / "new.db").exists(), "no source: nothing is created"
    secret = cli("catalog", "copy", str(backed_up), "postgresql://backup:hunter2@db/splitmirror")
    assert secret.returncode == 5 and "carries a password" in one_sentence(secret)
    assert "hunter2" not in secret.stderr
    unknown = cli("catalog", "copy", str(backed_up), "mongodb://db/splitmirror")
    assert unknown.returncode == 5 and "no installed catalog opens mongodb:// URLs" in one_sentence(unknown)


def test_a_drill_id_taken_by_another_drill_stops_the_copy_before_it_writes(
    backed_up: Path, root: Path
) -> None:
    with closing(SqliteCatalog(backed_up)) as source:
        source.start_drill(1, name="ledger", started_at="2026-12-07T02:00:00.000+00:00")
    copy = root / "other.db"
    with closing(SqliteCatalog(copy)) as other:
        billing = SessionSummary(
            99, "billing", "DONE", "freeze", "sqlite", "u", "c", "2020-01-01T00:00:00.000+00:00"
        )
        drill = DrillRecord(1, 99, "billing", "PASSED", "2020-01-01T01:00:00.000+00:00")
        other.copy_in(billing, [], [drill])
    refused = cli("catalog", "copy", str(backed_up), str(copy))
    assert refused.returncode == 5
    assert "drill 1 of" in one_sentence(refused) and "drills keep their ids too" in refused.stderr
    with closing(SqliteCatalog(copy)) as other:
        assert [s.id for s in other.sessions()] == [99], "nothing was copied"
