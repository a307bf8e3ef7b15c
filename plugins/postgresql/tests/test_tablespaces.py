"""Tablespaces: a primary holding the data directory and two tablespaces (one with a table and
its index, one empty), backed up in both modes and restored.  The restored server must find every
row, its tablespaces must be the restored copies (never the live ones), the empty tablespace must
work, and the live cluster's tablespace directories must be untouched by the restored server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from splitmirror.hooks import Hooks
from splitmirror.session import Session
from splitmirror.testing import SessionRunner, Workspace
from splitmirror_postgresql.testing import (
    HostLedgerDatabase,
    HostPostgres,
    amcheck,
    give_to_postgres,
    started_as_printed,
    unavailable,
)

ROWS = 5000


@pytest.fixture
def splitmirror_loop_size() -> int:
    return 512 << 20


@pytest.fixture
def cluster(
    splitmirror_loop_filesystem: Path, splitmirror_workspace: Workspace
) -> Iterator[HostLedgerDatabase]:
    """``<disk>/pgdata`` and ``<disk>/tablespaces/{orders,spare}``; the disk is the primary (a
    loop-device ext4 of its own, so FREEZE can freeze it)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    disk = splitmirror_loop_filesystem
    server = HostPostgres(splitmirror_workspace.root / "pg")
    try:
        server.init(disk / "pgdata").start("max_wal_size=96MB", "min_wal_size=32MB")
        for name in ("orders", "spare"):
            (disk / "tablespaces" / name).mkdir(parents=True)
            give_to_postgres(disk / "tablespaces" / name)
        with psycopg.connect(server.conninfo, autocommit=True) as conn:
            for name in ("orders", "spare"):
                conn.execute(f"CREATE TABLESPACE {name} LOCATION '{disk / 'tablespaces' / name}'")
            conn.execute(
                "CREATE TABLE orders (id int PRIMARY KEY USING INDEX TABLESPACE orders, note text) "
                "TABLESPACE orders"
            )
            conn.execute(
                "INSERT INTO orders SELECT g, repeat('x', 100) FROM generate_series(1, %s) g", (ROWS,)
            )
        yield HostLedgerDatabase(server, primary=disk)
    finally:
        server.stop()


def files_under(directory: Path) -> dict[str, int]:
    return {
        str(Path(top, name).relative_to(directory)): os.stat(Path(top, name)).st_mtime_ns
        for top, _dirs, names in os.walk(directory)
        for name in names
    }


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_tablespaces_come_back_as_restored_copies(
    mode: str, cluster: HostLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    cluster.create_ledger()
    summary = splitmirror_session.run(cluster, mode)
    live = cluster.primary / "tablespaces"
    live_before = files_under(live)

    target = splitmirror_session.workspace.root / f"restored-{mode}"
    restore = splitmirror_session.restore(summary, target)
    manifest = restore.manifest
    members = {record["member"] for record in manifest["files"]}
    assert any(m.startswith("tablespaces/orders/PG_15_") for m in members), sorted(members)
    assert not any("pg_tblspc/" in m for m in members), "tablespace files are archived where they really are"
    if mode == "hot-backup":
        assert {"pgdata/backup_label", "pgdata/tablespace_map"} <= members

    with started_as_printed(restore) as conninfo:  # chown -R postgres (tablespaces too), pg_ctl start
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (ROWS,)
            locations = dict(
                conn.execute(
                    "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace "
                    "WHERE spcname IN ('orders', 'spare')"
                ).fetchall()
            )
            assert locations == {
                "orders": str(target / "tablespaces" / "orders"),
                "spare": str(target / "tablespaces" / "spare"),
            }
            conn.execute(
                "CREATE TABLE spare_rows TABLESPACE spare AS SELECT g FROM generate_series(1, 100) g"
            )
            conn.execute("CHECKPOINT")
        assert amcheck(conninfo) == (True, "ok")

    assert files_under(live) == live_before, "the restored server touched the live tablespaces"
    assert cluster.accepts_writes()


def test_a_tablespace_outside_the_primary_is_refused_before_anything_happens(
    cluster: HostLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """With ``[mirror] primary`` naming only the data directory, the tablespaces are outside it."""
    cluster.create_ledger()
    only_data = HostLedgerDatabase(cluster.server)
    config = splitmirror_session.config(only_data, "hot-backup")
    _server, problems = Session(config, Hooks()).check()
    outside = [p.sentence() for p in problems if "outside the primary" in p.sentence()]
    assert outside and all("/tablespaces/" in sentence for sentence in outside), problems
    assert not splitmirror_session.workspace.mirror.exists()
    assert cluster.accepts_writes()
