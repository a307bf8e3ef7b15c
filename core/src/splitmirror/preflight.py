"""Preflight: everything that would stop a session, asked before anything is changed.

``splitmirror check`` is :func:`check`: INIT's questions without the lock, the catalog or any
change.  INIT asks the same (:func:`choose`, then :func:`problems` once it holds the locks) and,
after DISCOVER, asks again whether every file the database uses lies on the primary
(:func:`outside_primary`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import placement
from .budget import Budget
from .catalog.address import CatalogAddress, catalog_address
from .config import Config, plugin_options
from .engine import DatabaseEngine, PreflightProblem, ServerInfo
from .errors import ConfigError, PluginError, PreflightError, SplitmirrorError, first_line
from .mirror.base import MirrorProvider
from .mirror.block import BlockMirror
from .mirror.identity import identity
from .mirror.ownership import MirrorClaim
from .targets.base import Target

if TYPE_CHECKING:
    from .hooks import Hooks

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Chosen:
    """The plugins a configuration names, their options validated; nothing opened yet."""

    engine: DatabaseEngine
    mirror: MirrorProvider
    #: None for an off-host session without a ``[target]`` (a backup host writes the archive).
    target_class: type[Target] | None
    catalog_address: CatalogAddress

    def close(self) -> None:
        """Close the engine and the mirror; closing must not hide the session's outcome."""
        for part in (self.engine, self.mirror):
            with contextlib.suppress(Exception):
                part.close()


@dataclasses.dataclass(frozen=True)
class Checked:
    """What ``splitmirror check`` prints."""

    server: ServerInfo
    problems: list[PreflightProblem]
    notes: list[str]  # the mirror's facts (whether change tracking will be used)


def choose(config: Config, hooks: Hooks) -> Chosen:
    """Pick the plugins the config names and validate their options; no I/O."""
    engine_cls = hooks.engine_for_url(config.database.url)
    if config.database.mode not in engine_cls.modes:
        declared = " or ".join(f'"{mode.value}"' for mode in engine_cls.modes)
        raise ConfigError(
            f"{config.source}: [database] mode: the {engine_cls.name} engine cannot take "
            f'"{config.database.mode.value}" sessions; set mode = {declared}'
        )
    mirror_cls = hooks.mirrors.get(config.mirror.provider)
    engine_options = plugin_options(config, "database", engine_cls.options_model)
    mirror_options = plugin_options(config, "mirror", mirror_cls.options_model)
    engine = _built(config, "database", lambda: engine_cls(config.database.url, engine_options))
    mirror = _built(
        config, "mirror", lambda: mirror_cls(config.mirror.primary, config.mirror.mirror, mirror_options)
    )
    return Chosen(
        engine=engine,
        mirror=mirror,
        target_class=None
        if config.target is None
        else hooks.target_for_path(config.target.path, config.target.kind),
        catalog_address=catalog_address(config.session.catalog),
    )


def _built(config: Config, section: str, make: Callable[[], T]) -> T:
    """A plugin refusing its URL or options raises ``ConfigError`` with what is wrong (``"url: the
    host is missing; write ..."``); the file and section are said here, as for the core's keys."""
    try:
        return make()
    except ConfigError as error:
        raise ConfigError(f"{config.source}: [{section}] {error}") from None


@contextlib.contextmanager
def _plugin(what: str) -> Iterator[None]:
    """A plugin's method failing other than as documented (``PreflightError``, one sentence) is a
    bug in the plugin: said as one, naming it, not as a traceback from ``check``."""
    try:
        yield
    except SplitmirrorError:
        raise
    except Exception as error:
        raise PluginError(
            f"{what} failed with {type(error).__name__}: {first_line(error)}; this is a bug in its "
            "plugin (which should say what is wrong in a PreflightError or PreflightProblem)"
        ) from error


def _asked(what: str, answer: object) -> list[PreflightProblem]:
    if not isinstance(answer, list) or not all(isinstance(p, PreflightProblem) for p in answer):
        raise PluginError(f"{what} returned {answer!r}, not a list of PreflightProblem; a bug in its plugin")
    return answer


def problems(
    config: Config, chosen: Chosen, claim: MirrorClaim, *, off_host: bool = False
) -> tuple[ServerInfo, list[PreflightProblem]]:
    """Connect and ask everyone what would stop the session; changes nothing.  An ``off_host``
    session never looks at a target (the backup host has it) and needs a disk it can name."""
    engine, mirror, mode = chosen.engine, chosen.mirror, config.database.mode
    name, provider = f"the {engine.name} engine's", f"the {config.mirror.provider} mirror's"
    probe = None if off_host or chosen.target_class is None else make_target(config, chosen.target_class, 0)
    is_file = probe is not None and probe.name == "file"
    mirror.own_paths = placement.own_directories(config, chosen.catalog_address, is_file)
    with _plugin(f"{name} connect"):
        server = engine.connect()
    with _plugin(f"{name} preflight"):
        engine_problems = _asked(f"{name} preflight", engine.preflight(mode))
    with _plugin(f"{provider} preflight"):
        mirror_problems = _asked(f"{provider} preflight", mirror.preflight())
    with _plugin(f"{name} layout"):
        layout = engine.layout()
    freezes = engine.freeze_paths(mode)
    return server, [
        *engine_problems,
        *mirror_problems,
        *outside_primary(config, mirror, layout),
        *mirror.freeze_problems(freezes),
        *(probe.preflight() if probe is not None else off_host_problems(config, mirror)),
        *placement.preflight_problems(config, chosen.catalog_address, is_file, freezes, mirror),
        *claim.problems(),
    ]


def off_host_problems(config: Config, mirror: MirrorProvider) -> list[PreflightProblem]:
    """A backup host reads the split by extent from the mirror's disk, which it must be able to
    tell from every other disk (:mod:`.mirror.identity`)."""
    if not isinstance(mirror, BlockMirror):
        return [
            PreflightProblem(
                f"an off-host backup reads the split by extent from the mirror's disk, which the "
                f"{config.mirror.provider} mirror does not give",
                '[mirror] provider = "block" (the mirror a device or LUN the backup host sees too)',
            )
        ]
    try:
        identity(config.mirror.mirror)
    except PreflightError as error:
        return [PreflightProblem(str(error), "see docs/fleet.md")]
    return []


def outside_primary(config: Config, mirror: MirrorProvider, paths: list[Path]) -> list[PreflightProblem]:
    """Database files the mirror cannot carry; checked again after DISCOVER."""
    if not config.mirror.primary.is_dir():
        return []  # the mirror provider already says the primary is missing
    outside = []
    for path in paths:
        try:
            mirror.relative(path)
        except ValueError:
            outside.append(path)
    if not outside:
        return []
    first, real = outside[0], outside[0].resolve()
    where = f"{real} (reached as {first})" if real != first else str(first)
    many = f"{len(outside)} files outside the primary, such as" if len(outside) > 1 else ""
    return [
        PreflightProblem(
            f"the database uses {many or 'a file outside the primary:'} {where}, "
            f"while [mirror] primary is {config.mirror.primary}",
            "set [mirror] primary to a directory holding every database file "
            "(for a server: its data directory, WAL and tablespaces)",
        )
    ]


def check(config: Config, hooks: Hooks, *, take_over_mirror: bool = False) -> Checked:
    """``splitmirror check``: INIT's checks without the lock, the catalog or any change."""
    claim = MirrorClaim(config, take_over=take_over_mirror)
    try:
        chosen = choose(config, hooks)
        try:
            server, found = problems(config, chosen, claim, off_host=config.session.backup == "off-host")
        finally:
            chosen.close()
    finally:
        claim.release()
    return Checked(server, found, [*chosen.mirror.notes(), Budget.describe(config)])


def make_target(config: Config, target_class: type[Target], session_id: int) -> Target:
    """The target of the session ``session_id`` (0: a probe for ``check``), ``[target]`` filled in."""
    assert config.target is not None, "an off-host session makes no target"
    return target_class.for_session(
        config.target, session=session_id, name=config.session.name, timestamp=_timestamp()
    )


def _timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def sentences(found: list[PreflightProblem]) -> str:
    """Problems as the one sentence a :class:`~splitmirror.errors.PreflightError` says."""
    return "; and ".join(problem.sentence() for problem in found)
