"""Off-host backup with hosts of their own (docs/fleet.md): a database host that reaches the
server and the catalog but not the archives, two backup hosts that reach the catalog and the
mirror disks but neither the server nor the primary, one PostgreSQL catalog in a container
between them (:mod:`splitmirror.testing.fleet`).

- a HOT_BACKUP drill through the split: writers committing, ``backup --split-only`` on the
  database host, ``archive`` on a backup host, the archive restored and started by its printed
  steps, every acknowledged row there (the WAL the server wrote after the split comes with the
  split, from the database host);
- two backup hosts' workers on three handed-over splits (three mirrors): each archived once;
- a worker SIGKILLed mid-BACKUP: the other backup host finishes its split once the lease ran out.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from splitmirror.catalog import SqliteCatalog
from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import Unavailable, compose_up, free_port, image_for, on_newest
from splitmirror.testing.fleet import (
    Fleet,
    Host,
    catalog_env,
    database_config,
    device_size,
    fleet,
    fleet_drill,
    json_of,
    mirror_disks,
    worker_config,
)
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres


@pytest.fixture
def primary(container_postgres: ContainerPostgres) -> Path:
    disk = container_postgres.datadir.parent
    if not os.path.ismount(disk):
        pytest.skip("the block mirror needs the data directory on a filesystem of its own (root)")
    return disk


@on_newest("container_postgres", "postgres")
def test_split_on_the_database_host_archived_by_two_backup_hosts(
    container_postgres: ContainerPostgres, primary: Path, tmp_path: Path
) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "placed-by-the-backup-host").touch()
    with fleet() as f, mirror_disks(tmp_path, device_size(primary), 3) as mirrors:
        assert container_postgres.container is not None
        server_ip = f.attach(container_postgres.container.id)
        db1 = f.host("db1", "db", hidden=[archives])
        bk1, bk2 = (f.host(name, "backup", hidden=[primary]) for name in ("bk1", "bk2"))
        _isolated(f, server_ip, db1, [bk1, bk2], primary, archives)

        url = f"postgresql://postgres@{server_ip}:5432/postgres"
        configs = [
            database_config(
                tmp_path / f"orders{n}.toml", name=f"orders{n}", url=url, mode="hot-backup",
                options={"path_map": container_postgres.path_map}, primary=primary, mirror=mirror,
                catalog=f.catalog_url("db"),
            )
            for n, mirror in enumerate(mirrors)
        ]  # fmt: skip
        target = f'path = "{archives}/{{name}}-{{session}}.tar"'
        workers = [
            worker_config(
                tmp_path / f"{h.name}.toml", catalog=f.catalog_url("backup"), devices=mirrors, target=target
            )
            for h in (bk1, bk2)
        ]
        env = {**catalog_env(), "PGPASSWORD": container_postgres.password}

        report = fleet_drill(
            ContainerLedgerDatabase(container_postgres), db1, bk1, configs[0], workers[0], tmp_path, env=env
        )
        print(report)
        assert report.acknowledged > 0 and report.passed, str(report)
        drilled = json_of(
            bk1.splitmirror("show", "1", "--catalog", f.catalog_url("backup"), "--json", env=env)
        )
        hosts = {p["name"]: p["host"] for p in drilled["phases"]}
        assert (hosts["UNQUIESCE"], hosts["BACKUP"], hosts["CLEANUP"]) == ("db1", "bk1", "bk1")
        methods = {m["read_method"] for m in drilled["members"]}
        assert {"extent", "collected"} <= methods, methods  # the WAL after the split came as parcels

        split = [
            json_of(db1.splitmirror("backup", c, "--split-only", "--json", env=env))["id"] for c in configs
        ]
        running = [
            h.popen("archive", w, "--json", env=env) for h, w in ((bk1, workers[0]), (bk2, workers[1]))
        ]
        outcomes = []
        for process in running:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
            outcomes += json.loads(out)
        assert sorted(o["session_id"] for o in outcomes) == split, "each split archived once"
        assert {o["status"] for o in outcomes} == {"DONE"}

        _a_worker_killed_mid_backup(f, db1, bk1, bk2, configs[0], workers[1], tmp_path, env)


def _isolated(
    f: Fleet, server_ip: str, db1: Host, backup_hosts: list[Host], primary: Path, archives: Path
) -> None:
    """Each host reaches what it needs and nothing else."""
    assert db1.reaches(server_ip, 5432) and db1.reaches(f.address(f.catalog, "db"), 5432)
    assert not db1.sees(archives / "placed-by-the-backup-host"), "the database host never sees the archives"
    for host in backup_hosts:
        assert host.reaches(f.address(f.catalog, "backup"), 5432)
        assert not host.reaches(server_ip, 5432), "a backup host never reaches the database"
        assert not host.sees(primary / "pgdata"), "nor the primary"


def _a_worker_killed_mid_backup(
    f: Fleet, db1: Host, bk1: Host, bk2: Host, config: Path, worker: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    session = json_of(db1.splitmirror("backup", config, "--split-only", "--json", env=env))["id"]
    text = worker.read_text().split("[target]")[0] + '[target]\ncommand = ["sh", "-c", "sleep 600"]\n'
    stalled_config = tmp_path / "stalled.toml"
    stalled_config.write_text(text)
    first = bk1.popen("archive", stalled_config, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            shown = json_of(
                bk2.splitmirror("show", str(session), "--catalog", f.catalog_url("backup"), "--json", env=env)
            )
            if shown["handover"]["state"] == "ARCHIVING" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert shown["handover"]["state"] == "ARCHIVING"
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
        first.communicate()
        subprocess.run(["pkill", "-f", "sleep 600"], check=False)
    time.sleep(3.5)  # the dead worker's lease runs out
    (outcome,) = json_of(bk2.splitmirror("archive", worker, "--json", env=env))
    assert (outcome["session_id"], outcome["status"]) == (session, "DONE")
    shown = json_of(
        bk2.splitmirror("show", str(session), "--catalog", f.catalog_url("backup"), "--json", env=env)
    )
    assert (shown["status"], shown["handover"]["state"], shown["handover"]["attempts"]) == (
        "DONE",
        "ARCHIVED",
        2,
    )
    verified = bk2.splitmirror("verify", str(session), "--catalog", f.catalog_url("backup"), env=env)
    assert verified.returncode == 0, verified.stderr
    restored = tmp_path / "restored-by-url"
    said = bk2.splitmirror(
        "restore", str(session), "--catalog", f.catalog_url("backup"), "--to", restored, env=env
    )
    assert said.returncode == 0, said.stderr
    assert (restored / "pgdata" / "PG_VERSION").is_file(), said.stdout


def test_the_compose_catalog_service_takes_a_hosts_catalog(tmp_path: Path) -> None:
    """docs/fleet.md's setup: the compose file's ``catalog`` service (``--profile fleet``), a
    host's SQLite catalog copied into it, and read back from it by URL."""
    if os.geteuid() != 0:
        pytest.skip("the compose services run as root: their data directories belong to the container's user")
    password, port = secrets.token_urlsafe(16), free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    env = {"SPLITMIRROR_CATALOG_PASSWORD": password}

    def answers() -> bool:  # the server answers: an empty database is no catalog yet
        said = SessionRunner.command("list", "--catalog", url, env=env)
        return said.returncode == 5 and "there is no catalog" in said.stderr

    local = tmp_path / "catalog.db"
    with closing(SqliteCatalog(local)) as catalog:
        sid = catalog.start_session(
            name="orders", mode="freeze", database="sqlite", database_url="sqlite:///x", config="/c",
            started_at="2026-12-07T01:00:00.000+00:00",
        )  # fmt: skip
        catalog.finish_session(sid, status="DONE", finished_at="2026-12-07T01:00:05.000+00:00")
    compose = {
        "SPLITMIRROR_CATALOG_DATA": str(tmp_path / "catalog-data"),
        "SPLITMIRROR_IMAGE_POSTGRES_18": image_for("postgres", "18"),
        "CATALOG_PORT": str(port),
        **env,
    }
    try:
        with compose_up("catalog", compose, answers):
            copied = SessionRunner.command("catalog", "copy", local, url, env=env)
            assert copied.returncode == 0, copied.stderr
            listed = SessionRunner.command("list", "--catalog", url, "--json", env=env)
            assert [(s["id"], s["name"], s["status"]) for s in json.loads(listed.stdout)] == [
                (1, "orders", "DONE")
            ]
    except Unavailable as reason:
        pytest.skip(str(reason))
