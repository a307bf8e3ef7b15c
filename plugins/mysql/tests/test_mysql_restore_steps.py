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
    directories: list[tuple[str, str]] | None = None,
    member: str = "mysql/ibdata1",
) -> dict[str, Any]:
    """A manifest as the engine writes it: the server in a container (/var/lib/mysql on the
    host's /srv/db/mysql), the primary /srv/db."""
    dirs = directories or [("/var/lib/mysql", "/srv/db/mysql")]
    return {
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
    assert by_kind(steps, "run") == ["chown -R mysql:mysql /r/mysql"]
    assert by_kind(steps, "start") == [
        "mariadbd --user=mysql --datadir=/r/mysql --log-bin=binlog --server-id=7"
    ]
    assert by_kind(steps, "container") == [
        "docker run -d -v /r/mysql:/var/lib/mysql IMAGE --log-bin=binlog --server-id=7"
    ]


def test_a_server_without_the_binary_log_gets_no_binary_log_option() -> None:
    steps = restore_steps(Path("/r"), manifest({**MARIADB_SERVER, "log_bin": 0}))
    assert by_kind(steps, "start") == ["mariadbd --user=mysql --datadir=/r/mysql"]
    mysql = restore_steps(Path("/r"), manifest({**MARIADB_SERVER, "log_bin": 0}, flavour="MySQL"))
    assert by_kind(mysql, "start") == ["mysqld --user=mysql --datadir=/r/mysql --skip-log-bin"]


def test_a_binary_log_outside_the_data_directory_is_found_where_it_was_restored() -> None:
    server = {
        **MARIADB_SERVER,
        "log_bin_basename": "/var/log/mysql/mariadb-bin",
        "log_bin_index": "/var/log/mysql/mariadb-bin.index",
    }
    dirs = [("/var/lib/mysql", "/srv/db/mysql"), ("/var/log/mysql", "/srv/db/binlog")]
    steps = restore_steps(Path("/r"), manifest(server, directories=dirs))
    assert by_kind(steps, "run") == ["chown -R mysql:mysql /r/binlog /r/mysql"]
    assert by_kind(steps, "start") == [
        "mariadbd --user=mysql --datadir=/r/mysql --log-bin=/r/binlog/mariadb-bin --server-id=7"
    ]
    assert by_kind(steps, "container") == [
        "docker run -d -v /r/mysql:/var/lib/mysql -v /r/binlog:/var/log/mysql IMAGE "
        "--log-bin=/var/log/mysql/mariadb-bin --server-id=7"
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
        "--innodb-data-file-path=ibdata1:64M;ibdata2:64M:autoextend --innodb-log-group-home-dir=/r/mysql/redo"
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
        "--lower-case-table-names=1 --gtid-mode=ON --enforce-gtid-consistency=ON"
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
        "mariadbd --user=mysql --datadir=/r/mysql --log-bin=binlog --server-id=7"
    ]
