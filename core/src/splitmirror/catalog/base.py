"""What the catalog stores and the interface any catalog (SQLite today, PostgreSQL later) offers."""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

STARTED, DONE, FAILED = "STARTED", "DONE", "FAILED"


def utc_now() -> str:
    """A timestamp as the catalog (and the manifest) records it: ISO 8601, UTC, milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclasses.dataclass(frozen=True)
class PhaseRecord:
    name: str
    started_at: str  # ISO 8601, UTC
    duration_ms: float
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """One archive member: a database file, window WAL, metadata, or the manifest."""

    seq: int
    member: str
    path: str  # where it lived on the primary ("" for generated members)
    logical_key: tuple[int | str, ...]
    role: str
    size: int
    sha256: str
    offset: int  # archive offset of the member's header
    read_method: str  # "file" (through the mirror's filesystem), "extent", "generated"
    extents: list[tuple[int, int, int]] | None = None  # (logical, physical, length) when by extent

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["logical_key"] = list(self.logical_key)
        return data


@dataclasses.dataclass
class SessionSummary:
    """A session as ``list``/``show``/``backup --json`` report it."""

    id: int
    name: str
    status: str
    mode: str
    database: str  # engine name
    database_url: str  # password redacted
    config: str
    started_at: str
    finished_at: str | None = None
    window_ms: float | None = None
    #: Of the window, how long the database's writers were held (docs/cli.md, "The window and
    #: the writers"); None before QUIESCE, and in rows from before the column existed.
    blocked_ms: float | None = None
    failed_phase: str | None = None
    error: str | None = None
    files: int = 0
    bytes: int = 0
    archive: str | None = None
    server_version: str = ""
    label: str = ""
    redo_range: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: ``None`` while the archive is kept; ``PRUNING`` once ``prune`` chose to delete it (the
    #: archive may still be there), ``PRUNED`` once it is gone (docs/operations.md).
    pruned: str | None = None
    pruned_at: str | None = None
    pruned_why: str | None = None
    phases: list[PhaseRecord] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["redo_range"] = dict(self.redo_range)
        data["stats"] = dict(self.stats)
        return data


PRUNING, PRUNED = "PRUNING", "PRUNED"


@dataclasses.dataclass(frozen=True)
class DrillRecord:
    """One ``splitmirror drill``: an archive restored into a scratch place, its database started
    and checked there (:mod:`splitmirror.drill`)."""

    id: int
    session_id: int
    name: str  # the configuration's [session] name
    status: str  # RUNNING, PASSED, FAILED
    started_at: str
    finished_at: str | None = None
    duration_ms: float | None = None
    route: str = ""  # how the database was started: "host", "container", or "" (no server)
    checks: list[str] = dataclasses.field(default_factory=list)  # what was checked, in words
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Catalog(abc.ABC):
    """Where sessions are recorded.  Every write is its own transaction, so a crash mid-session
    leaves a row that says ``STARTED`` (never ``DONE``) and the catalog still opens."""

    @abc.abstractmethod
    def start_session(
        self, *, name: str, mode: str, database: str, database_url: str, config: str, started_at: str
    ) -> int:
        """Insert a ``STARTED`` row and return its id."""

    @abc.abstractmethod
    def record_phase(self, session_id: int, phase: PhaseRecord) -> None: ...

    @abc.abstractmethod
    def update_session(self, session_id: int, **fields: Any) -> None:
        """Set summary columns (``window_ms``, ``blocked_ms``, ``archive``, ``server_version``, ...)."""

    @abc.abstractmethod
    def add_files(self, session_id: int, files: Iterable[FileRecord]) -> None: ...

    @abc.abstractmethod
    def finish_session(
        self,
        session_id: int,
        *,
        status: str,
        finished_at: str,
        failed_phase: str | None = None,
        error: str | None = None,
    ) -> None: ...

    @abc.abstractmethod
    def get(self, session_id: int) -> SessionSummary:
        """The session with its phases; :class:`~splitmirror.errors.CatalogError` if unknown."""

    @abc.abstractmethod
    def sessions(
        self, *, database: str | None = None, status: str | None = None, since: str | None = None
    ) -> list[SessionSummary]: ...

    @abc.abstractmethod
    def files(self, session_id: int) -> list[FileRecord]:
        """The session's members in archive order."""

    @abc.abstractmethod
    def mark_pruning(self, session_id: int, *, at: str, why: str) -> None:
        """Record that ``prune`` is deleting the session's archive, before it deletes a byte."""

    @abc.abstractmethod
    def mark_pruned(self, session_id: int, *, at: str) -> None:
        """Record that the session's archive is gone."""

    @abc.abstractmethod
    def start_drill(self, session_id: int, *, name: str, started_at: str) -> int:
        """Insert a ``RUNNING`` drill of the session and return its id."""

    @abc.abstractmethod
    def finish_drill(
        self, drill_id: int, *, status: str, finished_at: str, duration_ms: float, route: str,
        checks: list[str], error: str | None,
    ) -> None: ...  # fmt: skip

    @abc.abstractmethod
    def drills(self, *, name: str | None = None, session_id: int | None = None) -> list[DrillRecord]:
        """Drills, oldest first."""

    def close(self) -> None:  # noqa: B027 - optional: most catalogs hold a connection
        """Release the connection."""
