"""Every hook splitmirror calls, in one module.

Plugins implement these with the :data:`splitmirror.impl` marker; nothing is a hook by name
alone.  Four *register* hooks hand the core the objects a plugin provides (database engines,
mirror providers, targets, catalogs).  The rest are for observers: progress bars, metrics, logs,
notifications.  Quiesce and unquiesce are deliberately **not** hooks: pluggy stops at the first
implementation that raises, and a broadcast "unquiesce" would leave databases frozen.  They are
methods of the engine object, bracketed by ``try/finally`` in :mod:`splitmirror.session`.
The four notifications reach each observer on its own; one that raises is logged and the
session goes on, except in strict plugin mode (:class:`splitmirror.hooks.Hooks`).

Every hook is documented in ``docs/hooks.md``; ``tests/test_hook_docs.py`` checks that the
signatures there match these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .catalog.base import Catalog, SessionSummary
    from .config import Config
    from .engine import DatabaseEngine
    from .mirror.base import MirrorProvider
    from .phases import Phase
    from .session import Session
    from .targets.base import Target

PROJECT = "splitmirror"

_spec = pluggy.HookspecMarker(PROJECT)


@_spec
def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
    """Register database engine classes.

    Call ``register(EngineClass)`` once per class.  The class's ``name`` must be unique across
    all plugins and its ``url_schemes`` must not overlap another engine's: a duplicate is an
    error naming both plugins.

    :param register: the callback taking a :class:`~splitmirror.engine.DatabaseEngine` subclass.
    """


@_spec
def splitmirror_register_mirrors(register: Callable[[type[MirrorProvider]], None]) -> None:
    """Register mirror provider classes (``[mirror] provider = NAME`` selects one).

    :param register: the callback taking a :class:`~splitmirror.mirror.base.MirrorProvider`
        subclass.
    """


@_spec
def splitmirror_register_targets(register: Callable[[type[Target]], None]) -> None:
    """Register archive target classes (file, tape, stdout, ...).

    When ``[target] kind`` is not set, the first registered target whose ``accepts(path)``
    is true is used; plugins' targets are asked before the built-in ones.

    :param register: the callback taking a :class:`~splitmirror.targets.base.Target` subclass.
    """


@_spec
def splitmirror_register_catalogs(register: Callable[[type[Catalog]], None]) -> None:
    """Register catalog classes: a ``[session] catalog`` (or ``--catalog``) URL whose scheme is
    among a class's ``url_schemes`` is opened by its ``open``.  File paths are the built-in SQLite
    catalog's.

    :param register: the callback taking a :class:`~splitmirror.catalog.base.Catalog` subclass.
    """


@_spec(firstresult=True)
def splitmirror_phase(session: Session, phase: Phase) -> object | None:
    """Run one phase of ``session``.

    The core's own implementation (``tryfirst=False, trylast=True``) runs the phase body.
    Observers wrap it with ``@impl(wrapper=True)`` to time, log or trace phases::

        @impl(wrapper=True)
        def splitmirror_phase(session, phase):
            started = time.monotonic()
            try:
                return (yield)
            finally:
                record(phase, time.monotonic() - started)

    A non-wrapper implementation returning anything other than ``None`` would replace the core's
    phase body (this is a ``firstresult`` hook: the first non-None answer wins), so observers must
    not do that; the session refuses to run if a phase body was skipped.

    :param session: the running session (read its ``id``, ``config``, ``mode``, ``engine``).
    :param phase: the phase about to run.
    """


@_spec
def splitmirror_phase_started(session: Session, phase: Phase) -> None:
    """A phase is about to start.  Called for every phase, in the order of
    :data:`~splitmirror.phases.PHASE_ORDER`.

    :param session: the running session.
    :param phase: the phase that starts.
    """


@_spec
def splitmirror_phase_finished(
    session: Session, phase: Phase, duration_s: float, error: BaseException | None
) -> None:
    """A phase ended, successfully (``error is None``) or not.

    :param session: the running session.
    :param phase: the phase that ended.
    :param duration_s: its duration on the monotonic clock, in seconds.
    :param error: the exception that ended it, or ``None``.
    """


@_spec
def splitmirror_progress(session: Session, phase: Phase, done: int, total: int | None) -> None:
    """Bytes done so far in a long phase (SYNC, SPLIT's final pass, BACKUP).

    Called at most every 0.1 s of a phase (the first report at once), whenever ``done``
    reaches a known ``total``, and with the phase's last report when it ends well; still, keep
    implementations cheap: SPLIT calls it inside the window.

    :param session: the running session.
    :param phase: the phase making progress.
    :param done: bytes processed so far in this phase.
    :param total: bytes expected in this phase, or ``None`` when unknown.
    """


@_spec
def splitmirror_session_finished(session: Session, summary: SessionSummary) -> None:
    """The session ended (``summary.status`` is ``DONE`` or ``FAILED``) and the catalog says so.

    :param session: the session that ended.
    :param summary: what the catalog recorded: phases, window, files, bytes, archive.
    """


@_spec
def splitmirror_emergency_release(config: Config, phase: str, engine_state: Mapping[str, Any] | None) -> None:
    """The session's process died, stopped answering, or outlived ``max_window`` before it let go
    of what it held; called by the watchdog (:mod:`splitmirror.watchdog`), in its own process,
    after it thawed every filesystem the session froze and ran the engine's own
    :meth:`~splitmirror.engine.DatabaseEngine.emergency_release`.

    Implement it when your plugin holds something a dead process does not give back by itself:
    a storage array left split or in a backup state, a lease, a mode of a database your plugin
    drives.  Each implementation is called on its own: one raising is reported and the others
    still run.  Be idempotent (the session may have released it already) and quick.

    :param config: the session's configuration (its file, loaded again).
    :param phase: the phase the session was in.
    :param engine_state: what the engine's ``emergency_state()`` last said, or ``None``.
    """
