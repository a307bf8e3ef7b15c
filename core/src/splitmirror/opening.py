"""INIT: from a configuration to the session's :class:`Parts`, taking what a session holds.

In order: the plugins the configuration names (:func:`.preflight.choose`); where the catalog
and the archives lie (:mod:`.placement`), before the locks, whose directory is among what may
be misplaced; the session lock and the mirror's; preflight, connected; the catalog row, once
the rows this configuration's dead sessions left ``STARTED`` are closed
(:mod:`.catalog.abandoned`) and no split on the mirror waits for a backup host
(:func:`split_outstanding`); the target, checked under its real name (none for an off-host
session: a backup host writes the archive).

:class:`Opening` keeps what each step took, so that the session's every way out gives it back,
however far INIT got: :meth:`Opening.close` the plugins, :meth:`Opening.unlock` the lock.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from . import placement, preflight
from .catalog import CatalogAddress, open_catalog
from .catalog.abandoned import fail_abandoned
from .catalog.base import ARCHIVING, FAILED, Catalog, utc_now
from .config import Config, redact_url
from .engine import DatabaseEngine, ServerInfo
from .errors import PreflightError, SessionBusyError, first_line
from .lock import SessionLock
from .mirror.base import MirrorProvider
from .mirror.block import BlockMirror
from .mirror.identity import identity
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
    target: Target | None  # None for an off-host session
    catalog_address: CatalogAddress


class Opening:
    """INIT's steps for one session, and what they took."""

    def __init__(self, config: Config, hooks: Hooks, claim: MirrorClaim, *, off_host: bool = False) -> None:
        self.config, self.hooks, self.claim, self.off_host = config, hooks, claim, off_host
        self.chosen: preflight.Chosen | None = None  # the plugins, once chosen
        self.lock: SessionLock | None = None
        self.parts: Parts | None = None  # once the catalog row exists

    def open(self) -> Parts:
        cfg = self.config
        chosen = self.chosen = preflight.choose(cfg, self.hooks)
        uses_target = not self.off_host and chosen.target_class is not None
        is_file = uses_target and chosen.target_class is not None and chosen.target_class.name == "file"
        misplaced = placement.place_problems(cfg, chosen.catalog_address, is_file, chosen.mirror)
        if misplaced:  # before the locks: their directory is among what may be misplaced
            raise PreflightError(preflight.sentences(misplaced))
        self.lock = SessionLock(chosen.catalog_address.home / "locks", str(cfg.source), cfg.session.name)
        self.lock.acquire()
        self.claim.lock()  # a mirror another session is using: refused before asking anyone anything
        server, problems = preflight.problems(cfg, chosen, self.claim, off_host=self.off_host)
        if problems:
            raise PreflightError(preflight.sentences(problems))
        catalog = open_catalog(chosen.catalog_address, hooks=self.hooks)
        try:
            split_outstanding(catalog, chosen.mirror, cfg.mirror.mirror)
        except BaseException:
            catalog.close()
            raise
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
            target = None
            if uses_target and chosen.target_class is not None:
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
            chosen.engine, chosen.mirror, server, catalog, session_id, target, chosen.catalog_address
        )
        catalog.update_session(session_id, server_version=server.version)
        chosen.mirror.session_id = session_id
        if target is None:
            return parts
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


def split_outstanding(catalog: Catalog, mirror: MirrorProvider, device: Path) -> None:
    """A block mirror holding a split that a backup host has not archived yet must not be
    synchronised: the sync would overwrite the image it reads.  Whichever database host handed
    it over (two hosts configured with one mirror), the session stops here, before SYNC."""
    if not isinstance(mirror, BlockMirror):
        return
    try:
        named = identity(device)
    except PreflightError:
        return  # a disk without a name was never handed over (preflight refuses off-host then)
    for waiting in catalog.handovers(identity=named, outstanding=True):
        how = (
            "being archived by " + str(waiting.worker)
            if waiting.state == ARCHIVING
            else "waiting for a backup host"
        )
        raise SessionBusyError(
            f"the mirror {device} holds session {waiting.session_id}'s split (handed over by "
            f"{waiting.host} at {waiting.handed_at}), {how}; a sync now would overwrite it: let "
            "`splitmirror archive` on a backup host finish it (or give it up with "
            f"`splitmirror catalog release {waiting.session_id}`), then run the session again"
        )
