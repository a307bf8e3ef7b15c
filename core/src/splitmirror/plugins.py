"""Building the plugin manager: built-ins, the block-list, entry points, tracing.

The manager is built by :func:`load_plugins`, never at import time, in pluggy's recommended
order: add the hookspecs, register the built-ins, honour the block-list, load entry points
defensively (one broken plugin is reported, not fatal), then ``check_pending``.  We keep our
own record of which distribution gave which plugin for ``splitmirror plugins``.

Environment variables:

``SPLITMIRROR_BLOCK_PLUGINS``
    Comma-separated plugin names (entry-point names or built-in names) not to load.
``SPLITMIRROR_STRICT_PLUGINS=1``
    Strict plugin mode, for plugin development and CI: a plugin that fails to load is fatal,
    and so is an observer that raises (:class:`~splitmirror.hooks.Hooks`).
``SPLITMIRROR_TRACE_PLUGINS=1``
    Print pluggy's trace of every hook call to standard error.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

import pluggy

from . import __version__, hookspecs
from .errors import PluginError, first_line

ENTRY_POINT_GROUP = "splitmirror"
BLOCK_ENV = "SPLITMIRROR_BLOCK_PLUGINS"
STRICT_ENV = "SPLITMIRROR_STRICT_PLUGINS"
TRACE_ENV = "SPLITMIRROR_TRACE_PLUGINS"

#: Modules registered as built-in plugins, under these names.
BUILTIN_PLUGINS: Mapping[str, str] = {
    "session": "splitmirror.session",
    "sqlite": "splitmirror.engines.sqlite",
    "directory": "splitmirror.mirror.directory",
    "block": "splitmirror.mirror.block",
    "btrfs": "splitmirror.mirror.btrfs_snapshot",
    "reflink": "splitmirror.mirror.reflink",
    "command": "splitmirror.mirror.command",
    "targets": "splitmirror.targets.builtin",
    "metrics": "splitmirror.metrics",
    "notify": "splitmirror.notify",
}


@dataclasses.dataclass
class PluginRecord:
    """One plugin as ``splitmirror plugins`` shows it."""

    name: str
    distribution: str
    version: str
    builtin: bool
    error: str | None = None
    blocked: bool = False

    @property
    def loaded(self) -> bool:
        return self.error is None and not self.blocked


@dataclasses.dataclass
class LoadedPlugins:
    """The manager plus our record of every plugin it was offered."""

    pm: pluggy.PluginManager
    records: list[PluginRecord]
    strict: bool

    def record(self, name: str) -> PluginRecord:
        for record in self.records:
            if record.name == name:
                return record
        raise KeyError(name)

    def fail(self, name: str, error: BaseException | str) -> None:
        """Mark a loaded plugin broken (e.g. its register hook raised) and unregister it."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {first_line(error)}"
        self.record(name).error = message
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        if self.strict:
            raise PluginError(f"plugin {name!r} failed: {message} ({STRICT_ENV} is set)")


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def load_plugins(
    environ: Mapping[str, str] | None = None, *, entry_points_enabled: bool = True
) -> LoadedPlugins:
    """Build the plugin manager.  ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = {n.strip() for n in env.get(BLOCK_ENV, "").split(",") if n.strip()}
    loaded = LoadedPlugins(pm, [], strict=_flag(env, STRICT_ENV))

    for name, module_name in BUILTIN_PLUGINS.items():
        record = PluginRecord(name, "splitmirror", __version__, builtin=True)
        loaded.records.append(record)
        if name in blocked and name != "session":  # the phase runner is not optional
            record.blocked = True
            continue
        register_plugin(loaded, record, functools.partial(importlib.import_module, module_name))

    if entry_points_enabled:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            record = PluginRecord(
                ep.name,
                dist.name if dist else "?",
                dist.version if dist else "?",
                builtin=False,
            )
            loaded.records.append(record)
            if ep.name in blocked:
                record.blocked = True
                continue
            register_plugin(loaded, record, ep.load)

    pm.check_pending()
    if _flag(env, TRACE_ENV):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return loaded


def register_plugin(loaded: LoadedPlugins, record: PluginRecord, load: Callable[[], object]) -> None:
    """Import and register one plugin; a failure is recorded (or raised when strict)."""
    try:
        plugin = load()
        if loaded.pm.get_plugin(record.name) is not None or loaded.pm.is_registered(plugin):
            raise PluginError(f"a plugin named {record.name!r} is already registered")
        loaded.pm.register(plugin, name=record.name)
    except Exception as error:
        record.error = f"{type(error).__name__}: {first_line(error)}"
        if loaded.strict:
            raise PluginError(
                f"plugin {record.name!r} failed to load: {record.error} ({STRICT_ENV} is set)"
            ) from error
        return
    unknown = [
        caller.name
        for caller in loaded.pm.get_hookcallers(plugin) or []
        if caller.spec is None and caller.name.startswith(f"{hookspecs.PROJECT}_")
    ]
    if unknown:
        loaded.fail(record.name, f"implements unknown hook(s) {', '.join(sorted(unknown))}")
