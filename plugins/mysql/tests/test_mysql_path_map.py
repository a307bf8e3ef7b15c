"""``path_map`` keys as people write them (issue 15), on MySQL/MariaDB: a trailing slash maps the
data directory itself (``@@datadir`` has one too); a key with ``..`` is refused by ``check``
when it loads the configuration, exit 2, one sentence.  Only the last test needs a server, the
newest of each flavour: matching the key to ``@@datadir`` is splitmirror's, the same on every
version."""

from __future__ import annotations

from pathlib import Path

from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import on_newest
from splitmirror_mysql.engine import MysqlEngine, MysqlOptions
from splitmirror_mysql.testing import DATA, ContainerMysql, MysqlLedgerDatabase


def test_a_trailing_slash_key_maps_the_data_directory_itself() -> None:
    engine = MysqlEngine(
        "mariadb://root@127.0.0.1/", MysqlOptions.model_validate({"path_map": {f"{DATA}/": "/m"}})
    )
    assert engine.host_path(f"{DATA}/") == Path("/m")
    assert engine.host_path(f"{DATA}/binlog.000001") == Path("/m/binlog.000001")


def test_a_key_with_dot_dot_is_refused_by_check_in_one_sentence(splitmirror_session: SessionRunner) -> None:
    bad = {"path_map": {"/var/lib/mysql/../mysql": "/srv/mysql"}, "option_file": "/nonexistent.cnf"}
    config = splitmirror_session.config_file("mariadb://root@127.0.0.1:1/", "freeze", bad)
    done = splitmirror_session.command("check", config)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: {config}: [database] path_map: the key '/var/lib/mysql/../mysql' has '..' in it; write the "
        "directory as the server names it, without '..' (such as '/var/lib/mysql')"
    ]


@on_newest("server", "mariadb", "mysql")
def test_check_passes_with_a_trailing_slash_key(
    server: ContainerMysql, option_file: Path, splitmirror_session: SessionRunner
) -> None:
    database = MysqlLedgerDatabase(server, option_file, {"path_map": {f"{DATA}/": str(server.datadir)}})
    done = splitmirror_session.command("check", splitmirror_session.config(database, "freeze").source)
    assert done.returncode == 0, done.stderr
