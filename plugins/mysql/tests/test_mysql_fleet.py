"""Off-host backup of MariaDB with hosts of their own (docs/fleet.md, :mod:`splitmirror.testing.fleet`):
the database host reaches the server and the catalog, the backup host the catalog and the
mirror disk only.  A HOT_BACKUP drill through the split: writers committing, ``backup
--split-only`` on the database host, ``archive`` on the backup host, the archive restored and
started by its printed steps, CHECK TABLE clean and every acknowledged row there.  (The workers,
leases and a worker killed mid-BACKUP are proven with PostgreSQL: they do not depend on the
database.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.testing.containers import on_newest
from splitmirror.testing.fleet import (
    catalog_env,
    database_config,
    device_size,
    fleet,
    fleet_drill,
    mirror_disks,
    worker_config,
)
from splitmirror_mysql.testing import PORT, ContainerMysql, MysqlLedgerDatabase

pytestmark = on_newest("server", "mariadb", pairs=True)


def test_a_mariadb_split_archived_by_a_backup_host(
    server: ContainerMysql, option_file: Path, splitmirror_primary_disk: Path, tmp_path: Path
) -> None:
    primary = splitmirror_primary_disk
    if not os.path.ismount(primary):
        pytest.skip("the block mirror needs the data directory on a filesystem of its own (root)")
    archives = tmp_path / "archives"
    archives.mkdir()
    with fleet() as f, mirror_disks(tmp_path, device_size(primary), 1) as (mirror,):
        assert server.container is not None
        server_ip = f.attach(server.container.id)
        db1 = f.host("db1", "db", hidden=[archives])
        bk1 = f.host("bk1", "backup", hidden=[primary])
        assert db1.reaches(server_ip, PORT) and not bk1.reaches(server_ip, PORT)
        database = MysqlLedgerDatabase(server, option_file, primary=primary)
        config = database_config(
            tmp_path / "shop.toml", name="shop", url=f"{server.database}://root@{server_ip}:{PORT}/",
            mode="hot-backup", options=database.options, primary=primary, mirror=mirror,
            catalog=f.catalog_url("db"),
        )  # fmt: skip
        target = f'path = "{archives}/{{name}}-{{session}}.tar"'
        worker = worker_config(
            tmp_path / "bk1.toml", catalog=f.catalog_url("backup"), devices=[mirror], target=target
        )
        report = fleet_drill(database, db1, bk1, config, worker, tmp_path, env=catalog_env())
        print(report)
        assert report.acknowledged > 0 and report.passed, str(report)
