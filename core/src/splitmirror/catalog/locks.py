"""The SQLite catalog's locks, in the ``locks/`` directory beside it (where the session locks
are too), named after the catalog file, so several catalogs in one directory never share one
(a catalog shared by many hosts keeps these locks in itself instead):

- ``CATALOG.prune.lock``: one prune of the catalog at a time (:func:`one_prune_at_a_time`);
- ``CATALOG.drill-ID.lock``: held by the process running drill ID, so a ``RUNNING`` row whose lock
  nobody holds belongs to a process that is gone (:func:`drill_started`);
- ``CATALOG.drills.lock``: held while a drill's row and lock are made, and while a finished one's
  lock is removed, so no drill is ever taken for dead between the two.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import SessionBusyError
from ..paths import ensure_private_dir
from .base import DRILL_ABANDONED, FAILED, Catalog, utc_now

#: How long ``prune`` waits for another prune of its catalog (two nightly timers ending together).
PRUNE_WAIT_S = 600.0


def _lock(catalog_path: Path, what: str) -> Path:
    locks = catalog_path.parent / "locks"
    ensure_private_dir(locks)
    return locks / f"{catalog_path.name}.{what}.lock"


@contextlib.contextmanager
def _flocked(path: Path, *, wait: float | None = None) -> Iterator[bool]:
    """Hold ``path``'s lock; with ``wait``, give up after that many seconds (yields False)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.2)
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def one_prune_at_a_time(catalog_path: Path, wait: float = PRUNE_WAIT_S) -> Iterator[None]:
    """Hold the catalog's prune lock: two prunes would race each other's deletions and rows.
    Another prune's end is waited for up to ``wait`` seconds."""
    with _flocked(_lock(catalog_path, "prune"), wait=wait) as held:
        if not held:
            raise SessionBusyError(
                f"another prune of the catalog {catalog_path} has run for more than {wait:g}s; let it "
                "finish, then prune again"
            )
        yield


def drill_started(
    catalog: Catalog, catalog_path: Path, start: Callable[[], int], abandoned: Callable[[int], None]
) -> tuple[int, Callable[[], None]]:
    """Close every ``RUNNING`` drill whose lock nobody holds as ``FAILED`` (as INIT does for
    sessions) and hand its id to ``abandoned`` (to remove what it left), then ``start()`` the
    new drill's row and hold its lock.  Returns its id and the function that lets go of the
    lock once the outcome is recorded."""
    with _flocked(_lock(catalog_path, "drills")):
        for drill in catalog.drills():
            lock = _lock(catalog_path, f"drill-{drill.id}")
            if drill.status == "RUNNING" and _nobody_holds(lock):
                catalog.finish_drill(
                    drill.id, status=FAILED, finished_at=utc_now(), duration_ms=0.0, route=drill.route,
                    checks=drill.checks, error=DRILL_ABANDONED,
                )  # fmt: skip
                lock.unlink(missing_ok=True)
                abandoned(drill.id)
        drill_id = start()
        held = _lock(catalog_path, f"drill-{drill_id}")
        fd = os.open(held, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)

    def let_go() -> None:
        with _flocked(_lock(catalog_path, "drills")):
            held.unlink(missing_ok=True)
            os.close(fd)

    return drill_id, let_go


def _nobody_holds(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
