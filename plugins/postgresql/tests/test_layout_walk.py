"""``layout.walk``: what DISCOVER lists of a data directory, on a made-up one with every case it
decides (no server needed): excluded files and directories, emptied directories, WAL with and
without, a linked ``pg_wal``, a tablespace behind ``pg_tblspc``, links to files, broken links."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from splitmirror_postgresql import layout


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    files = [
        "PG_VERSION", "postgresql.auto.conf", "postmaster.pid", "backup_label",
        "global/pg_control", "global/1262", "global/pg_internal.init",
        "base/1/1259", "base/1/1259_fsm", "base/1/pg_internal.init.1234", "base/1/pgsql_tmp99.1",
        "base/pgsql_tmp/pgsql_tmp12.0", "pg_replslot/slot/state", "pg_stat_tmp/global.stat",
        "pg_xact/0000", "pg_logical/replorigin_checkpoint",
    ]  # fmt: skip
    for name in files:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(name)
    wal = tmp_path / "wal"
    (wal / "archive_status").mkdir(parents=True)
    (wal / "000000010000000000000001").write_text("wal")
    os.symlink(wal, data / "pg_wal")
    space = tmp_path / "spaces" / "orders"
    (space / "PG_18_1" / "5").mkdir(parents=True)
    (space / "PG_18_1" / "5" / "16400").write_text("t")
    (space / "PG_18_1" / "pgsql_tmp").mkdir()
    (data / "pg_tblspc").mkdir()
    os.symlink(space, data / "pg_tblspc" / "16399")
    os.symlink(tmp_path / "elsewhere.conf", data / "broken-link")
    (tmp_path / "outside.conf").write_text("c")
    os.symlink(tmp_path / "outside.conf", data / "linked.conf")
    os.symlink(tmp_path / "nowhere", data / "pg_dynshmem")  # an emptied directory, linked
    return data


EVERY_TIME = {
    "PG_VERSION": "data/PG_VERSION",
    "postgresql.auto.conf": "data/postgresql.auto.conf",
    "global/pg_control": "data/global/pg_control",
    "global/1262": "data/global/1262",
    "base/1/1259": "data/base/1/1259",
    "base/1/1259_fsm": "data/base/1/1259_fsm",
    "pg_xact/0000": "data/pg_xact/0000",
    "pg_logical/replorigin_checkpoint": "data/pg_logical/replorigin_checkpoint",
    "pg_tblspc/16399/PG_18_1/5/16400": "spaces/orders/PG_18_1/5/16400",
    "linked.conf": "outside.conf",
}


@pytest.mark.parametrize("with_wal", [True, False])
def test_the_files_a_backup_needs_where_they_are(datadir: Path, with_wal: bool) -> None:
    found = {
        str(rel): str(host.relative_to(datadir.parent))
        for host, rel in layout.walk(datadir, with_wal=with_wal)
    }
    wal = {"pg_wal/000000010000000000000001": "wal/000000010000000000000001"} if with_wal else {}
    assert found == {**EVERY_TIME, **wal}


def test_a_link_is_followed_where_the_server_says_it_leads(datadir: Path, tmp_path: Path) -> None:
    """A containerised server's links name paths inside its container: ``link_target`` maps them."""
    moved = tmp_path / "moved"
    (datadir.parent / "spaces").rename(moved)
    os.remove(datadir / "pg_tblspc" / "16399")
    os.symlink("/var/lib/postgresql/spaces/orders", datadir / "pg_tblspc" / "16399")

    def on_this_host(link: Path) -> Path:
        target = Path(os.readlink(link))
        if str(target).startswith("/var/lib/postgresql/spaces/"):
            return moved / target.relative_to("/var/lib/postgresql/spaces")
        return link.resolve()

    found = {str(rel): host for host, rel in layout.walk(datadir, with_wal=False, link_target=on_this_host)}
    assert found["pg_tblspc/16399/PG_18_1/5/16400"] == moved / "orders/PG_18_1/5/16400"


def test_a_directory_gone_while_listed_is_skipped(datadir: Path) -> None:
    walked = layout.walk(datadir, with_wal=False)
    first = next(walked)
    shutil.rmtree(datadir / "base")
    rest = list(walked)
    assert not any(str(rel).startswith("base/") for _host, rel in [first, *rest] if rel != first[1])
