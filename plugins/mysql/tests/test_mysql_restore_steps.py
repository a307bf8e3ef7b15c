"""The start options a restored copy gets, from what the server recorded (no server needed: the
drills in test_mysql_contract.py and test_mysql_engine.py start real copies by these steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitmirror.restore_steps import RestoreStep
from splitmirror_mysql.restore import restore_steps

MARIADB_SERVER = {
    "log_bin": 1, "log_bin_basename": "/var/lib/mysql/binlog", "log_bin_index": "/var/lib/mysql/binlog.index",
    "server_id": 7, "innodb_page_size": 16384, "innodb_data_file_path": "ibdata1:12M:autoextend",
    "innodb_data_home_dir": "", "innodb_log_group_home_dir": "./", "innodb_undo_directory": "./",
    "lower_case_table_names": 0,
}  # fmt: skip


def manifest(
    server: dict[str, Any],
    *,
    flavour: str = "MariaDB",
    version: str = "8.4.3",
    directories: list[tuple[str, str]] | None = None,
    member: str = "mysql/ibdata1",
) -> dict[str, Any]:
    """A manifest as the engine writes it: the server in a container (/var/lib/mysql on the
    host's /srv/db/mysql), the primary /srv/db."""
    dirs = directories or [("/var/lib/mysql", "/srv/db/mysql")]
    return {
        "database": {"version": version},
        "metadata": {
            "flavour": flavour,
            "datadir": "/var/lib/mysql",
            "datadir_host": "/srv/db/mysql",
            "positions": {},
            "server": server,
            "directories": [list(d) for d in dirs],
        },
        "files": [{"path": f"/srv/db/{member}", "member": member}],
    }


def by_kind(steps: list[RestoreStep], kind: str) -> list[str]:
    return [" ".join(step.argv) for step in steps if step.kind == kind]


def test_the_binary_log_the_server_ran_with_is_in_both_start_lines() -> None:
    recorded = manifest(MARIADB_SERVER)
    recorded["metadata"]["datadir"] = "/var/lib/mysql/"  # as @@datadir says it
    steps = restore_steps(Path("/r"), recorded)
    assert by_kind(steps, "run") == ["chown -R mysql:mysql /r"]
    assert by_kind(steps, "start") == [
        "mariadbd --user=mysql --datadir=/r/mysql --log-bin=binlog --server-id=7 --skip-slave-start"
    ]
    assert by_kind(steps, "container") == [
        "docker run -d -v /r/mysql:/var/lib/mysql IMAGE --log-bin=binlog --server-id=7 --skip-slave-start"
    ]


def test_a_server_without_the_binary_log_gets_no_binary_log_option() -> None:
    steps = restore_steps(Path("/r"), manifest({**MARIADB_SERVER, "log_bin": 0}))
    assert by_kind(steps, "start") == ["mariadbd --user=mysql --datadir=/r/mysql --skip-slave-start"]
    mysql = restore_steps(Path("/r"), manifest({**MARIADB_SERVER, "log_bin": 0}, flavour="MySQL"))
    assert by_kind(mysql, "start") == [
        "mysqld --user=mysql --datadir=/r/mysql --skip-log-bin --skip-replica-start"
    ]


def test_a_binary_log_outside_the_data_directory_is_found_where_it_was_restored() -> None:
    server = {
        **MARIADB_SERVER,
        "log_bin_basename": "/var/log/mysql/mariadb-bin",
        "log_bin_index": "/var/log/mysql/mariadb-bin.index",
    }
    dirs = [("/var/lib/mysql", "/srv/db/mysql"), ("/var/log/mysql", "/srv/db/binlog")]
    steps = restore_steps(Path("/r"), manifest(server, directories=dirs))
    # The images hand only the data directory to their mysql user: the other one is chowned.
    assert by_kind(steps, "run") == ["chown -R mysql:mysql /r", "chown -R 999:999 /r/binlog"]
    assert [step.route for step in steps if step.kind == "run"] == ["host", "container"]
    assert by_kind(steps, "start") == [
        "mariadbd --user=mysql --datadir=/r/mysql --log-bin=/r/binlog/mariadb-bin --server-id=7 "
        "--skip-slave-start"
    ]
    assert by_kind(steps, "container") == [
        "docker run -d -v /r/mysql:/var/lib/mysql -v /r/binlog:/var/log/mysql IMAGE "
        "--log-bin=/var/log/mysql/mariadb-bin --server-id=7 --skip-slave-start"
    ]


def test_innodb_settings_a_server_refuses_to_start_without() -> None:
    server = {
        **MARIADB_SERVER,
        "log_bin": 0,
        "innodb_page_size": 8192,
        "innodb_data_file_path": "ibdata1:64M;ibdata2:64M:autoextend",
        "innodb_log_group_home_dir": "/var/lib/mysql/redo",
        "log_bin_index": None,
    }
    steps = restore_steps(Path("/r"), manifest(server))
    assert by_kind(steps, "start") == [
        "mariadbd --user=mysql --datadir=/r/mysql --innodb-page-size=8192 "
        "--innodb-data-file-path=ibdata1:64M;ibdata2:64M:autoextend "
        "--innodb-log-group-home-dir=/r/mysql/redo --skip-slave-start"
    ]


def test_mysql_keeps_its_table_name_case_and_gtid_mode() -> None:
    server = {
        **MARIADB_SERVER,
        "lower_case_table_names": 1,
        "gtid_mode": "ON",
        "enforce_gtid_consistency": "ON",
    }
    steps = restore_steps(Path("/r"), manifest(server, flavour="MySQL"))
    assert by_kind(steps, "start") == [
        "mysqld --user=mysql --datadir=/r/mysql --log-bin=binlog --server-id=7 "
        "--lower-case-table-names=1 --gtid-mode=ON --enforce-gtid-consistency=ON --skip-replica-start"
    ]


def test_a_server_on_this_host_gets_no_container_line() -> None:
    plain = manifest(MARIADB_SERVER, directories=[("/srv/db/mysql", "/srv/db/mysql")])
    plain["metadata"].update(datadir="/srv/db/mysql")
    plain["metadata"]["server"] = {
        **MARIADB_SERVER,
        "log_bin_basename": "/srv/db/mysql/binlog",
        "log_bin_index": None,
    }
    steps = restore_steps(Path("/r"), plain)
    assert by_kind(steps, "container") == []
    assert by_kind(steps, "start") == [
        "mariadbd --user=mysql --datadir=/r/mysql --log-bin=binlog --server-id=7 --skip-slave-start"
    ]


def restore_with_binlogs(
    root: Path, index_lines: list[str], *, binlog_dir: str = "mysql", sizes: tuple[int, ...] = (100, 844)
) -> Path:
    """A restore directory as `restore` leaves it: binary logs and their index under ``binlog_dir``."""
    (root / "mysql").mkdir(parents=True)
    (root / binlog_dir).mkdir(exist_ok=True)
    for number, size in enumerate(sizes, start=1):
        (root / binlog_dir / f"binlog.{number:06d}").write_bytes(b"x" * size)
    (root / binlog_dir / "binlog.index").write_text("".join(f"{line}\n" for line in index_lines))
    return root


def test_absolute_names_in_the_index_become_relative_to_the_data_directory(tmp_path: Path) -> None:
    """A server run with --log-bin=/var/lib/mysql/binlog lists absolute names; a copy on this
    host would look for the live server's files ('Failed to open log')."""
    root = restore_with_binlogs(
        tmp_path / "r", ["/var/lib/mysql/binlog.000001", "/var/lib/mysql/binlog.000002"]
    )
    server = {**MARIADB_SERVER, "log_bin_index": "/var/lib/mysql/binlog.index"}
    steps = restore_steps(root, manifest(server))
    assert (root / "mysql" / "binlog.index").read_text() == "./binlog.000001\n./binlog.000002\n"
    assert by_kind(steps, "start") == [
        f"mariadbd --user=mysql --datadir={root}/mysql --log-bin=binlog --server-id=7 --skip-slave-start"
    ]
    (note,) = [step.text() for step in steps if step.kind == "note"]
    assert "--start-position=844 binlog.000002 LATER_BINLOGS" in note


def test_a_relative_index_is_left_as_it_is(tmp_path: Path) -> None:
    root = restore_with_binlogs(tmp_path / "r", ["./binlog.000001", "./binlog.000002"])
    before = (root / "mysql" / "binlog.index").stat()
    restore_steps(root, manifest(MARIADB_SERVER))
    assert (root / "mysql" / "binlog.index").stat().st_mtime_ns == before.st_mtime_ns


def test_an_index_outside_the_data_directory_gets_a_copy_for_this_host(tmp_path: Path) -> None:
    root = restore_with_binlogs(
        tmp_path / "r", ["/var/log/mysql/binlog.000001", "/var/log/mysql/binlog.000002"], binlog_dir="binlog"
    )
    server = {
        **MARIADB_SERVER,
        "log_bin_basename": "/var/log/mysql/binlog",
        "log_bin_index": "/var/log/mysql/binlog.index",
    }
    dirs = [("/var/lib/mysql", "/srv/db/mysql"), ("/var/log/mysql", "/srv/db/binlog")]
    steps = restore_steps(root, manifest(server, directories=dirs))
    original = root / "binlog" / "binlog.index"
    assert original.read_text() == "/var/log/mysql/binlog.000001\n/var/log/mysql/binlog.000002\n", (
        "the container's"
    )
    host = root / "binlog" / "binlog.index.restored"
    assert host.read_text() == f"{root}/binlog/binlog.000001\n{root}/binlog/binlog.000002\n"
    (start,) = by_kind(steps, "start")
    assert f"--log-bin={root}/binlog/binlog --log-bin-index={host} " in start
    (container,) = by_kind(steps, "container")
    assert "--log-bin-index" not in container


def test_the_live_index_is_never_touched(tmp_path: Path) -> None:
    """An index outside the primary was not carried: nothing is rewritten, wherever it is."""
    live = tmp_path / "live"
    live.mkdir()
    (live / "binlog.index").write_text("/var/log/mysql/binlog.000001\n")
    root = restore_with_binlogs(tmp_path / "r", [])
    server = {**MARIADB_SERVER, "log_bin_basename": f"{live}/binlog", "log_bin_index": f"{live}/binlog.index"}
    restore_steps(
        root, manifest(server, directories=[("/var/lib/mysql", "/srv/db/mysql"), (str(live), str(live))])
    )
    assert (live / "binlog.index").read_text() == "/var/log/mysql/binlog.000001\n"
    assert not (live / "binlog.index.restored").exists()
