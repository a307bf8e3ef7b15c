"""The server-engine foundation (``splitmirror.server``) on its own, with a stand-in driver: the
path map (normalised keys, bad keys refused at configuration time), the connection skeleton
(its sentences, abort falling back to closing, close never failing), the freeze refusals and the
container route of the restore steps.  The plugins' own tests run it against real servers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import pytest

from splitmirror.api import (
    ConfigError,
    DatabaseFile,
    Mode,
    PreflightError,
    PreflightProblem,
    ServerEngine,
    ServerInfo,
    ServerOptions,
    UnquiesceResult,
    container_steps,
    host_path,
    ran_in_container,
)
from splitmirror.config import parse_config, plugin_options

# -- the path map ---------------------------------------------------------------------------------


def path_map(keys: Mapping[str, str]) -> dict[str, Path]:
    """``path_map`` as configuration loading validates it (:data:`~splitmirror.api.PathMap`)."""
    return ServerOptions.model_validate({"path_map": keys}).path_map


@pytest.mark.parametrize(
    "key", ["/var/lib/postgresql/data", "/var/lib/postgresql/data/", "/var/lib/./postgresql//data/"]
)
def test_a_key_maps_its_directory_however_it_is_written(key: str) -> None:
    """The trailing slash people write (issue 15: with it, the data directory itself stayed
    unmapped and preflight failed)."""
    mapped = path_map({key: "/srv/pg"})
    assert mapped == {"/var/lib/postgresql/data": Path("/srv/pg")}
    assert host_path(mapped, "/var/lib/postgresql/data") == Path("/srv/pg")
    assert host_path(mapped, "/var/lib/postgresql/data/") == Path("/srv/pg")
    assert host_path(mapped, "/var/lib/postgresql/data/base/5/16384") == Path("/srv/pg/base/5/16384")


def test_the_longest_key_wins_and_keys_hold_whole_components() -> None:
    mapped = path_map({"/": "/host-root", "/data/": "/srv/data", "/data/wal": "/srv/wal"})
    assert host_path(mapped, "/data/wal/000001") == Path("/srv/wal/000001")
    assert host_path(mapped, "/data/base") == Path("/srv/data/base")
    assert host_path(mapped, "/database/x") == Path("/host-root/database/x")  # not under /data
    assert host_path({}, "/var/lib/mysql/") == Path("/var/lib/mysql")


@pytest.mark.parametrize(
    ("keys", "sentence"),
    [
        (
            {"/var/lib/../mysql": "/srv"},
            "the key '/var/lib/../mysql' has '..' in it; write the directory as the server names it, "
            "without '..' (such as '/var/mysql')",
        ),
        ({"/data/..": "/srv"}, "the key '/data/..' has '..' in it"),
        (
            {"var/lib/mysql": "/srv"},
            "the key 'var/lib/mysql' is not an absolute path; write the directory as the server names "
            "it, starting with '/'",
        ),
        ({"": "/srv"}, "the key '' is not an absolute path"),
        (
            {"/data/": "/a", "/data": "/b"},
            "the keys '/data/' and '/data' name the same server directory; keep one",
        ),
    ],
)
def test_a_key_no_server_reports_is_refused_in_one_sentence(keys: dict[str, str], sentence: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="path_map") as error:
        path_map(keys)
    assert sentence in str(error.value)


def test_a_refused_key_is_a_config_error_naming_file_section_and_key(tmp_path: Path) -> None:
    """What ``check`` and ``backup`` print (exit 2), before connecting to anything."""
    data = {
        "session": {"name": "pg"},
        "database": {"url": "fake://db", "path_map": {"/var/lib/../pg": str(tmp_path)}},
        "mirror": {"primary": str(tmp_path / "primary"), "mirror": str(tmp_path / "mirror")},
        "target": {"path": str(tmp_path / "archive.tar")},
        "source": str(tmp_path / "pg.toml"),
    }
    config = parse_config(data, "pg.toml")
    with pytest.raises(ConfigError) as error:
        plugin_options(config, "database", ServerOptions)
    message = str(error.value)
    assert message.startswith(
        f"{tmp_path / 'pg.toml'}: [database] path_map: the key '/var/lib/../pg' has '..' in it;"
    )
    assert "\n" not in message


def test_a_plugin_options_model_extends_the_common_keys() -> None:
    class Options(ServerOptions):
        lock_timeout: float = 5.0

    options = Options.model_validate({"path_map": {"/x/": "/y"}, "connect_timeout": "2s"})
    assert options.path_map == {"/x": Path("/y")} and options.connect_timeout == 2.0
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Options.model_validate({"path_mpa": {}})


# -- the engine -----------------------------------------------------------------------------------


class DriverError(Exception):
    """The stand-in driver's error root."""


class Connection:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        if self.closed:
            raise DriverError("Already closed")  # PyMySQL's habit
        self.closed = True


class StandInEngine(ServerEngine[Connection, ServerOptions]):
    """A server engine over a stand-in driver; what a plugin subclass writes, and no more."""

    name = "standin"
    url_schemes = ("standin",)
    server_name = "StandIn"
    password_sources = "STANDIN_PWD or ~/.standin"
    driver_errors = (DriverError,)
    frozen_files = "the data directory and its log"
    freeze_reason = "FREEZE freezes filesystems"
    freeze_alternative = 'mode = "hot-backup"'

    def __init__(self, url: str, options: pydantic.BaseModel) -> None:
        super().__init__(url, options)
        self.down = False
        self.refuse_release = False
        self.released: list[Mode | None] = []
        self.data_directory: str | None = "/var/lib/standin"
        self.frozen: list[Path] = []
        self.identity: list[PreflightProblem] = []

    def open_connection(self) -> Connection:
        if self.down:
            raise DriverError("connection refused\nIs the server running on that host?")
        return Connection()

    def describe_server(self) -> ServerInfo:
        return ServerInfo("standin", str(self._one("SELECT version()")))

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return [("1.0",)] if "version" in sql else []

    def server_data_directory(self) -> str | None:
        return self.data_directory

    def release(self, mode: Mode | None) -> None:
        self.released.append(mode)
        if self.refuse_release:
            raise DriverError("server closed the connection unexpectedly")

    def identity_problems(self) -> list[PreflightProblem]:
        return self.identity

    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        return self.data_directory_problems() + self.freeze_problems(mode)

    def layout(self) -> list[Path]:
        return []

    def quiesce(self, mode: Mode) -> None:
        self._mode = mode

    def discover(self) -> list[DatabaseFile]:
        return []

    def freeze_paths(self, mode: Mode) -> list[Path]:
        return self.frozen if mode is Mode.FREEZE else []

    def unquiesce(self) -> UnquiesceResult:
        mode, self._mode = self._mode, None
        self.release(mode)
        return UnquiesceResult()


def engine(url: str = "standin://backup@db.example:5/x", **options: Any) -> StandInEngine:
    return StandInEngine(url, ServerOptions.model_validate(options))


def test_connect_describes_the_server_and_the_connection_is_held() -> None:
    subject = engine()
    with pytest.raises(RuntimeError, match=r"connect\(\) first"):
        _ = subject.conn
    assert subject.connect() == ServerInfo("standin", "1.0")
    assert subject._one("SELECT nothing") is None
    conn = subject.conn
    subject.close()
    assert conn.closed and subject._conn is None
    subject.close()  # twice is fine


def test_a_password_in_the_url_is_refused_before_connecting() -> None:
    subject = engine("standin://backup:s3cret@db.example/x")
    subject.down = True  # it must not even try
    with pytest.raises(PreflightError) as error:
        subject.connect()
    assert str(error.value) == (
        "the [database] url carries a password; remove it and put the password in STANDIN_PWD or "
        "~/.standin, which splitmirror never writes anywhere"
    )


def test_an_unreachable_server_is_one_sentence() -> None:
    subject = engine()
    subject.down = True
    with pytest.raises(PreflightError) as error:
        subject.connect()
    assert str(error.value) == (
        "cannot connect to StandIn at standin://backup@db.example:5/x: connection refused; check the "
        "URL, that the server is running, and STANDIN_PWD or ~/.standin"
    )


def test_abort_releases_the_mode_once() -> None:
    subject = engine()
    subject.connect()
    subject.quiesce(Mode.HOT_BACKUP)
    subject.abort()
    subject.abort()
    assert subject.released == [Mode.HOT_BACKUP, None]
    assert subject._conn is not None


def test_a_refused_release_closes_the_connection_which_ends_the_hold() -> None:
    subject = engine()
    subject.connect()
    conn = subject.conn
    subject.quiesce(Mode.FREEZE)
    subject.refuse_release = True
    subject.abort()
    assert conn.closed and subject._conn is None
    subject.close()  # nothing left to do, nothing raised


def test_close_leaves_the_mode_then_closes_even_a_connection_the_driver_closed() -> None:
    subject = engine()
    subject.connect()
    subject.quiesce(Mode.FREEZE)
    subject.conn.close()  # the server went away
    subject.close()
    assert subject.released == [Mode.FREEZE] and subject._conn is None


def test_an_unreadable_data_directory_names_both_paths_and_path_map(tmp_path: Path) -> None:
    subject = engine(path_map={"/var/lib/standin/": str(tmp_path / "missing")})
    subject.connect()
    (problem,) = subject.preflight(Mode.HOT_BACKUP)
    assert (
        problem.what == f"the data directory /var/lib/standin is not readable here as {tmp_path / 'missing'}"
    )
    assert "set [database] path_map for a server in a container" in problem.fix


def test_a_readable_data_directory_is_checked_for_identity(tmp_path: Path) -> None:
    subject = engine(path_map={"/var/lib/standin": str(tmp_path)})
    subject.connect()
    assert subject.datadir == tmp_path
    assert subject.preflight(Mode.HOT_BACKUP) == []
    subject.identity = [subject.foreign_data_directory("another server's files")]
    (problem,) = subject.preflight(Mode.HOT_BACKUP)
    assert problem.what == (
        f"the data directory {tmp_path} holds another server's files, not the files of the server "
        "at standin://backup@db.example:5/x"
    )
    subject.data_directory = None
    with pytest.raises(RuntimeError, match="did not say where its data directory is"):
        _ = subject.datadir


def test_freezing_the_root_filesystem_is_refused_with_the_other_way(tmp_path: Path) -> None:
    subject = engine(path_map={"/var/lib/standin": str(tmp_path)})
    subject.connect()
    subject.frozen = [Path("/")]
    problems = subject.freeze_problems(Mode.FREEZE)
    assert (
        PreflightProblem(
            "/ is on the root filesystem, which cannot be frozen",
            'put the data directory and its log on a filesystem of their own, or use mode = "hot-backup"',
        )
        in problems
    )
    assert subject.freeze_problems(Mode.HOT_BACKUP) == []  # nothing frozen, nothing asked


def test_freezing_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    subject = engine()
    subject.frozen = [Path("/nonexistent/data")]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert subject.freeze_problems(Mode.FREEZE) == [
        PreflightProblem(
            "FREEZE freezes filesystems, which needs root",
            'run splitmirror as root, or use mode = "hot-backup"',
        )
    ]


def test_the_options_must_be_the_engines_model() -> None:
    class Other(pydantic.BaseModel):
        pass

    with pytest.raises(TypeError, match="StandInEngine takes ServerOptions"):
        StandInEngine("standin://x", Other())


# -- restore steps --------------------------------------------------------------------------------


def test_a_server_whose_paths_were_mapped_ran_in_a_container() -> None:
    assert ran_in_container([("/var/lib/mysql/", "/srv/mysql")])
    assert not ran_in_container([("/var/lib/mysql/", "/var/lib/mysql")])
    assert not ran_in_container([("/var/lib/mysql", None), ("/var/log/mysql", "")])


def test_the_container_route_hands_outside_directories_to_the_images_user() -> None:
    steps = container_steps(
        [("/r/data", "/var/lib/pg"), ("/r/spaces", "/r/spaces")],
        ["postgres", "-c", "archive_mode=off"],
        os_user="postgres",
        outside=["/r/spaces"],
        why="; archive_mode=off keeps it out",
        env={"PGDATA": "/var/lib/pg"},
    )
    assert [step.text() for step in steps] == [
        "chown -R 999:999 /r/spaces   # the postgres user of the upstream images",
        "docker run -d -e PGDATA=/var/lib/pg -v /r/data:/var/lib/pg -v /r/spaces:/r/spaces IMAGE postgres -c "
        "archive_mode=off   # IMAGE: the server's image; it hands the files to its postgres user; "
        "archive_mode=off keeps it out",
    ]
    assert [step.route for step in steps] == ["container", "container"]
    (only,) = container_steps([("/r", "/var/lib/mysql")], os_user="mysql")
    assert only.kind == "container"
