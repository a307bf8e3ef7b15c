"""``splitmirror drill`` on the embedded engine: a user's archive restored, opened, checked."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from splitmirror.catalog import SqliteCatalog
from test_cli import cli, one_sentence


def drill_config(write_config: Any, root: Path, **keys: object) -> Path:
    (root / "scratch").mkdir(exist_ok=True)
    lines = [f'scratch = "{root}/scratch"'] + [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return write_config(extra="\n[drill]\n" + "\n".join(lines) + "\n")


def backup(config: Path) -> dict[str, Any]:
    proc = cli("backup", str(config), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def drills(root: Path) -> list[Any]:
    catalog = SqliteCatalog(root / "catalog.db")
    try:
        return catalog.drills()
    finally:
        catalog.close()


def test_a_drill_restores_opens_checks_records_and_cleans_up(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = drill_config(write_config, root, query="SELECT count(*) FROM ledger")
    session = backup(config)
    proc = cli("drill", str(session["id"]), "--catalog", str(root / "catalog.db"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "✓ PRAGMA integrity_check: ok (ledger.db)" in proc.stdout
    assert "✓ query: 1 row, the first: 2000 (ledger.db)" in proc.stdout
    assert f"drill 1 of session {session['id']}: PASSED" in proc.stdout
    [record] = drills(root)
    assert (record.session_id, record.status, record.route, record.name) == (
        session["id"],
        "PASSED",
        "",
        "ledger",
    )
    assert record.checks == [
        "PRAGMA integrity_check: ok (ledger.db)",
        "query: 1 row, the first: 2000 (ledger.db)",
    ]
    assert list((root / "scratch").iterdir()) == []  # the restored copy is gone

    listed = cli("list", "--catalog", str(root / "catalog.db"))
    assert f"last drill of ledger: session {session['id']} PASSED" in listed.stdout
    shown = json.loads(
        cli("show", str(session["id"]), "--catalog", str(root / "catalog.db"), "--json").stdout
    )
    assert [d["status"] for d in shown["drills"]] == ["PASSED"]


def test_drill_by_configuration_takes_its_newest_archive_and_keep_leaves_it(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = drill_config(write_config, root)
    backup(config)
    newest = backup(config)
    proc = cli("drill", "--config", str(config), "--keep", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["session_id"] == newest["id"] and result["status"] == "PASSED" and result["kept"]
    kept = Path(result["directory"])
    assert kept.parent == root / "scratch" and (kept / "restore" / "ledger.db").is_file()


def test_a_copy_that_fails_its_integrity_check_fails_the_drill(write_config: Any, root: Path) -> None:
    """A database corrupt on the primary is archived faithfully (its checksums match), so only
    opening the copy finds it: the point of a drill."""
    db = root / "primary" / "ledger.db"
    with sqlite3.connect(db) as made:
        made.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        made.execute("CREATE INDEX tv ON t (v)")
        made.executemany("INSERT INTO t (v) VALUES (?)", [(f"value-{i:06d}",) for i in range(5000)])
        root_page = made.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tv'").fetchone()[0]
        page_size = made.execute("PRAGMA page_size").fetchone()[0]
    made.close()
    with db.open("r+b") as raw:  # a torn index page, as a bad disk leaves one
        raw.seek(root_page * page_size - 40)
        raw.write(b"zzzz")
    config = drill_config(write_config, root)
    session = backup(config)
    proc = cli("drill", str(session["id"]), "--catalog", str(root / "catalog.db"))
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout and "PRAGMA integrity_check on ledger.db says:" in proc.stdout
    [record] = drills(root)
    assert record.status == "FAILED" and "missing from index tv" in (record.error or "")
    assert list((root / "scratch").iterdir()) == []


def test_a_damaged_archive_fails_the_drill_at_the_restore(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = drill_config(write_config, root)
    session = backup(config)
    archive = Path(session["archive"])
    data = bytearray(archive.read_bytes())
    data[4096] ^= 0xFF  # inside ledger.db's data
    archive.write_bytes(bytes(data))
    proc = cli("drill", str(session["id"]), "--catalog", str(root / "catalog.db"), "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["status"] == "FAILED" and "checksum" in result["error"]


def test_a_failing_query_fails_the_drill(ledger: Path, write_config: Any, root: Path) -> None:
    config = drill_config(write_config, root, query="SELECT count(*) FROM no_such_table")
    session = backup(config)
    proc = cli("drill", str(session["id"]), "--catalog", str(root / "catalog.db"))
    assert proc.returncode == 1
    assert "no such table: no_such_table" in proc.stdout


def test_every_nth_backup_drills_its_own_archive(ledger: Path, write_config: Any, root: Path) -> None:
    config = drill_config(write_config, root, every=2)
    backup(config)
    assert drills(root) == []
    second = cli("backup", str(config), "-q")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "drilling session 2" in second.stdout
    assert [(d.session_id, d.status) for d in drills(root)] == [(2, "PASSED")]


def test_a_drill_is_in_the_metrics(ledger: Path, write_config: Any, root: Path) -> None:
    config = drill_config(write_config, root)
    config.write_text(config.read_text() + f'\n[metrics]\ntextfile = "{root}/splitmirror.prom"\n')
    session = backup(config)
    assert cli("drill", str(session["id"]), "--catalog", str(root / "catalog.db")).returncode == 0
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families((root / "splitmirror.prom").read_text())
        for s in family.samples
    }
    assert samples["splitmirror_last_drill_success"] == 1
    assert samples["splitmirror_last_drill_session_id"] == session["id"]


def test_drill_bad_input_is_one_sentence(ledger: Path, write_config: Any, root: Path) -> None:
    catalog = str(root / "catalog.db")
    config = drill_config(write_config, root)
    session = backup(config)
    unknown = cli("drill", "99", "--catalog", catalog)
    assert unknown.returncode == 5 and "there is no session 99" in one_sentence(unknown)
    bare = cli("drill", "--catalog", catalog)
    assert bare.returncode == 2 and "give a session ID, or --config CONFIG" in one_sentence(bare)
    inside = write_config(extra=f'\n[drill]\nscratch = "{root}/primary"\n')
    refused = cli("drill", str(session["id"]), "--config", str(inside))
    assert refused.returncode == 2 and "[drill] scratch" in one_sentence(refused)
    with_image = write_config(extra=f'\n[drill]\nscratch = "{root}/scratch"\nimage = "sqlite:latest"\n')
    no_container = cli("drill", str(session["id"]), "--config", str(with_image))
    assert (
        no_container.returncode == 1
        and "sqlite copies are opened in place, not started: remove image" in no_container.stdout
    )
    assert [d.status for d in drills(root)] == ["FAILED"]  # bad input is not a drill; a failed one is


def test_backup_json_with_a_drill_and_a_prune_is_one_object(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = drill_config(write_config, root, every=1)
    config.write_text(config.read_text() + "\n[retention]\nkeep_last = 1\n")
    backup(config)
    proc = cli("backup", str(config), "--json", "--prune", "-q")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # one document: json.loads refuses anything after it
    assert data["status"] == "DONE"
    assert data["drill"]["status"] == "PASSED" and data["drill"]["session_id"] == data["id"]
    assert [o["result"] for o in data["prune"]] == ["kept", "deleted"]


def test_a_query_past_the_timeout_fails_the_drill(ledger: Path, write_config: Any, root: Path) -> None:
    config = drill_config(write_config, root, query=ENDLESS, timeout="2s")
    session = backup(config)
    proc = cli("drill", str(session["id"]), "--catalog", str(root / "catalog.db"))
    assert proc.returncode == 1
    assert "[drill] query failed on ledger.db: it did not finish within [drill] timeout" in proc.stdout


#: A query that never ends on its own: the drill is in its check when a signal comes.
ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


def drilling(write_config: Any, root: Path) -> tuple[subprocess.Popen[str], list[str], Path]:
    """A drill of a fresh archive running :data:`ENDLESS` in a child process, once it is in its
    query; the command line, and the configuration."""
    config = drill_config(write_config, root, query=ENDLESS, timeout="1h")
    session = backup(config)
    argv = ["drill", str(session["id"]), "--catalog", str(root / "catalog.db")]
    drill = subprocess.Popen([sys.executable, "-m", "splitmirror", *argv], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not drills(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # into the query
    return drill, argv, config


def test_a_terminated_drill_is_recorded_and_leaves_nothing(
    ledger: Path, write_config: Any, root: Path
) -> None:
    drill, _, _ = drilling(write_config, root)
    drill.send_signal(signal.SIGTERM)
    out, _ = drill.communicate(timeout=60)
    assert drill.returncode == 1
    assert "FAILED" in out and "interrupted by SIGTERM" in out
    [record] = drills(root)
    assert record.status == "FAILED" and record.error == "interrupted by SIGTERM"
    assert list((root / "scratch").iterdir()) == []


def test_backup_prune_keeps_everything_when_the_drill_fails(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = drill_config(write_config, root, every=2, query="SELECT * FROM no_such_table")
    config.write_text(config.read_text() + "\n[retention]\nkeep_last = 1\n")
    first = backup(config)
    proc = cli("backup", str(config), "--prune", "-q")
    assert proc.returncode == 1
    assert "prune skipped: session 2's drill failed" in proc.stdout
    assert Path(first["archive"]).exists()


def test_backup_with_drills_refuses_a_scratch_it_cannot_use_before_the_session(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = write_config(extra=f'\n[drill]\nevery = 1\nscratch = "{root}/no-such-directory"\n')
    proc = cli("backup", str(config))
    assert proc.returncode == 2 and "[drill] scratch" in one_sentence(proc)
    assert not (root / "catalog.db").exists() or drills(root) == []


def test_a_drill_killed_outright_is_closed_failed_by_the_next(
    ledger: Path, write_config: Any, root: Path
) -> None:
    killed, argv, config = drilling(write_config, root)
    killed.kill()  # SIGKILL: nothing of its own cleanup runs
    killed.communicate()
    assert [d.status for d in drills(root)] == ["RUNNING"]
    config.write_text(config.read_text().replace(f"query = {json.dumps(ENDLESS)}\n", ""))
    assert cli(*argv).returncode == 0
    first, second = drills(root)
    assert first.status == "FAILED" and "its process ended without recording an outcome" in (
        first.error or ""
    )
    assert second.status == "PASSED"
    assert list((root / "scratch").iterdir()) == []  # what the killed drill left is gone too


def test_a_step_whose_program_is_missing_says_how_to_get_it(tmp_path: Path) -> None:
    from splitmirror.drill import _run_steps, _started
    from splitmirror.drillcopy import DrillCopy, DrillFailed
    from splitmirror.engine import NoOptions
    from splitmirror.restore_steps import RestoreStep

    copy = DrillCopy(
        directory=tmp_path, manifest={}, route="host", host="127.0.0.1", port=1, url="x://",
        options=NoOptions(), query=None, deadline=time.monotonic() + 60, path="/nonexistent",
    )  # fmt: skip

    def said(step: RestoreStep) -> str:
        with pytest.raises(DrillFailed) as failed:
            _run_steps([step], {"PATH": "/usr/bin:/bin"}, copy)
        return str(failed.value)

    class Server:  # what _started asks of an engine
        name, drill_port = "tiny", 1234

        @staticmethod
        def drill_environment(port: int, scratch: Path) -> dict[str, str]:
            return {}

    start = [RestoreStep.start("splitmirror-no-such-server", "--datadir", tmp_path)]
    refused = pytest.raises(DrillFailed, match="needs splitmirror-no-such-server, which is not on PATH")
    with refused, _started(Server, start, copy, tmp_path, "", "test-1"):  # type: ignore[arg-type]
        pass
    missing = said(RestoreStep.run("splitmirror-no-such-server", "start"))
    assert "needs splitmirror-no-such-server, which is not on PATH" in missing
    assert "[drill] binaries" in missing and "[drill] image" in missing
    failing = said(RestoreStep.run("sh", "-c", "echo no space left >&2; exit 3"))
    assert failing == "the restore step `sh -c 'echo no space left >&2; exit 3'` exited 3: no space left"


def test_a_scratch_it_cannot_write_fails_the_drill_in_one_sentence(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = drill_config(write_config, root)
    session = backup(config)
    if subprocess.run(["chattr", "+i", str(root / "scratch")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a filesystem with the immutable flag")
    try:
        proc = cli("drill", str(session["id"]), "--catalog", str(root / "catalog.db"))
    finally:
        subprocess.run(["chattr", "-i", str(root / "scratch")], check=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"cannot make a directory in [drill] scratch {root}/scratch" in proc.stdout
    assert [d.status for d in drills(root)] == ["FAILED"]
    assert not list((root / "locks").glob("*.drill-*.lock"))  # let go of, whatever happened
