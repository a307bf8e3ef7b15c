"""The typed facade over ``pm.hook``: the only module that calls hooks.

pluggy hook calls are keyword-only and return ``Any``; everything else in splitmirror calls the
typed methods here, so a hook's signature changes in exactly two places (the spec and this).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from .engine import DatabaseEngine
from .errors import PluginError, first_line
from .mirror.base import MirrorProvider
from .phases import Phase
from .plugins import LoadedPlugins, PluginRecord, load_plugins
from .registry import Registry
from .targets.base import Target

if TYPE_CHECKING:
    from .catalog.base import SessionSummary
    from .config import Config
    from .session import Session

T = TypeVar("T", bound=type)


class Hooks:
    """What the session engine and the CLI need from plugins, typed."""

    def __init__(self, plugins: LoadedPlugins | None = None) -> None:
        self.plugins = plugins if plugins is not None else load_plugins()
        self._hook = self.plugins.pm.hook

    # -- registries -------------------------------------------------------------------------

    def _collect(
        self, hook_name: str, family: str, check: Callable[[Registry[Any]], None] | None = None
    ) -> Registry[Any]:
        """Call each plugin's register hook on its own, so we know who registered what.

        Plugins are asked in registration order, built-ins first, so a plugin cannot take a
        built-in's name.  A plugin whose hook raises, or that registers a name already taken,
        is reported (``splitmirror plugins``) and contributes nothing; the others still load.
        """
        registry: Registry[Any] = Registry(family)
        pm = self.plugins.pm
        for hookimpl in getattr(self._hook, hook_name).get_hookimpls():
            plugin = hookimpl.plugin_name
            others = [p for name, p in pm.list_name_plugin() if name != plugin]
            offered: list[type] = []
            try:
                pm.subset_hook_caller(hook_name, remove_plugins=others)(register=offered.append)
                trial = registry.copy()
                for cls in offered:
                    trial.add(cls, plugin)
                if check is not None:
                    check(trial)
            except Exception as error:  # noqa: BLE001 - a broken plugin is reported, not fatal
                self.plugins.fail(plugin, error if not isinstance(error, PluginError) else str(error))
                continue
            registry = trial
        return registry

    @functools.cached_property
    def engines(self) -> Registry[type[DatabaseEngine]]:
        return self._collect("splitmirror_register_engines", "database engine", _unique_schemes)

    @functools.cached_property
    def mirrors(self) -> Registry[type[MirrorProvider]]:
        return self._collect("splitmirror_register_mirrors", "mirror provider")

    @functools.cached_property
    def targets(self) -> Registry[type[Target]]:
        return self._collect("splitmirror_register_targets", "target")

    def engine_for_url(self, url: str) -> type[DatabaseEngine]:
        scheme = urlsplit(url).scheme.split("+", 1)[0].lower()
        for _name, entry in self.engines.entries():
            if scheme in entry.cls.url_schemes:
                return entry.cls
        schemes = sorted(s for _n, e in self.engines.entries() for s in e.cls.url_schemes)
        raise PluginError(
            f"no installed database engine handles {scheme or 'this'}:// URLs "
            f"(installed: {', '.join(schemes) or 'none'}); install the plugin for your database, "
            f"e.g. `pip install splitmirror-{scheme or 'postgresql'}`"
        )

    def target_for_path(self, path: str, kind: str | None) -> type[Target]:
        if kind is not None:
            return self.targets.get(kind)
        entries = [entry for _name, entry in self.targets.entries()]
        # Plugins' targets are asked before the built-ins (the file target accepts anything).
        entries.sort(key=lambda entry: self._builtin(entry.plugin))
        for entry in entries:
            if entry.cls.accepts(path):
                return entry.cls
        raise PluginError(f"no installed target accepts {path!r}; set [target] kind")

    def _builtin(self, plugin: str) -> bool:
        try:
            return self.plugins.record(plugin).builtin
        except KeyError:
            return False

    # -- session hooks --------------------------------------------------------------------

    def run_phase(self, session: Session, phase: Phase) -> object:
        return self._hook.splitmirror_phase(session=session, phase=phase)

    def phase_started(self, session: Session, phase: Phase) -> None:
        self._hook.splitmirror_phase_started(session=session, phase=phase)

    def phase_finished(
        self, session: Session, phase: Phase, duration_s: float, error: BaseException | None
    ) -> None:
        self._hook.splitmirror_phase_finished(
            session=session, phase=phase, duration_s=duration_s, error=error
        )

    def progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
        self._hook.splitmirror_progress(session=session, phase=phase, done=done, total=total)

    def session_finished(self, session: Session, summary: SessionSummary) -> None:
        self._hook.splitmirror_session_finished(session=session, summary=summary)

    def emergency_release(
        self, config: Config, phase: str, engine_state: Mapping[str, Any] | None
    ) -> list[str]:
        """Every plugin's ``splitmirror_emergency_release``, each on its own (the watchdog must
        not stop at the first that fails); returns one sentence per failure."""
        failures = []
        for implementation in self._hook.splitmirror_emergency_release.get_hookimpls():
            try:
                implementation.function(config=config, phase=phase, engine_state=engine_state)
            except Exception as error:  # noqa: BLE001 - reported; the other plugins still run
                failures.append(f"plugin {implementation.plugin_name}: {first_line(error)}")
        return failures

    # -- registering plugins at run time (tests, the CLI's own observers) ------------------

    def register(self, plugin: object, name: str) -> Callable[[], None]:
        """Register an in-process plugin (an observer); returns the function that removes it."""
        self.plugins.records.append(PluginRecord(name, "<in-process>", "", builtin=False))
        self.plugins.pm.register(plugin, name=name)
        return lambda: self.plugins.pm.unregister(plugin)


def _unique_schemes(registry: Registry[Any]) -> None:
    """A URL scheme picks exactly one engine."""
    seen: dict[str, str] = {}
    for name, entry in registry.entries():
        for scheme in entry.cls.url_schemes:
            if scheme in seen:
                raise PluginError(
                    f"URL scheme {scheme!r} is claimed by both engine {seen[scheme]!r} and engine "
                    f"{name!r}; block one with SPLITMIRROR_BLOCK_PLUGINS"
                )
            seen[scheme] = name
