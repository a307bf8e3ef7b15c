"""Off-host backup on one machine: the database host's session stops after the split and hands
it over; a backup host's worker archives it from the mirror's disk, by extent, without the
database (docs/fleet.md).  Both run here as separate processes with their own configurations,
as the docs write them; hosts of their own (network and mount namespaces) are in the plugins'
test_postgres_fleet.py and test_mysql_fleet.py."""

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
from typing import Any

import pytest

from splitmirror.catalog import CatalogAddress, SqliteCatalog
from splitmirror.config import load_config
from splitmirror.hooks import Hooks
from splitmirror.mirror.block import BlockMirror
from splitmirror.mirror.ownership import state_files
from splitmirror.session import Session
from splitmirror.targets.builtin import FileTarget
from splitmirror.testing.loopfs import loop_device
from splitmirror.worker import Lease, LeaseLost
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


def test_a_backup_hosts_own_problems_never_fail_a_split(fleet: Fleet, tmp_path: Path) -> None:
    """A worker whose target or spool cannot work refuses before it claims: the split waits."""
    assert cli("backup", str(fleet.database), "--quiet").returncode == 0
    base = fleet.worker.read_text().split("[target]")[0]
    missing = write(
        tmp_path / "missing.toml", base + f'[target]\npath = "{tmp_path}/nowhere/{{session}}.tar"\n'
    )
    refused = cli("archive", str(missing))
    assert refused.returncode == 3 and "nowhere" in one_sentence(refused)
    spool = write(
        tmp_path / "spool.toml", fleet.worker.read_text().replace('lease = "3s"', f'spool = "{tmp_path}/no"')
    )
    refused = cli("archive", str(spool))
    assert refused.returncode == 3 and "[archive] spool" in one_sentence(refused)
    stdout = write(tmp_path / "stdout.toml", base + '[target]\npath = "-"\n')
    refused = cli("archive", str(stdout))
    assert refused.returncode == 2 and "would mix every split's archive" in one_sentence(refused)
    with closing(SqliteCatalog(fleet.catalog)) as catalog:
        assert [(h.state, h.attempts) for h in catalog.handovers()] == [("WAITING", 0)]


def test_a_split_no_backup_host_can_archive_is_released_by_hand(fleet: Fleet, tmp_path: Path) -> None:
    assert cli("backup", str(fleet.database), "--quiet").returncode == 0
    copy = cli("catalog", "copy", str(fleet.catalog), str(tmp_path / "other.db"))
    assert copy.returncode == 5 and "session 1's split in" in one_sentence(copy), (
        "a waiting split stays behind"
    )
    refused = cli("backup", str(fleet.database), "--quiet")
    assert refused.returncode == 4 and "splitmirror catalog release 1" in refused.stderr
    released = cli("catalog", "release", "1", "--catalog", str(fleet.catalog))
    assert released.returncode == 0, released.stderr
    assert "split released (not archived)" in released.stdout
    shown = json.loads(cli("show", "1", "--catalog", str(fleet.catalog), "--json").stdout)
    assert (shown["status"], shown["failed_phase"], shown["handover"]["state"]) == (
        "FAILED",
        "BACKUP",
        "FAILED",
    )
    again = cli("catalog", "release", "1", "--catalog", str(fleet.catalog))
    assert again.returncode == 5 and "has no split waiting" in one_sentence(again)
    assert cli("backup", str(fleet.database), "--quiet").returncode == 0, "the mirror is free again"


def test_the_split_is_on_the_mirror_disk_before_it_is_handed_over(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host reads the disk, not this host's page cache: the mirror is made durable
    before the catalog says the split may be read."""
    order: list[str] = []
    durable = BlockMirror.make_durable
    handing = SqliteCatalog.hand_over

    def made_durable(self: BlockMirror) -> None:
        order.append("durable")
        durable(self)

    def handed(self: SqliteCatalog, *args: Any, **kwargs: Any) -> None:
        order.append("handed over")
        handing(self, *args, **kwargs)

    monkeypatch.setattr(BlockMirror, "make_durable", made_durable)
    monkeypatch.setattr(SqliteCatalog, "hand_over", handed)
    Session(load_config(fleet.database), Hooks(strict=True), split_only=True).run()
    assert order == ["durable", "handed over"]


def test_check_judges_an_off_host_configuration_as_backup_would(write_config: Any, ledger: Path) -> None:
    config = write_config()
    config.write_text(config.read_text().replace("[session]\n", '[session]\nbackup = "off-host"\n', 1))
    checked = cli("check", str(config))
    assert checked.returncode == 3
    assert "an off-host backup reads the split by extent from the mirror's disk" in checked.stdout


def test_a_worker_cut_off_from_the_catalog_stops_before_another_may_claim(tmp_path: Path) -> None:
    """Two thirds of the lease without a renewal (here: the catalog is not there at all), and
    the worker's next read raises: another worker may claim the split only at the full lease."""
    with Lease(CatalogAddress(str(tmp_path / "gone.db")), 1, "bk1:1", lease_s=3) as lease:
        lease.check(4096)
        time.sleep(2.3)
        with pytest.raises(LeaseLost, match="the lease on session 1's split ran out"):
            lease.check(4096)


def test_prune_on_the_database_host_leaves_what_a_backup_host_wrote(fleet: Fleet) -> None:
    """The catalog names the archive by the backup host's path: the database host must neither
    delete a file of its own there nor take the missing file for one already deleted."""
    fleet.database.write_text(fleet.database.read_text() + "\n[retention]\nkeep_last = 1\n")
    for _ in range(2):
        assert cli("backup", str(fleet.database), "--quiet", env=DB_HOST).returncode == 0
        assert cli("archive", str(fleet.worker), env=BACKUP_HOST).returncode == 0
    pruned = cli("prune", str(fleet.database), "--json", env=DB_HOST)
    assert pruned.returncode == 0, pruned.stderr
    (first,) = [o for o in json.loads(pruned.stdout) if o["id"] == 1]
    assert first["result"] == "left" and "written on backup1 (an off-host backup)" in first["detail"], first
    assert (fleet.root / "archives" / "orders-1.tar").is_file()
    assert json.loads(cli("show", "1", "--catalog", str(fleet.catalog), "--json").stdout)["pruned"] is None


def test_a_fenced_off_worker_never_removes_the_archive_the_next_one_wrote(tmp_path: Path) -> None:
    """Two workers of one split write aside (``.partial-TAG``) and commit to one path; the one
    whose lease ran out removes only the file it wrote, never the one now at the path."""
    path = str(tmp_path / "orders-7.tar")
    late, next_one = FileTarget(path, 512), FileTarget(path, 512)
    late.write_aside("bk1-100")
    next_one.write_aside("bk2-200")
    for target, content in ((late, b"late"), (next_one, b"next")):
        target.open()
        target.write(content.ljust(512, b"\0"))
        target.commit()
    late.discard()  # told by the catalog that the split is the other worker's
    assert Path(path).read_bytes().startswith(b"next"), "the next worker's archive stays"
    next_one.discard()
    assert not Path(path).exists(), "a worker removes what it wrote itself"


def test_a_worker_writes_archives_under_each_databases_directory(fleet: Fleet, tmp_path: Path) -> None:
    assert cli("backup", str(fleet.database), "--quiet").returncode == 0
    base = fleet.worker.read_text().split("[target]")[0]
    (fleet.root / "archives" / "orders").mkdir()
    nested = write(
        tmp_path / "nested.toml",
        base + f'[target]\npath = "{fleet.root}/archives/{{name}}/{{session}}.tar"\n',
    )
    archived = cli("archive", str(nested), "--json")
    assert archived.returncode == 0, archived.stderr
    assert json.loads(archived.stdout)[0]["archive"] == f"{fleet.root}/archives/orders/1.tar"
    unnamed = write(tmp_path / "unnamed.toml", base + f'[target]\npath = "{fleet.root}/archives/all.tar"\n')
    refused = cli("archive", str(unnamed))
    assert refused.returncode == 2 and "[target] path needs {session}" in one_sentence(refused)
