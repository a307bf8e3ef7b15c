"""What the catalog stores and the interface every catalog offers: the built-in SQLite file, and
those plugins register (``splitmirror_register_catalogs``; the PostgreSQL catalog a fleet shares).

``splitmirror.testing.catalog_contract`` is the test suite every implementation passes."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .address import CatalogAddress

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
    #: The host that ran it: an off-host session's BACKUP and CLEANUP run on a backup host.
    host: str = ""


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

#: The summary columns :meth:`Catalog.update_session` sets; any other name is a ValueError.
UPDATABLE = frozenset(
    {"window_ms", "blocked_ms", "files", "bytes", "archive", "server_version", "label", "redo_range", "stats"}
)

#: What a drill whose process died is closed with (:meth:`Catalog.drill_started`).
DRILL_ABANDONED = "its process ended without recording an outcome (killed, crashed, or the machine went down)"


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


#: A hand-over's states: waiting for a backup host, being archived by one (under a lease), and
#: the two ends, after which the database host's next session may resynchronise the mirror.
WAITING, ARCHIVING, ARCHIVED = "WAITING", "ARCHIVING", "ARCHIVED"
OUTSTANDING = (WAITING, ARCHIVING)


@dataclasses.dataclass(frozen=True)
class Handover:
    """A split a database host handed over for a backup host to archive (docs/fleet.md)."""

    session_id: int
    identity: str  # the mirror's identity: "wwn:...", "serial:...", "loop:/backing/file", ...
    state: str  # WAITING, ARCHIVING, ARCHIVED, FAILED
    host: str  # the database host that split
    handed_at: str
    #: What BACKUP needs, without the database: the files in archive order with their extent
    #: maps, the manifest's fixed part (:mod:`splitmirror.handover`).
    record: Mapping[str, Any]
    worker: str | None = None  # "host:pid" of the backup host archiving it, while it does
    attempts: int = 0  # claims so far (a worker that died leaves it to the next)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("record")
        return data


class Catalog(abc.ABC):
    """Where sessions are recorded.  Every write is its own transaction, so a crash mid-session
    leaves a row that says ``STARTED`` (never ``DONE``) and the catalog still opens.

    A catalog plugin's class also names itself (``name``) and the URL schemes it opens
    (``url_schemes``), and is built by :meth:`open`.  Many processes, on many hosts for a shared
    catalog, write at once: each method is safe against that on its own.
    """

    name: ClassVar[str]
    #: The URL schemes this catalog opens (``postgresql``); the SQLite catalog opens paths.
    url_schemes: ClassVar[tuple[str, ...]] = ()

    #: Where it is; sentences name it by ``address.shown`` (never a password).
    address: CatalogAddress

    @classmethod
    @abc.abstractmethod
    def open(cls, address: CatalogAddress, *, create: bool) -> Catalog:
        """Connect, creating the schema (``create``) or refusing a catalog that is not there
        (reading commands: a wrong address is never a new, empty catalog), and migrating it to
        this version's schema; :class:`~splitmirror.errors.CatalogError` in one sentence if not."""

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

    @abc.abstractmethod
    def one_prune_at_a_time(self, wait: float) -> contextlib.AbstractContextManager[None]:
        """Hold the catalog's prune lock, for every host that uses the catalog: two prunes would
        race each other's deletions and rows.  Waits up to ``wait`` seconds for another prune,
        then raises :class:`~splitmirror.errors.SessionBusyError`."""

    @abc.abstractmethod
    def drill_started(
        self, session_id: int, *, name: str, started_at: str, abandoned: Callable[[int], None]
    ) -> tuple[int, Callable[[], None]]:
        """Close every ``RUNNING`` drill whose process is gone as ``FAILED`` (handing its id to
        ``abandoned``, which removes what it left), then start this drill's ``RUNNING`` row,
        held as alive until the returned function is called (after its outcome is recorded).
        Returns the drill's id and that function."""

    @abc.abstractmethod
    def copy_in(
        self, session: SessionSummary, files: Sequence[FileRecord], drills: Sequence[DrillRecord]
    ) -> None:
        """Add a session of another catalog, its phases, files and drills, under the ids it had
        there (archives are named by session id), for ``splitmirror catalog copy``; a session
        id already taken is a :class:`~splitmirror.errors.CatalogError`."""

    # -- off-host backup: splits handed over from database hosts to backup hosts ------------

    @abc.abstractmethod
    def hand_over(
        self,
        session_id: int,
        *,
        identity: str,
        host: str,
        record: Mapping[str, Any],
        parcels: Sequence[bytes],
    ) -> None:
        """Record session ``session_id``'s split as ``WAITING`` for a backup host, with the bytes
        only the database host could read (``parcels``: files collected from the primary,
        generated members).  A mirror holds one outstanding split: a second hand-over of the
        same ``identity`` is a :class:`~splitmirror.errors.CatalogError`, whichever host."""

    @abc.abstractmethod
    def handovers(
        self, *, identity: str | None = None, outstanding: bool = False, session_id: int | None = None
    ) -> list[Handover]:
        """Hand-overs, oldest first: of one mirror, only ``WAITING``/``ARCHIVING`` ones, of one
        session (each with its record: ask for what you need, a fleet's catalog holds many)."""

    @abc.abstractmethod
    def parcel(self, session_id: int, seq: int) -> bytes:
        """The ``seq``-th (from 0) of the bytes handed over with the split."""

    @abc.abstractmethod
    def claim_split(
        self, *, worker: str, identities: Sequence[str], lease_s: float, session_id: int | None = None
    ) -> Handover | None:
        """Take the oldest split on one of ``identities`` (or session ``session_id``'s) that is
        ``WAITING``, or ``ARCHIVING`` under a lease that ran out (its worker died), for
        ``worker`` for ``lease_s`` seconds; None when there is none.  Workers on many hosts
        claim at once: each split goes to one, and none waits for another's claim."""

    @abc.abstractmethod
    def renew_lease(self, session_id: int, *, worker: str, lease_s: float) -> bool:
        """Extend ``worker``'s lease; False when the split is no longer its (another took it)."""

    @abc.abstractmethod
    def finish_handover(
        self,
        session_id: int,
        *,
        worker: str,
        archived: bool,
        files: Sequence[FileRecord],
        fields: Mapping[str, Any],
        finished_at: str,
        failed_phase: str | None = None,
        error: str | None = None,
    ) -> bool:
        """In one transaction, if ``worker`` still holds the split: its files (replacing any a
        dead worker recorded), the summary ``fields`` (as :meth:`update_session`), the session
        ``DONE`` (``archived``) or ``FAILED``, and the hand-over ``ARCHIVED`` or ``FAILED``, which
        frees the mirror.  False, and nothing changed, when the lease was lost."""

    def close(self) -> None:  # noqa: B027 - optional: most catalogs hold a connection
        """Release the connection."""
