"""What a database engine is given to check a restored copy in ``splitmirror drill``.

The drill (:mod:`splitmirror.drill`) restores an archive into a scratch directory and starts
the database there *by the engine's own restore steps*, on this host or in a container, out of
the live server's way (another port, another socket).  Then it hands the engine a
:class:`DrillCopy`: where the copy is, how to reach it, how long it may take to open, and the
user's query.  The engine's :meth:`~splitmirror.engine.DatabaseEngine.drill_check` waits until the
copy answers, runs the database's own integrity check (``PRAGMA integrity_check``, ``pg_amcheck``,
``CHECK TABLE``) and the query, and says in words what it checked; a copy that does not open,
or fails a check, is a :class:`DrillFailed` sentence.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic

from .errors import SplitmirrorError

#: How the copy was started: by the host steps, by the container step, or not at all (an
#: embedded database is opened in place).
DrillRoute = Literal["host", "container", ""]


class DrillFailed(SplitmirrorError):
    """The restored copy did not open, or failed a check: one sentence saying which and why."""


@dataclasses.dataclass(frozen=True)
class DrillCopy:
    """A restored copy, started (unless :attr:`route` is ``""``), for the engine to check."""

    #: The restore directory (the archive's members under it, as ``restore`` writes them).
    directory: Path
    #: The archive's manifest (docs/archive.md); :mod:`splitmirror.restored_paths` finds the
    #: live paths it names inside :attr:`directory`.
    manifest: Mapping[str, Any]
    route: DrillRoute
    #: Where the copy listens: 127.0.0.1 and a free port on this host (the container's port is
    #: published there); ``None`` for an embedded database.
    host: str | None
    port: int | None
    #: The session's ``[database] url``, for the user and database names; the password comes
    #: from where the backup's came from (the environment, a password file), never from here.
    url: str
    #: The engine's ``[database]`` options, validated by its ``options_model``.
    options: pydantic.BaseModel
    #: ``[drill] query``: the DBA's own question to the copy, which must run without error.
    query: str | None
    #: The ``time.monotonic()`` by which the copy must have answered and been checked.
    deadline: float
    #: ``PATH`` with ``[drill] binaries`` first: where the engine finds its client programs.
    path: str
    #: Whether the copy may still come up: False once its container, or the process a ``start``
    #: step runs, has ended, so a copy that died is not waited on until the deadline.  (A
    #: daemon the host steps leave, such as ``pg_ctl``'s, is the engine's to watch.)
    running: Callable[[], bool] = lambda: True

    def left(self) -> float:
        """Seconds until :attr:`deadline` (0 when past)."""
        return max(0.0, self.deadline - time.monotonic())


def answer(rows: Sequence[Sequence[Any]]) -> str:
    """A query's result as a drill reports it: how many rows, and the first (cut short)."""
    if not rows:
        return "no rows"
    first = ", ".join(str(value) for value in rows[0])
    first = first if len(first) <= 80 else first[:79] + "…"
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''}, the first: {first}"
