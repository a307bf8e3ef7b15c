"""What engines declare (their modes) and refuse (their URL) is judged before anything connects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from splitmirror import impl
from splitmirror.config import load_config
from splitmirror.engine import ServerInfo
from splitmirror.engines.sqlite import SqliteEngine
from splitmirror.errors import ConfigError, PluginError
from splitmirror.hooks import Hooks
from splitmirror.phases import Mode
from splitmirror.plugins import load_plugins
from splitmirror.preflight import check
from splitmirror.session import Session


class FreezeOnly(SqliteEngine):
    """SQLite under another scheme, declaring FREEZE only, and never to be reached by the test."""

    name = "freezeonly"
    url_schemes = ("freezeonly",)
    modes = (Mode.FREEZE,)

    def connect(self) -> ServerInfo:
        raise AssertionError("a mode the engine does not declare is refused before connecting")


class Registers:
    def __init__(self, *engines: type) -> None:
        self.engines = engines

    @impl
    def splitmirror_register_engines(self, register: Any) -> None:
        for engine in self.engines:
            register(engine)


def hooks_with(*engines: type) -> Hooks:
    hooks = Hooks(load_plugins(entry_points_enabled=False))
    hooks.register(Registers(*engines), "test-engines")
    return hooks


def freeze_only_config(write_config: Any, mode: str) -> Path:
    path: Path = write_config(mode=mode)
    path.write_text(path.read_text().replace('url = "sqlite://', 'url = "freezeonly://'))
    return path


def test_a_mode_the_engine_does_not_declare_is_a_configuration_error(ledger: Path, write_config: Any) -> None:
    path = freeze_only_config(write_config, "hot-backup")
    config = load_config(path)
    for attempt in (
        lambda: Session(config, hooks_with(FreezeOnly)).run(),
        lambda: check(config, hooks_with(FreezeOnly)),
    ):
        with pytest.raises(ConfigError) as refused:
            attempt()
        assert refused.value.exit_code == 2
        assert str(refused.value) == (
            f'{path}: [database] mode: the freezeonly engine cannot take "hot-backup" sessions; '
            'set mode = "freeze"'
        )


def test_a_declared_mode_goes_on_to_connect(ledger: Path, write_config: Any) -> None:
    config = load_config(freeze_only_config(write_config, "freeze"))
    with pytest.raises(PluginError, match=r"connect failed with AssertionError: .* before connecting"):
        check(config, hooks_with(FreezeOnly))


@pytest.mark.parametrize("modes", [(), ("freeze",), [Mode.FREEZE], None])
def test_an_engine_declaring_modes_badly_is_reported_not_loaded(modes: Any) -> None:
    broken = type("Broken", (SqliteEngine,), {"name": "broken", "url_schemes": ("broken",), "modes": modes})
    hooks = hooks_with(broken)
    assert hooks.engines.names() == ["sqlite"]
    error = hooks.plugins.record("test-engines").error or ""
    assert error.startswith("engine 'broken' declares modes = ") and "non-empty tuple" in error, error


def test_built_in_engines_declare_both_modes() -> None:
    hooks = Hooks(load_plugins(entry_points_enabled=False))
    assert hooks.engines.get("sqlite").modes == (Mode.FREEZE, Mode.HOT_BACKUP)


class RefusesItsUrl(FreezeOnly):
    def __init__(self, url: str, options: Any) -> None:
        raise ConfigError("url: the path is missing; write freezeonly:///path/to/ledger.db")


def test_an_engine_refusing_its_url_is_named_with_the_file_and_section(
    ledger: Path, write_config: Any
) -> None:
    path = freeze_only_config(write_config, "freeze")
    with pytest.raises(ConfigError) as refused:
        check(load_config(path), hooks_with(RefusesItsUrl))
    assert str(refused.value) == (
        f"{path}: [database] url: the path is missing; write freezeonly:///path/to/ledger.db"
    )


class LaxOptions(pydantic.BaseModel):
    """A plugin's options model as an author first writes it: pydantic ignores unknown keys."""

    lock_timeout: float = 5.0


class WithLaxOptions(FreezeOnly):
    options_model = LaxOptions


def test_a_misspelt_engine_option_is_refused_whatever_the_model_allows(
    ledger: Path, write_config: Any
) -> None:
    path = freeze_only_config(write_config, "freeze")
    path.write_text(path.read_text().replace('mode = "freeze"', 'mode = "freeze"\nlock_timeot = 3'))
    with pytest.raises(ConfigError) as refused:
        check(load_config(path), hooks_with(WithLaxOptions))
    assert str(refused.value) == f"{path}: [database] has no key 'lock_timeot'; did you mean 'lock_timeout'?"


def test_a_url_whose_plugin_failed_to_load_says_so_not_install_it() -> None:
    broken = type("Broken", (SqliteEngine,), {"name": "broken", "url_schemes": ("broken",), "modes": ()})
    hooks = hooks_with(broken)
    with pytest.raises(PluginError) as refused:
        hooks.engine_for_url("broken:///srv/ledger.db")
    assert str(refused.value) == (
        "no loaded database engine handles broken:// URLs (loaded: sqlite), and plugin(s) test-engines "
        "failed to load; `splitmirror plugins` says why"
    )


class ConnectsCarelessly(SqliteEngine):
    name = "careless"
    url_schemes = ("freezeonly",)

    def connect(self) -> ServerInfo:
        raise FileNotFoundError(2, "No such file or directory", "/srv/ledger.db")


class AnswersWithWords(SqliteEngine):
    name = "wordy"
    url_schemes = ("freezeonly",)

    def preflight(self, mode: Mode) -> Any:
        return "the database is not ready"


@pytest.mark.parametrize(
    ("engine", "said"),
    [
        (
            ConnectsCarelessly,
            "the careless engine's connect failed with FileNotFoundError: [Errno 2] No such file or "
            "directory: '/srv/ledger.db'; this is a bug in its plugin",
        ),
        (
            AnswersWithWords,
            "the wordy engine's preflight returned 'the database is not ready', not a list of "
            "PreflightProblem; a bug in its plugin",
        ),
    ],
)
def test_a_plugin_failing_other_than_as_documented_is_named_as_a_bug(
    engine: type, said: str, ledger: Path, write_config: Any
) -> None:
    config = load_config(freeze_only_config(write_config, "freeze"))
    with pytest.raises(PluginError) as refused:
        check(config, hooks_with(engine))
    assert str(refused.value).startswith(said), str(refused.value)
    assert refused.value.exit_code == 2
