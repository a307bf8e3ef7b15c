"""The test harness itself, against a real server: if these fail, the contract suite's verdicts
about the engine mean nothing (a writer that acknowledges uncommitted rows, a restored copy that
never started, a server left running)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from splitmirror.restore import RestoreResult
from splitmirror.testing import Workspace
from splitmirror.workload import acknowledged
from splitmirror_postgresql import ledger
from splitmirror_postgresql.engine import PostgresEngine
from splitmirror_postgresql.testing import (
    HostPostgres,
    PostgresLedgerDatabase,
    amcheck,
    restored,
    unavailable,
)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for a reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def postmaster_pid(datadir: Path) -> int:
    return int((datadir / "postmaster.pid").read_text().splitlines()[0])


def wait_for_acks(proc: subprocess.Popen[bytes], acks: Path, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while len(acknowledged(acks)) < at_least:
        assert proc.poll() is None, f"the writer exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"fewer than {at_least} acknowledgements in 30 s"
        time.sleep(0.02)


def run_writer(database: PostgresLedgerDatabase, writer: int, acks: Path, at_least: int) -> None:
    proc = subprocess.Popen(database.writer_command(writer, acks))
    try:
        wait_for_acks(proc, acks, at_least)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def stopped_copy(server: HostPostgres, destination: Path) -> Path:
    """Stop ``server`` and copy its data directory as root restores it: files owned by root."""
    server.stop()
    assert server.datadir is not None
    subprocess.run(["cp", "-a", str(server.datadir), str(destination)], check=True)
    subprocess.run(["chown", "-R", "root:root", str(destination)], check=True)
    return destination


def test_ledger_writer_commits_and_acks(
    splitmirror_database: PostgresLedgerDatabase, splitmirror_workspace: Workspace
) -> None:
    splitmirror_database.create_ledger()
    splitmirror_database.create_ledger()  # idempotent: every contract test calls it
    acks = splitmirror_workspace.root / "acks-3.txt"
    run_writer(splitmirror_database, 3, acks, 20)
    first = acknowledged(acks)
    assert first == list(range(1, len(first) + 1))
    rows = ledger.ledger_rows(splitmirror_database.url)
    assert set(first) <= rows[3], "an acknowledged row is not committed"
    assert max(rows[3]) <= len(first) + 1  # at most the one commit whose ack was cut off
    # A second run continues from the writer's highest committed seq.
    run_writer(splitmirror_database, 3, acks, len(first) + 5)
    assert acknowledged(acks)[len(first)] == max(rows[3]) + 1
    assert set(acknowledged(acks)) <= ledger.ledger_rows(splitmirror_database.url)[3]


def test_accepts_writes_on_a_live_server_and_not_on_a_stopped_one(
    splitmirror_database: PostgresLedgerDatabase, host_postgres: HostPostgres
) -> None:
    splitmirror_database.create_ledger()
    assert splitmirror_database.accepts_writes()
    assert ledger.ledger_rows(splitmirror_database.url) == {}, "the probe must leave the ledger unchanged"
    host_postgres.stop()
    started = time.monotonic()
    assert not splitmirror_database.accepts_writes()
    assert time.monotonic() - started < 5


def test_files_in_use_is_the_data_directory_without_wal_and_runtime_files(
    splitmirror_database: PostgresLedgerDatabase,
) -> None:
    splitmirror_database.create_ledger()
    datadir = splitmirror_database.primary
    names = {str(p.relative_to(datadir)) for p in splitmirror_database.files_in_use()}
    assert {"PG_VERSION", "global/pg_control", "postgresql.conf", "pg_hba.conf"} <= names
    assert any(n.startswith("base/") for n in names)
    assert not any(n.startswith(("pg_wal/", "pg_stat_tmp/")) for n in names)
    assert not names & {"postmaster.pid", "postmaster.opts"}
    assert (datadir / "postmaster.pid").exists()  # the server runs: the exclusion is real


def test_a_copy_of_a_stopped_cluster_starts_restored_and_passes_amcheck(
    splitmirror_database: PostgresLedgerDatabase,
    host_postgres: HostPostgres,
    splitmirror_workspace: Workspace,
) -> None:
    splitmirror_database.create_ledger()
    run_writer(splitmirror_database, 1, splitmirror_workspace.root / "acks-1.txt", 50)
    expected = ledger.ledger_rows(splitmirror_database.url)
    copy = stopped_copy(host_postgres, splitmirror_workspace.root / "restored")
    with restored(copy) as conninfo:
        assert conninfo != host_postgres.conninfo
        pid = postmaster_pid(copy)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            conn.execute("INSERT INTO ledger (writer, seq) VALUES (9, 1)")  # read-write
        assert amcheck(conninfo) == (True, "ok")
        assert ledger.ledger_rows(conninfo)[1] == expected[1]
    assert not alive(pid), "restored() left its server running"
    assert not (copy / "postmaster.pid").exists()


def test_restored_ledger_reports_integrity_and_rows(
    splitmirror_database: PostgresLedgerDatabase,
    host_postgres: HostPostgres,
    splitmirror_workspace: Workspace,
) -> None:
    splitmirror_database.create_ledger()
    run_writer(splitmirror_database, 2, splitmirror_workspace.root / "acks-2.txt", 10)
    expected = ledger.ledger_rows(splitmirror_database.url)
    copy = stopped_copy(host_postgres, splitmirror_workspace.root / "restored")
    steps = PostgresEngine.prepare_restore(copy, {})  # a copy started as a restore of it says
    report = splitmirror_database.restored_ledger(RestoreResult("", copy, [], [], 0, "postgresql", steps, []))
    assert (report.integrity_ok, report.integrity) == (True, "ok")
    assert report.rows == expected
    assert not (copy / "postmaster.pid").exists()


def test_amcheck_reports_corruption(host_postgres: HostPostgres, splitmirror_workspace: Workspace) -> None:
    with psycopg.connect(host_postgres.conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g")
        (index,) = conn.execute("SELECT pg_relation_filepath('t_pkey')").fetchone() or ("",)
    copy = stopped_copy(host_postgres, splitmirror_workspace.root / "corrupt")
    with open(copy / index, "r+b") as f:  # scribble over the first leaf page, checksum and all
        f.seek(8192 + 100)
        f.write(b"\xff" * 4000)
    with restored(copy) as conninfo:
        ok, output = amcheck(conninfo)
    assert not ok and output != "ok", output


def test_restored_stops_its_server_when_the_body_fails(
    host_postgres: HostPostgres, splitmirror_workspace: Workspace
) -> None:
    copy = stopped_copy(host_postgres, splitmirror_workspace.root / "restored")
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="the body failed"), restored(copy):
        pids.append(postmaster_pid(copy))
        raise RuntimeError("the body failed")
    assert pids and not alive(pids[0])


def test_restored_raises_with_the_server_log_when_it_cannot_start(
    host_postgres: HostPostgres, splitmirror_workspace: Workspace
) -> None:
    copy = stopped_copy(host_postgres, splitmirror_workspace.root / "broken")
    (copy / "global" / "pg_control").write_bytes(b"\0" * 8192)
    with pytest.raises(RuntimeError, match=r"did not start(.|\n)*PG_CONTROL_VERSION"), restored(copy):
        pytest.fail("a server without a valid pg_control must not start")
    assert not (copy / "postmaster.pid").exists()


INNER_TEST = """
from pathlib import Path


def test_fails_with_a_running_server(host_postgres):
    (Path({record!r})).write_text(str(host_postgres.datadir))
    assert host_postgres.running
    assert False, "failing on purpose"
"""


def test_teardown_stops_the_server_when_the_test_fails(tmp_path: Path) -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    inner = tmp_path / "inner"
    inner.mkdir()
    record = tmp_path / "datadir.txt"
    shutil.copy(Path(__file__).with_name("conftest.py"), inner / "conftest.py")
    (inner / "pytest.ini").write_text("[pytest]\n")
    (inner / "test_inner.py").write_text(textwrap.dedent(INNER_TEST.format(record=str(record))))
    src = str(Path(ledger.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'tmp'}"],
        cwd=inner,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failing on purpose" in result.stdout
    datadir = Path(record.read_text())
    assert (datadir / "PG_VERSION").exists()
    assert not (datadir / "postmaster.pid").exists(), "the fixture left the server running"
