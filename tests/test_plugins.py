"""Plugin loading: entry points from a really installed distribution, broken plugins, strict mode,
the block-list, duplicate names."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import install_in_venv, write_distribution
from splitmirror import impl
from splitmirror.errors import PluginError
from splitmirror.hooks import Hooks
from splitmirror.plugins import PluginRecord, load_plugins, register_plugin
from splitmirror.targets.builtin import FileTarget

EXAMPLE = """
from splitmirror import impl
from splitmirror.targets.builtin import FileTarget


class NullTarget(FileTarget):
    name = "example-null"

    @classmethod
    def accepts(cls, path):
        return False


@impl
def splitmirror_register_targets(register):
    register(NullTarget)
"""


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment that sees splitmirror, with a plugin distribution installed
    from source through pip: one good plugin and one that raises on import."""
    tmp = tmp_path_factory.mktemp("plugin-venv")
    src = tmp / "splitmirror-example"
    (src / "splitmirror_example").mkdir(parents=True)
    (src / "splitmirror_example" / "__init__.py").write_text(EXAMPLE)
    (src / "splitmirror_example" / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    write_distribution(
        src,
        "splitmirror-example",
        "1.2.3",
        {"example": "splitmirror_example", "broken": "splitmirror_example.broken"},
    )
    return install_in_venv(src, tmp / "venv")


def splitmirror(python: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPLITMIRROR_")}
    return subprocess.run(
        [str(python), "-m", "splitmirror", *args], capture_output=True, text=True, env={**environ, **env}
    )


def test_installed_distribution_is_discovered_and_broken_one_reported(plugin_venv: Path) -> None:
    proc = splitmirror(plugin_venv, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["example"]["distribution"] == "splitmirror-example"
    assert rows["example"]["version"] == "1.2.3"
    assert rows["example"]["status"] == "loaded"
    assert rows["example"]["provides"] == ["target:example-null"]
    assert rows["broken"]["status"] == "error"
    assert rows["broken"]["error"] == "RuntimeError: boom at import"
    assert rows["sqlite"]["provides"] == ["engine:sqlite"] and rows["sqlite"]["builtin"]
    assert rows["directory"]["provides"] == ["mirror:directory"]
    human = splitmirror(plugin_venv, "plugins")
    assert "boom at import" in human.stdout and "splitmirror-example" in human.stdout


def test_broken_plugin_does_not_stop_a_backup(plugin_venv: Path, ledger: Path, write_config: Any) -> None:
    proc = splitmirror(plugin_venv, "backup", str(write_config()), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "DONE"


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_venv: Path) -> None:
    proc = splitmirror(plugin_venv, "plugins", SPLITMIRROR_STRICT_PLUGINS="1")
    assert proc.returncode == 2
    assert "plugin 'broken' failed to load: RuntimeError: boom at import" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_block_list_skips_a_plugin(plugin_venv: Path) -> None:
    proc = splitmirror(plugin_venv, "plugins", "--json", SPLITMIRROR_BLOCK_PLUGINS="broken, example")
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["broken"]["status"] == rows["example"]["status"] == "blocked"
    assert rows["example"]["provides"] == []


def test_tracing_variable_prints_hook_calls(plugin_venv: Path) -> None:
    proc = splitmirror(plugin_venv, "plugins", SPLITMIRROR_TRACE_PLUGINS="1")
    assert "splitmirror_register_engines" in proc.stderr


def test_builtins_listed_with_versions() -> None:
    from splitmirror import __version__

    hooks = Hooks(load_plugins(entry_points_enabled=False))
    records = {r.name: r for r in hooks.plugins.records}
    assert {"sqlite", "directory", "targets", "session"} <= set(records)
    assert all(r.version == __version__ and r.loaded for r in records.values())
    assert hooks.targets.names() == ["stdout", "tape", "file", "command"]


class FileAgain(FileTarget):
    name = "file"


class TakesTheFileName:
    """A plugin registering a target under the built-in file target's name."""

    @impl
    def splitmirror_register_targets(self, register: Any) -> None:
        register(FileAgain)


def test_duplicate_name_names_both_plugins() -> None:
    hooks = Hooks(load_plugins(entry_points_enabled=False))
    hooks.register(TakesTheFileName(), "dup-plugin")
    assert hooks.targets.get("file") is FileTarget, "a plugin cannot take a built-in's name"
    error = hooks.plugins.record("dup-plugin").error or ""
    assert "target 'file' is registered by both plugin 'targets' and plugin 'dup-plugin'" in error


@pytest.mark.parametrize("order", [{"tryfirst": True}, {"trylast": True}])
def test_a_plugin_cannot_take_a_builtins_name_by_reordering_itself(order: dict[str, bool]) -> None:
    """pluggy puts ``tryfirst``/``trylast`` implementations at either end of its list; the
    built-ins are still asked first, so the plugin is the one reported."""
    from splitmirror.mirror.directory import DirectoryMirror

    class DirectoryAgain(DirectoryMirror):
        name = "directory"

    class Reordered:
        @impl(**order)
        def splitmirror_register_mirrors(self, register: Any) -> None:
            register(DirectoryAgain)

        @impl(**order)
        def splitmirror_register_targets(self, register: Any) -> None:
            register(FileAgain)

    hooks = Hooks(load_plugins(entry_points_enabled=False))
    hooks.register(Reordered(), "reordered")
    assert hooks.mirrors.get("directory") is DirectoryMirror
    assert hooks.targets.get("file") is FileTarget
    error = hooks.plugins.record("reordered").error or ""
    assert (
        "mirror provider 'directory' is registered by both plugin 'directory' and plugin 'reordered'" in error
    )
    assert hooks.plugins.record("directory").loaded and hooks.plugins.record("targets").loaded


def test_the_remover_register_returns_removes_the_record_too() -> None:
    hooks = Hooks(load_plugins(entry_points_enabled=False))
    before = [r.name for r in hooks.plugins.records]
    remove = hooks.register(TakesTheFileName(), "dup-plugin")
    assert hooks.plugins.record("dup-plugin").distribution == "<in-process>"
    _ = hooks.targets  # reported broken (a taken name), which unregisters it
    remove()
    assert [r.name for r in hooks.plugins.records] == before
    assert hooks.plugins.pm.get_plugin("dup-plugin") is None
    remove = hooks.register(TakesTheFileName(), "dup-plugin")  # the name is free again
    remove()
    assert [r.name for r in hooks.plugins.records] == before


def test_duplicate_name_is_fatal_in_strict_mode() -> None:
    hooks = Hooks(load_plugins({"SPLITMIRROR_STRICT_PLUGINS": "1"}, entry_points_enabled=False))
    hooks.register(TakesTheFileName(), "dup-plugin")
    with pytest.raises(PluginError, match="registered by both plugin 'targets' and plugin 'dup-plugin'"):
        _ = hooks.targets


def test_plugin_whose_register_hook_raises_is_reported_not_fatal() -> None:
    class Faulty:
        @impl
        def splitmirror_register_engines(self, register: Any) -> None:
            register(type("Half", (), {"name": "half", "url_schemes": ("half",)}))
            raise ValueError("cannot find libfoo")

    hooks = Hooks(load_plugins(entry_points_enabled=False))
    hooks.register(Faulty(), "faulty")
    assert hooks.engines.names() == ["sqlite"], "nothing from a plugin whose hook raised"
    assert hooks.plugins.record("faulty").error == "ValueError: cannot find libfoo"


def test_unknown_hook_in_a_plugin_is_reported(tmp_path: Path) -> None:
    class Typo:
        @impl
        def splitmirror_phase_startd(self) -> None: ...

    loaded = load_plugins(entry_points_enabled=False)
    record = PluginRecord("typo", "x", "0", builtin=False)
    loaded.records.append(record)
    register_plugin(loaded, record, lambda: Typo())
    assert record.error == "implements unknown hook(s) splitmirror_phase_startd"
    loaded.pm.check_pending()  # the manager is left consistent
