"""The typed facade over ``pm.hook``: the only module that calls hooks.

pluggy hook calls are keyword-only and return ``Any``; everything else in splitmirror calls the
typed methods here, so a hook's signature changes in exactly two places (the spec and this).

One policy for observers (:meth:`Hooks._broadcast`): each is called on its own; one that raises
is logged with its plugin's name (once per plugin and hook: a broken progress bar called for
every block of a final pass must not fill the window with tracebacks), the others still hear,
and the session goes on, inside the window too.  In strict plugin mode
(``SPLITMIRROR_STRICT_PLUGINS=1``, or ``Hooks(strict=True)`` as the test suite uses) the failure
raises instead: inside a phase (``phase_started``, ``progress``) where it happens, failing the
session in that phase; after an outcome is recorded (``phase_finished``, ``session_finished``)
it is kept (:meth:`Hooks.take_late_failures`) and raised once the session's outcome is settled,
so it can neither undo a DONE session nor hide a failed one's error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import pluggy

from .engine import DatabaseEngine
from .errors import PluginError, SessionInterrupted, WindowExceeded, first_line
from .mirror.base import MirrorProvider
from .phases import Mode, Phase
from .plugins import LoadedPlugins, PluginRecord, load_plugins
from .processes import keep_secret
from .registry import Registry
from .targets.base import Target

if TYPE_CHECKING:
    from .catalog.base import Catalog, SessionSummary
    from .config import Config
    from .session import Session

T = TypeVar("T", bound=type)

log = logging.getLogger("splitmirror.hooks")

#: What the session's signal guard raises wherever the session is, an observer included: a
#: signal or the window limit, never an observer's failure.
_STOPS = (SessionInterrupted, WindowExceeded)


class Hooks:
    """What the session engine and the CLI need from plugins, typed.

    ``strict``: an observer that raises fails the session instead of being logged; by default,
    as the plugins were loaded (``SPLITMIRROR_STRICT_PLUGINS``).
    """

    def __init__(self, plugins: LoadedPlugins | None = None, *, strict: bool | None = None) -> None:
        self.plugins = plugins if plugins is not None else load_plugins()
        self.strict = self.plugins.strict if strict is None else strict
        self._hook = self.plugins.pm.hook
        self._observers: dict[
            str, tuple[tuple[pluggy.HookImpl, ...], list[tuple[str, pluggy.HookCaller]]]
        ] = {}
        self._logged: set[tuple[str, str]] = set()  # (plugin, hook) whose failure was logged
        self._late: list[PluginError] = []  # strict mode's failures after an outcome was recorded

    def _alone(self, hook_name: str, plugin_name: str) -> pluggy.HookCaller:
        """``hook_name`` as one plugin implements it, without the others (its wrappers kept)."""
        pm = self.plugins.pm
        others = [plugin for name, plugin in pm.list_name_plugin() if name != plugin_name]
        return pm.subset_hook_caller(hook_name, remove_plugins=others)

    # -- registries -------------------------------------------------------------------------

    def _collect(
        self, hook_name: str, family: str, check: Callable[[Registry[Any]], None] | None = None
    ) -> Registry[Any]:
        """Call each plugin's register hook on its own, so we know who registered what.

        Plugins are asked in registration order, built-ins first whatever ``tryfirst`` or
        ``trylast`` says, so a plugin cannot take a built-in's name.  A plugin whose hook raises,
        or that registers a name already taken, is reported (``splitmirror plugins``) and
        contributes nothing; the others still load.
        """
        registry: Registry[Any] = Registry(family)
        implementations = getattr(self._hook, hook_name).get_hookimpls()
        for plugin in sorted((i.plugin_name for i in implementations), key=lambda p: not self._builtin(p)):
            offered: list[type] = []
            try:
                self._alone(hook_name, plugin)(register=offered.append)
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
        return self._collect("splitmirror_register_engines", "database engine", _engines_well_formed)

    @functools.cached_property
    def mirrors(self) -> Registry[type[MirrorProvider]]:
        return self._collect("splitmirror_register_mirrors", "mirror provider")

    @functools.cached_property
    def targets(self) -> Registry[type[Target]]:
        return self._collect("splitmirror_register_targets", "target")

    @functools.cached_property
    def catalogs(self) -> Registry[type[Catalog]]:
        return self._collect("splitmirror_register_catalogs", "catalog")

    def engine_for_url(self, url: str) -> type[DatabaseEngine]:
        scheme = urlsplit(url).scheme.split("+", 1)[0].lower()
        for _name, entry in self.engines.entries():
            if scheme in entry.cls.url_schemes:
                return entry.cls
        schemes = sorted(s for _n, e in self.engines.entries() for s in e.cls.url_schemes)
        broken = [r.name for r in self.plugins.records if r.error]
        if broken:  # the engine may be there, in a plugin that failed to load
            raise PluginError(
                f"no loaded database engine handles {scheme or 'this'}:// URLs (loaded: "
                f"{', '.join(schemes) or 'none'}), and plugin(s) {', '.join(broken)} failed to load; "
                "`splitmirror plugins` says why"
            )
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
        self._broadcast("splitmirror_phase_started", session=session, phase=phase)

    def phase_finished(
        self, session: Session, phase: Phase, duration_s: float, error: BaseException | None
    ) -> None:
        self._broadcast(
            "splitmirror_phase_finished",
            late=True,
            session=session,
            phase=phase,
            duration_s=duration_s,
            error=error,
        )

    def progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
        self._broadcast("splitmirror_progress", session=session, phase=phase, done=done, total=total)

    def session_finished(self, session: Session, summary: SessionSummary) -> None:
        self._broadcast("splitmirror_session_finished", late=True, session=session, summary=summary)

    def _broadcast(self, hook_name: str, *, late: bool = False, **kwargs: Any) -> None:
        """Tell every observer, each on its own and in pluggy's order: one that raises (a mail
        server down, a broken progress bar) is logged and the others still hear; the session
        goes on.  In strict mode its failure raises, as a :class:`PluginError` naming it, or,
        ``late`` (the outcome it reports is already recorded), is kept for
        :meth:`take_late_failures`."""
        for plugin, caller in self._one_by_one(hook_name):
            try:
                caller(**kwargs)
            except _STOPS:
                raise
            except Exception as error:
                if self.strict:
                    failure = PluginError(
                        f"plugin {plugin!r} failed in {hook_name}: {type(error).__name__}: "
                        f"{first_line(error)} (strict plugin mode)"
                    )
                    failure.__cause__ = error
                    if not late:
                        raise failure from error
                    self._late.append(failure)
                elif (plugin, hook_name) not in self._logged:
                    self._logged.add((plugin, hook_name))
                    log.exception(
                        "plugin %r failed in %s; the session goes on (its further failures there are "
                        "not logged)",
                        plugin,
                        hook_name,
                    )

    def take_late_failures(self) -> list[PluginError]:
        """Strict mode's observer failures reported after an outcome was recorded; cleared."""
        late, self._late = self._late, []
        return late

    def _one_by_one(self, hook_name: str) -> list[tuple[str, pluggy.HookCaller]]:
        """Each observer of ``hook_name`` alone, in pluggy's calling order (the last registered
        first); kept until a plugin comes or goes, since progress is reported often."""
        implementations = tuple(getattr(self._hook, hook_name).get_hookimpls())
        known = self._observers.get(hook_name)
        if known is None or known[0] != implementations:
            callers = [
                (i.plugin_name, self._alone(hook_name, i.plugin_name)) for i in reversed(implementations)
            ]
            known = self._observers[hook_name] = (implementations, callers)
        return known[1]

    def emergency_release(
        self, config: Config, phase: str, engine_state: Mapping[str, Any] | None
    ) -> list[str]:
        """Every plugin's ``splitmirror_emergency_release``, each on its own (the watchdog must
        not stop at the first that fails); returns one sentence per failure."""
        failures = []
        for implementation in self._hook.splitmirror_emergency_release.get_hookimpls():
            plugin = implementation.plugin_name
            try:
                self._alone("splitmirror_emergency_release", plugin)(
                    config=config, phase=phase, engine_state=engine_state
                )
            except Exception as error:  # noqa: BLE001 - reported; the other plugins still run
                failures.append(f"plugin {plugin}: {first_line(error)}")
        return failures

    # -- registering plugins at run time (tests, the CLI's own observers) ------------------

    def register(self, plugin: object, name: str) -> Callable[[], None]:
        """Register an in-process plugin (an observer); returns the function that removes it,
        and its record (``splitmirror plugins``) with it."""
        record = PluginRecord(name, "<in-process>", "", builtin=False)
        self.plugins.records.append(record)
        self.plugins.pm.register(plugin, name=name)

        def remove() -> None:
            if self.plugins.pm.is_registered(plugin):  # a plugin found broken is unregistered
                self.plugins.pm.unregister(plugin)
            self.plugins.records[:] = [r for r in self.plugins.records if r is not record]

        return remove


def _engines_well_formed(registry: Registry[Any]) -> None:
    """A URL scheme picks exactly one engine, and every engine declares modes it can enter."""
    seen: dict[str, str] = {}
    for name, entry in registry.entries():
        modes = entry.cls.modes
        if not isinstance(modes, tuple) or not modes or not all(isinstance(m, Mode) for m in modes):
            raise PluginError(
                f"engine {name!r} declares modes = {modes!r}; declare a non-empty tuple of "
                "splitmirror.api.Mode members, e.g. (Mode.FREEZE,)"
            )
        keep_secret(entry.cls.secret_variables)
        for scheme in entry.cls.url_schemes:
            if scheme in seen:
                raise PluginError(
                    f"URL scheme {scheme!r} is claimed by both engine {seen[scheme]!r} and engine "
                    f"{name!r}; block one with SPLITMIRROR_BLOCK_PLUGINS"
                )
            seen[scheme] = name
