"""INIT: from a configuration to the session's :class:`Parts`, taking what a session holds.

In order: the plugins the configuration names (:func:`.preflight.choose`); where the catalog
and the archives lie (:mod:`.placement`), before the locks, whose directory is among what may
be misplaced; the session lock and the mirror's; preflight, connected; the catalog row, once
the rows this configuration's dead sessions left ``STARTED`` are closed
(:mod:`.catalog.abandoned`); the target, checked under its real name.

:class:`Opening` keeps what each step took, so that the session's every way out gives it back,
however far INIT got: :meth:`Opening.close` the plugins, :meth:`Opening.unlock` the lock.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from . import placement, preflight
from .catalog.abandoned import fail_abandoned
from .catalog.base import FAILED, Catalog, utc_now
from .catalog.sqlite import SqliteCatalog
from .config import Config, redact_url
from .engine import DatabaseEngine, ServerInfo
from .errors import PreflightError, first_line
from .lock import SessionLock
from .mirror.base import MirrorProvider
from .mirror.ownership import MirrorClaim
from .targets.base import Target

if TYPE_CHECKING:
    from .hooks import Hooks


@dataclasses.dataclass(frozen=True)
class Parts:
    """What INIT builds and every later phase uses: the configuration's plugins, connected, and
    the session's catalog row with the target its archive goes to."""

    engine: DatabaseEngine
    mirror: MirrorProvider
    server: ServerInfo
    catalog: Catalog
    id: int
    target: Target
    catalog_path: Path


class Opening:
    """INIT's steps for one session, and what they took."""

    def __init__(self, config: Config, hooks: Hooks, claim: MirrorClaim) -> None:
        self.config, self.hooks, self.claim = config, hooks, claim
        self.chosen: preflight.Chosen | None = None  # the plugins, once chosen
        self.lock: SessionLock | None = None
        self.parts: Parts | None = None  # once the catalog row exists

    def open(self) -> Parts:
        cfg = self.config
        chosen = self.chosen = preflight.choose(cfg, self.hooks)
        is_file = chosen.target_class.name == "file"
        misplaced = placement.place_problems(cfg, chosen.catalog_path, is_file, chosen.mirror)
        if misplaced:  # before the locks: their directory is among what may be misplaced
            raise PreflightError(preflight.sentences(misplaced))
        self.lock = SessionLock(chosen.catalog_path.parent / "locks", str(cfg.source), cfg.session.name)
        self.lock.acquire()
        self.claim.lock()  # a mirror another session is using: refused before asking anyone anything
        server, problems = preflight.problems(cfg, chosen, self.claim)
        if problems:
            raise PreflightError(preflight.sentences(problems))
        catalog = SqliteCatalog(chosen.catalog_path)
        fail_abandoned(catalog, str(cfg.source))
        session_id: int | None = None
        try:
            session_id = catalog.start_session(
                name=cfg.session.name,
                mode=cfg.database.mode.value,
                database=chosen.engine.name,
                database_url=redact_url(cfg.database.url),
                config=str(cfg.source),
                started_at=utc_now(),
            )
            target = preflight.make_target(cfg, chosen.target_class, session_id)
        except BaseException as error:  # a row without its parts: the session cannot record it later
            if session_id is not None:
                catalog.finish_session(
                    session_id,
                    status=FAILED,
                    finished_at=utc_now(),
                    failed_phase="INIT",
                    error=first_line(error),
                )
            raise
        parts = self.parts = Parts(
            chosen.engine, chosen.mirror, server, catalog, session_id, target, chosen.catalog_path
        )
        catalog.update_session(session_id, server_version=server.version)
        chosen.mirror.session_id = session_id
        problems = target.preflight()  # the real name, now that the session has its id
        if target.name == "file":
            problems += placement.archive_problems(cfg, Path(target.path))
        if problems:
            raise PreflightError(preflight.sentences(problems))
        return parts

    def close(self) -> None:
        """Close the plugins (the engine's connection, what the mirror holds), if chosen."""
        if self.chosen is not None:
            self.chosen.close()

    def unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
