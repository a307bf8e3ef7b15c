"""What engines declare (their modes) and refuse (their URL) is judged before anything connects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from splitmirror import impl
from splitmirror.config import load_config
from splitmirror.engine import ServerInfo
from splitmirror.engines.sqlite import SqliteEngine
from splitmirror.errors import ConfigError
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
    with pytest.raises(AssertionError, match="before connecting"):
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
