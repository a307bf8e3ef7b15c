"""MySQL 8.0.30+/9's file names in the layout (no server needed: the drills restore real ones).

Named as MySQL 9.7 names them in a fresh data directory: redo in ``#innodb_redo/`` (``#ib_redoN``
in use, ``#ib_redoN_tmp`` spares), ``undo_001``/``undo_002``, ``#ib_16384_0.dblwr``, session
temporary tablespaces in ``#innodb_temp/``, and ``auto.cnf``, ``*.pem``, ``mysql.ibd``, the
binary log."""

from __future__ import annotations

from pathlib import Path

from splitmirror_mysql import layout

FILES = [
    "#innodb_redo/#ib_redo9", "#innodb_redo/#ib_redo10", "#innodb_redo/#ib_redo11_tmp",
    "#innodb_temp/temp_1.ibt", "ibtmp1", "undo_001", "undo_002", "ibdata1",
    "#ib_16384_0.dblwr", "#ib_16384_1.dblwr", "auto.cnf", "ca.pem", "server-key.pem",
    "mysql.ibd", "mysql_upgrade_history", "binlog.000001", "binlog.000002", "binlog.index",
    "ledger/ledger.ibd", "ledger/notes.MYD", "ledger/notes.MYI", "ledger/notes_401.sdi", "abc.pid",
]  # fmt: skip


def datadir(tmp_path: Path) -> Path:
    root = tmp_path / "mysql"
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_what_a_mysql_9_backup_carries_and_leaves_out(tmp_path: Path) -> None:
    root = datadir(tmp_path)
    found = {str(p.relative_to(root)) for _r, p in layout.walk([root], str(root / "binlog"))}
    left_out = {"#innodb_redo/#ib_redo11_tmp", "#innodb_temp/temp_1.ibt", "ibtmp1", "abc.pid"}
    assert found == set(FILES) - left_out


def test_the_order_of_mysql_9_files(tmp_path: Path) -> None:
    """Tablespaces, table and server files, then ibdata1, undo, redo by log number, doublewrite,
    then the binary logs."""
    root = datadir(tmp_path)
    base = str(root / "binlog")
    spaces = {root / "ledger/ledger.ibd": 7, root / "mysql.ibd": 4294967294}
    paths = [p for _r, p in layout.walk([root], base)]
    ordered = sorted(paths, key=lambda p: layout.logical_key(root, p, base, spaces))
    names = [str(p.relative_to(root)) for p in ordered]
    assert names[:2] == ["ledger/ledger.ibd", "mysql.ibd"]
    assert names[-10:] == [
        "ibdata1", "undo_001", "undo_002", "#innodb_redo/#ib_redo9", "#innodb_redo/#ib_redo10",
        "#ib_16384_0.dblwr", "#ib_16384_1.dblwr", "binlog.000001", "binlog.000002", "binlog.index",
    ], names  # fmt: skip
    roles = {str(p.relative_to(root)): layout.role(layout.logical_key(root, p, base, spaces)) for p in paths}
    assert roles["undo_001"] == "system" and roles["#innodb_redo/#ib_redo10"] == "log"
    assert roles["binlog.index"] == "binlog" and roles["auto.cnf"] == "table"
