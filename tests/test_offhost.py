"""Off-host backup on one machine: the database host's session stops after the split and hands
it over; a backup host's worker archives it from the mirror's disk, by extent, without the
database (docs/fleet.md).  Both run here as separate processes with their own configurations,
as the docs write them; the split-across-containers proof is in tests/test_fleet.py."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from splitmirror.catalog import SqliteCatalog
from splitmirror.mirror.ownership import state_files
from splitmirror.testing.loopfs import loop_device
from splitmirror.workload import create_ledger
from test_cli import cli, one_sentence

DB_HOST = {"SPLITMIRROR_HOST": "db1"}
BACKUP_HOST = {"SPLITMIRROR_HOST": "backup1"}


@dataclass
class Fleet:
    root: Path
    primary: Path
    mirror: Path  # the mirror's loop device
    database: Path  # the database host's configuration
    worker: Path  # the backup host's configuration
    catalog: Path

    def rows(self, db: Path) -> int:
        with closing(sqlite3.connect(db)) as con:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            return int(con.execute("SELECT count(*) FROM ledger").fetchone()[0])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def _owned_for_the_test(device: Path) -> Iterator[None]:
    """The mirror's ownership record lives in /var/lib, named after the device: the test's own
    goes with the test (a loop device is reused by the next test, with another primary)."""
    record = state_files(device)[1]
    record.unlink(missing_ok=True)
    try:
        yield
    finally:
        record.unlink(missing_ok=True)


@pytest.fixture
def fleet(tmp_path: Path, disk: Path) -> Iterator[Fleet]:
    create_ledger(disk / "ledger.db", rows=3000)
    image = tmp_path / "mirror.img"
    with open(image, "wb") as f:
        f.truncate(96 << 20)
    with loop_device(image) as mirror, _owned_for_the_test(mirror):
        catalog = tmp_path / "catalog.db"
        database = write(
            tmp_path / "orders.toml",
            f"""[session]
name = "orders"
backup = "off-host"
catalog = "{catalog}"

[database]
url = "sqlite://{disk}/ledger.db"
mode = "freeze"

[mirror]
provider = "block"
primary = "{disk}"
mirror = "{mirror}"
""",
        )
        worker = write(
            tmp_path / "backup-host.toml",
            f"""[archive]
catalog = "{catalog}"
devices = ["{mirror}"]
lease = "3s"

[target]
path = "{tmp_path}/archives/{{name}}-{{session}}.tar"
""",
        )
        (tmp_path / "archives").mkdir()
        yield Fleet(tmp_path, disk, mirror, database, worker, catalog)


def test_split_here_archive_there_and_restore(fleet: Fleet) -> None:
    split = cli("backup", str(fleet.database), "--quiet", env=DB_HOST)
    assert split.returncode == 0, split.stderr
    assert "session 1: split handed over (the disk loop:" in split.stdout
    assert not list((fleet.root / "archives").iterdir()), "the database host writes no archive"
    listed = cli("list", "--catalog", str(fleet.catalog))
    assert "HANDED OVER" in listed.stdout, listed.stdout
    assert "off-host: split by db1" in cli("show", "1", "--catalog", str(fleet.catalog)).stdout

    again = cli("backup", str(fleet.database), "--quiet", env=DB_HOST)
    assert again.returncode == 4, "a sync now would overwrite the split nobody archived yet"
    assert f"the mirror {fleet.mirror} holds session 1's split (handed over by db1" in one_sentence(again)

    archived = cli("archive", str(fleet.worker), env=BACKUP_HOST)
    assert archived.returncode == 0, archived.stderr
    assert "session 1 (orders): DONE" in archived.stdout
    shown = json.loads(cli("show", "1", "--catalog", str(fleet.catalog), "--json").stdout)
    assert shown["status"] == "DONE" and shown["archive"] == f"{fleet.root}/archives/orders-1.tar"
    hosts = {p["name"]: p["host"] for p in shown["phases"]}
    assert hosts["UNQUIESCE"] == "db1" and hosts["BACKUP"] == hosts["CLEANUP"] == "backup1"
    data = [m for m in shown["members"] if m["role"] != "manifest"]
    assert {m["read_method"] for m in data if m["member"] == "ledger.db"} == {"extent"}
    assert cli("verify", "1", "--catalog", str(fleet.catalog)).returncode == 0

    restored = cli("restore", "1", "--catalog", str(fleet.catalog), "--to", str(fleet.root / "r"))
    assert restored.returncode == 0, restored.stderr
    assert fleet.rows(fleet.root / "r" / "ledger.db") == 3000

    nothing = cli("archive", str(fleet.worker), env=BACKUP_HOST)
    assert nothing.returncode == 0 and "no split waits on this host's disks" in nothing.stdout
    next_night = cli("backup", str(fleet.database), "--quiet", env=DB_HOST)
    assert next_night.returncode == 0, "archived: the mirror is free for the next sync"


def test_a_backup_host_without_the_disk_refuses_the_split(fleet: Fleet, tmp_path: Path) -> None:
    assert cli("backup", str(fleet.database), "--quiet").returncode == 0
    other = tmp_path / "other.img"
    with open(other, "wb") as f:
        f.truncate(96 << 20)
    with loop_device(other) as wrong:
        config = write(
            tmp_path / "wrong.toml", fleet.worker.read_text().replace(str(fleet.mirror), str(wrong))
        )
        refused = cli("archive", str(config), "--session", "1")
        assert refused.returncode == 3
        said = one_sentence(refused)
        assert "session 1's split was taken on the disk loop:" in said and f"{wrong} is loop:{other}" in said
        idle = cli("archive", str(config))
        assert idle.returncode == 0 and "no split waits on this host's disks" in idle.stdout
    with closing(SqliteCatalog(fleet.catalog)) as catalog:
        assert [h.state for h in catalog.handovers()] == ["WAITING"], "the split waits for the right host"


def test_a_worker_killed_mid_backup_leaves_its_split_to_the_next(fleet: Fleet, tmp_path: Path) -> None:
    """The first worker's archive goes into a program that stalls; SIGKILLed there, it leaves a
    claim that the second worker takes once the lease ran out."""
    assert cli("backup", str(fleet.database), "--quiet").returncode == 0
    stalled = write(
        tmp_path / "stalled.toml",
        fleet.worker.read_text().split("[target]")[0] + '[target]\ncommand = ["sh", "-c", "sleep 600"]\n',
    )
    first = subprocess.Popen([sys.executable, "-m", "splitmirror", "archive", str(stalled)])
    try:
        with closing(SqliteCatalog(fleet.catalog)) as catalog:
            deadline = time.monotonic() + 30
            while catalog.handovers()[0].state != "ARCHIVING" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert catalog.handovers()[0].state == "ARCHIVING"
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
        subprocess.run(["pkill", "-f", "sleep 600"], check=False)
    second = cli("archive", str(fleet.worker), env=BACKUP_HOST)
    assert second.returncode == 0 and "no split waits" in second.stdout, "the lease still holds"
    time.sleep(3.5)
    second = cli("archive", str(fleet.worker), "--json", env=BACKUP_HOST)
    assert second.returncode == 0, second.stderr
    (outcome,) = json.loads(second.stdout)
    assert outcome["status"] == "DONE" and outcome["session_id"] == 1
    with closing(SqliteCatalog(fleet.catalog)) as catalog:
        (split,) = catalog.handovers()
        assert (split.state, split.attempts) == ("ARCHIVED", 2)
    assert cli("verify", "1", "--catalog", str(fleet.catalog)).returncode == 0
