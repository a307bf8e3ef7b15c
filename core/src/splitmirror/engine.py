"""The interface a database plugin implements: one :class:`DatabaseEngine` subclass per kind.

The session engine drives it through the phases; the plugin never sees the mirror or the
archive.  Every method that runs inside the window must be quick: the window is the outage.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pydantic

from .drillcopy import DrillCopy, DrillFailed
from .phases import Mode
from .restore_steps import RestoreStep


class NoOptions(pydantic.BaseModel):
    """Engines without engine-specific ``[database]`` keys use this; unknown keys are errors."""

    model_config = pydantic.ConfigDict(extra="forbid")


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """What :meth:`DatabaseEngine.connect` found: shown by ``check`` and stored in the catalog."""

    kind: str
    version: str
    flavour: str = ""


@dataclasses.dataclass(frozen=True)
class DatabaseFile:
    """One file of the database as the database itself identifies it.

    ``logical_key`` orders the archive (``docs/archive.md``, "Order"): a tuple the plugin
    chooses, e.g. PostgreSQL's (tablespace, database, relfilenode, segment) or SQLite's (0,) for
    the main file.  ``role`` is free text for people (``data``, ``wal``, ``journal``,
    ``label``...).

    ``may_vanish``: the database may remove this file while the session runs and its redo log
    recreates or removes it at restore (PostgreSQL's relation files under HOT_BACKUP: a table
    dropped during the backup).  Such a file missing at CHECK or from the split mirror is left
    out and listed in the session's stats (``vanished``), as pg_basebackup does; any other file
    missing fails the session.
    """

    path: Path
    logical_key: tuple[int | str, ...]
    role: str = "data"
    may_vanish: bool = False


@dataclasses.dataclass(frozen=True)
class ExtraMember:
    """Bytes the plugin produces itself (a backup label, a control file copy) for the archive.

    With ``path`` (where the bytes belong on the primary, e.g. ``DATADIR/backup_label``) the
    member is named by that path's place in the archive, as a database file would be, so it
    lands beside the database's files even when the primary holds more than the data
    directory; without it the member is ``name`` at the archive's root."""

    name: str
    data: bytes
    logical_key: tuple[int | str, ...]
    role: str = "metadata"
    path: Path | None = None


@dataclasses.dataclass(frozen=True)
class UnquiesceResult:
    """What leaving the mode returns: everything the restore needs that the files do not say.

    ``label`` and ``redo_range`` go into the manifest and the catalog.  After the database files
    the archive gets ``window_files`` (read from the split mirror), then ``collected_files`` (read
    where they are on the primary, after the window: redo/WAL written between the split and
    the end of the mode, which the mirror cannot hold; the engine keeps them from being
    recycled until :meth:`DatabaseEngine.close`), then ``extra_members`` (labels).
    """

    label: str = ""
    redo_range: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extra_members: Sequence[ExtraMember] = ()
    window_files: Sequence[DatabaseFile] = ()
    collected_files: Sequence[DatabaseFile] = ()


@dataclasses.dataclass(frozen=True)
class PreflightProblem:
    """A reason the session cannot start, with the fix in plain language."""

    what: str
    fix: str

    def sentence(self) -> str:
        return f"{self.what}; {self.fix}"


class DatabaseEngine(abc.ABC):
    """A database kind.  Subclasses are registered through ``splitmirror_register_engines``.

    Lifecycle within one session: ``__init__`` (no I/O) → :meth:`connect` → :meth:`preflight`
    → :meth:`layout` → :meth:`before_window` (twice where the mirror has a last pre-copy
    pass) → :meth:`quiesce` → :meth:`discover` →
    :meth:`prepare` → :meth:`unquiesce` → :meth:`close`.  On any failure after :meth:`quiesce` was called the
    session calls :meth:`abort` instead of :meth:`unquiesce`, then :meth:`close`.
    """

    #: Short name shown by ``splitmirror plugins`` and stored in the catalog.
    name: ClassVar[str]
    #: URL schemes this engine handles, e.g. ``("sqlite",)``.
    url_schemes: ClassVar[tuple[str, ...]]
    #: Pydantic model validating the engine-specific keys of ``[database]``.
    options_model: ClassVar[type[pydantic.BaseModel]] = NoOptions
    #: The modes this engine can enter.  A configuration asking for another is refused as a
    #: configuration error (exit 2) by ``check`` and INIT, before anything connects; an engine
    #: that can only hold writes (an embedded database without a redo log) declares
    #: ``(Mode.FREEZE,)``.
    modes: ClassVar[tuple[Mode, ...]] = (Mode.FREEZE, Mode.HOT_BACKUP)

    def __init__(self, url: str, options: pydantic.BaseModel) -> None:
        self.url = url
        self.options = options

    @abc.abstractmethod
    def connect(self) -> ServerInfo:
        """Open the connection(s) the session holds; raise :class:`~splitmirror.errors.PreflightError`
        with a plain sentence when the database cannot be reached."""

    @abc.abstractmethod
    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        """Everything that would stop ``mode`` from working, checked without changing anything."""

    @abc.abstractmethod
    def layout(self) -> list[Path]:
        """The files the database uses as known before quiescing: MAP's candidates."""

    def before_window(self, mode: Mode) -> None:  # noqa: B027 - optional: most engines have nothing to do early
        """End of SYNC, before the mirror's last pre-copy pass, and where the mirror has one,
        again after it, right before QUIESCE: do now what entering ``mode`` would otherwise do
        inside the window, while the database still runs (PostgreSQL checkpoints: the pages
        the first checkpoint writes are copied by that last pass, and the second writes what
        was dirtied during it, so that the checkpoint of ``pg_backup_start`` inside the window
        has next to nothing left to write).  Must hold nothing: the database is not quiesced
        yet; may be called twice.  Nothing by default."""

    @abc.abstractmethod
    def quiesce(self, mode: Mode) -> None:
        """Enter ``mode``.  Either succeed or leave nothing held (the session still calls abort)."""

    def holds_writers(self, mode: Mode) -> bool:
        """Asked once :meth:`quiesce` has returned: does the mode, as entered, hold any of the
        database's writers until :meth:`unquiesce`?  It says what ``blocked_ms`` counts besides
        filesystem freezes.  FREEZE does by definition; an engine whose HOT_BACKUP locks some
        tables all the same (MySQL's tables outside InnoDB) says so."""
        return mode is Mode.FREEZE

    @abc.abstractmethod
    def discover(self) -> list[DatabaseFile]:
        """The files that make up the database now, from the database's own catalog."""

    def prepare(self) -> Mapping[str, Any]:
        """Prepare the set (labels, start positions); returns metadata for the manifest."""
        return {}

    def collected_paths(self, mode: Mode) -> list[Path]:
        """Paths under the primary (directories or files) whose files ``mode`` archives from the
        primary after the window (:attr:`UnquiesceResult.collected_files`) and never reads from
        the split image: SPLIT's final pass, inside the window, need not bring them up to date
        (PostgreSQL's ``pg_wal`` in HOT_BACKUP, written fastest of all).  None by default."""
        return []

    def freeze_paths(self, mode: Mode) -> list[Path]:
        """Directories whose filesystems SPLIT must freeze for the final pass of ``mode`` (FIFREEZE).

        Empty when the mode itself makes a non-atomic copy safe (SQLite under its own locks,
        PostgreSQL HOT_BACKUP replaying WAL).
        """
        return []

    @abc.abstractmethod
    def unquiesce(self) -> UnquiesceResult:
        """Leave the mode normally and say what the restore needs."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Leave the mode on a failure path.  Idempotent, safe if quiesce never finished."""

    @classmethod
    def prepare_restore(cls, directory: Path, manifest: Mapping[str, Any]) -> Sequence[RestoreStep]:
        """Restore preparation: make the restored ``directory`` startable as a database (write
        labels, drop stale files) and return what the DBA runs next (:mod:`splitmirror.restore_steps`).

        The steps must start the copy *as they stand*: every server option that recovery depends
        on (what the server ran with: a binary log, a page size) belongs in them, because the
        contract suite's restore drill executes them and adds no option of its own.  A class
        method: a restore runs where the original database may not exist, so there is no URL to
        connect to; ``manifest`` is the archive's manifest (``docs/archive.md``, "The manifest";
        what :meth:`prepare` returned is its ``metadata``); paths in it are the live ones, and
        :mod:`splitmirror.restored_paths` says where they are in ``directory``.
        """
        return []

    #: Environment variables holding the database's password (``PGPASSWORD``): left out of the
    #: environment of every program splitmirror runs for the site (notifier, target commands).
    secret_variables: ClassVar[tuple[str, ...]] = ()
    #: The port the server listens on inside its image (5432, 3306): a drill in a container
    #: publishes it on 127.0.0.1.  ``None`` for an embedded database, opened in place.
    drill_port: ClassVar[int | None] = None

    @classmethod
    def drill_environment(cls, port: int, scratch: Path) -> Mapping[str, str]:
        """Variables under which the *host* restore steps start the copy out of the live
        server's way: on ``port`` (``PGPORT``, ``MYSQL_TCP_PORT``), with any socket or lock file
        in ``scratch`` (a directory of the drill's own).  Plumbing a DBA's shell has anyway: the
        steps themselves run as printed (:mod:`splitmirror.testing.steps`)."""
        return {}

    @classmethod
    def drill_check(cls, copy: DrillCopy) -> list[str]:
        """``splitmirror drill``: wait until the started ``copy`` answers (by ``copy.deadline``),
        run the database's own integrity check and ``copy.query``, and return what was checked,
        one phrase each (``"PRAGMA integrity_check: ok (orders.db)"``).  Raise
        :class:`~splitmirror.drillcopy.DrillFailed` with one sentence when the copy does not open
        or a check fails.  Engines without it cannot be drilled (the drill says so)."""
        raise DrillFailed(f"the {cls.name} engine cannot check a restored copy: it has no drill_check")

    @classmethod
    def drill_stop(cls, copy: DrillCopy) -> None:
        """Stop a copy the host steps started as a daemon of its own (``pg_ctl ... stop``).  A
        ``start`` step's process group is ended by the drill itself, and a container removed:
        nothing to do by default."""
        return None

    def emergency_state(self) -> Mapping[str, Any] | None:
        """What a fresh process needs to release this engine's hold if the session's process
        dies or hangs in the window (JSON-able, never a password), or None when the database
        lets go by itself once the connection closes (the default: SQLite's locks, PostgreSQL's
        non-exclusive backup, MariaDB's BACKUP STAGE).  Asked before and after :meth:`quiesce`."""
        return None

    @classmethod
    def emergency_release(
        cls, url: str, options: pydantic.BaseModel, state: Mapping[str, Any] | None
    ) -> None:
        """Run by the watchdog (:mod:`splitmirror.watchdog`), in its own process, after the
        session's process died or was killed in the window: open a fresh connection and end
        what :meth:`emergency_state` described (Oracle's ``END BACKUP`` / ``RESUME``, killing
        a backend that may linger).  Must be idempotent and quick.  Nothing to do by default."""
        return None

    def close(self) -> None:  # noqa: B027 - optional for engines without connections
        """Close every connection; called last on every path."""
