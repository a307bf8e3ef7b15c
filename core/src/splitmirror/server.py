"""The foundation of a database *server*'s engine: what PostgreSQL, MySQL/MariaDB and the next
one (Oracle) share, so that a server plugin is mostly its SQL.

A server engine holds one connection for the session (the one that enters the mode: a backup
or a lock ends when it closes), reaches the server's files through ``path_map`` when the server
runs in a container, freezes filesystems for the split, and prints a container route among
its restore steps.  Each of those was once written twice and had drifted (one copy of the path
map normalised its keys, the other did not, so a key with a trailing slash left the data
directory unmapped); here each is written once:

* :data:`PathMap` and :class:`ServerOptions`: ``path_map`` keys normalised at configuration
  time, and a key with ``..`` or without a leading ``/`` refused there (exit 2, one sentence),
  not discovered as an unreadable data directory after connecting; :func:`host_path` maps a
  server path, the longest key first.
* :class:`ServerEngine`: the connection skeleton (``connect`` with the password and
  unreachable-server sentences, ``conn``, ``_one``, ``abort`` that falls back to closing the
  connection, ``close`` that never fails on the way out) and the preflight pieces every server
  needs (an unreadable or foreign data directory, the freeze refusals).
* :func:`ran_in_container`, :func:`outermost_mounts` and :func:`container_steps`: the restore
  steps' container route.

``docs/writing-a-plugin.md`` ("Server engines") says what a subclass writes.
"""

from __future__ import annotations

import abc
import contextlib
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Protocol, TypeVar, cast
from urllib.parse import urlsplit

import pydantic

from .config import Duration, redact_url
from .engine import DatabaseEngine, PreflightProblem, ServerInfo
from .errors import PreflightError, first_line
from .fsfreeze import mount_point
from .phases import Mode
from .restore_steps import RestoreStep

# -- the path map ---------------------------------------------------------------------------


def normalised_path_map(path_map: Mapping[str, Path]) -> dict[str, Path]:
    """``path_map`` with every key in the one form :func:`host_path` compares: absolute, no
    trailing slash, no ``.`` or doubled slashes.  A key a server never reports is refused with
    a sentence naming it and what to write instead (:class:`ValueError`, which configuration
    loading turns into ``FILE: [database] path_map: ...``): a relative key (a server's paths are
    absolute), and one with ``..``, which a symlink on the server's side could make mean something other
    than what it reads like, so it is not guessed at."""
    normalised: dict[str, Path] = {}
    given: dict[str, str] = {}
    for key, host in path_map.items():
        clean = "/" + posixpath.normpath(key).lstrip("/")  # normpath keeps a leading '//'
        if not key.startswith("/"):
            raise ValueError(
                f"the key {key!r} is not an absolute path; write the directory as the server names "
                "it, starting with '/'"
            )
        if ".." in key.split("/"):
            raise ValueError(
                f"the key {key!r} has '..' in it; write the directory as the server names it, "
                f"without '..' (such as {clean!r})"
            )
        if clean in given:
            raise ValueError(
                f"the keys {given[clean]!r} and {key!r} name the same server directory; keep one"
            )
        given[clean] = key
        normalised[clean] = Path(host)
    return normalised


#: ``path_map``'s type: server path → host path, keys normalised (:func:`normalised_path_map`).
PathMap = Annotated[dict[str, Path], pydantic.AfterValidator(normalised_path_map)]


def host_path(path_map: Mapping[str, Path], server_path: str | os.PathLike[str]) -> Path:
    """Where the server's ``server_path`` is on this host: under the longest ``path_map`` key
    that holds it (whole components: ``/data`` does not hold ``/database``), else the path
    itself.  ``path_map`` comes from :data:`PathMap`, its keys already normalised; the server
    path is normalised here (MySQL's ``@@datadir`` ends in ``/``)."""
    path = posixpath.normpath(os.fspath(server_path))
    for prefix in sorted(path_map, key=len, reverse=True):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return path_map[prefix] / posixpath.relpath(path, prefix)
    return Path(path)


class ServerOptions(pydantic.BaseModel):
    """The ``[database]`` keys every server engine takes; a plugin's options model subclasses
    it and adds its own."""

    model_config = pydantic.ConfigDict(extra="forbid")

    #: Server path → host path, for a server in a container (``"/var/lib/mysql" = "/srv/mysql"``).
    path_map: PathMap = {}
    #: How long connecting may take before preflight reports the server unreachable.
    connect_timeout: Duration = 10.0


# -- the engine -----------------------------------------------------------------------------


class Closable(Protocol):
    """A driver's connection, as far as the foundation uses it."""

    def close(self) -> None: ...


Connection = TypeVar("Connection", bound=Closable)
Options = TypeVar("Options", bound=ServerOptions)


class ServerEngine(DatabaseEngine, Generic[Connection, Options]):
    """A database server reached over one connection held for the whole session.

    A subclass names its driver's connection and options types
    (``ServerEngine[psycopg.Connection[Any], PostgresOptions]``), sets the class attributes
    below, and writes :meth:`open_connection`, :meth:`describe_server`, :meth:`_rows`,
    :meth:`server_data_directory` and :meth:`release`, besides the engine methods that are its
    SQL (``preflight``, ``layout``, ``quiesce``, ``discover``, ``freeze_paths``, ``unquiesce``,
    ``prepare_restore``).  ``connect``, ``abort`` and ``close`` are written here; the
    subclass's ``preflight`` adds :meth:`data_directory_problems` and :meth:`freeze_problems`
    to its own checks.
    """

    options_model: ClassVar[type[pydantic.BaseModel]] = ServerOptions
    #: The server's name in sentences: ``"PostgreSQL"``, ``"MySQL/MariaDB"``.
    server_name: ClassVar[str]
    #: Where the password comes from, in sentences (never the URL): ``"PGPASSWORD or ~/.pgpass
    #: (PGPASSFILE)"``.
    password_sources: ClassVar[str]
    #: The driver's errors: on connecting they become one :class:`PreflightError` sentence; on
    #: releasing the mode they make :meth:`abort` close the connection instead.
    driver_errors: ClassVar[tuple[type[Exception], ...]]
    #: What must be on filesystems of their own to be frozen, in the refusal's fix: ``"the data
    #: directory, pg_wal and tablespaces"``.
    frozen_files: ClassVar[str] = "the database's files"
    #: Why the engine freezes, before ", which needs root": ``"FREEZE freezes filesystems"``.
    freeze_reason: ClassVar[str] = "the split freezes the database's filesystems"
    #: Another way out, ending each freeze refusal's fix after ", or use " (``'mode =
    #: "hot-backup"'``); empty when there is none (InnoDB needs the freeze in both modes).
    freeze_alternative: ClassVar[str] = ""

    def __init__(self, url: str, options: pydantic.BaseModel) -> None:
        super().__init__(url, options)
        if not isinstance(options, self.options_model) or not isinstance(options, ServerOptions):
            raise TypeError(f"{type(self).__name__} takes {self.options_model.__name__}, not {options!r}")
        #: The validated ``[database]`` keys, typed as the subclass's options model.
        self.settings = cast(Options, options)
        self._conn: Connection | None = None
        #: The mode :meth:`quiesce` entered, until it is left (None: not quiesced).
        self._mode: Mode | None = None

    # -- what a subclass writes ---------------------------------------------------------------

    @abc.abstractmethod
    def open_connection(self) -> Connection:
        """A new connection to the server (autocommit), timing out after
        ``settings.connect_timeout``; raise the driver's errors (or a :class:`PreflightError`
        sentence of your own).  Also the way to open a second connection, e.g. to kill a
        statement the first one is stuck in."""

    @abc.abstractmethod
    def describe_server(self) -> ServerInfo:
        """Right after connecting: read the facts the other methods need (version, settings,
        directories) and say what the server is."""

    @abc.abstractmethod
    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Every row of ``sql`` run with ``params`` on the session's connection."""

    @abc.abstractmethod
    def server_data_directory(self) -> str | None:
        """The data directory as the server names it, once connected; None when the server
        would not say (a missing privilege, which preflight reports)."""

    @abc.abstractmethod
    def release(self, mode: Mode | None) -> None:
        """Leave ``mode`` on the session's connection (``pg_backup_stop``, ``UNLOCK ...``), or
        do nothing when nothing is held; safe when :meth:`quiesce` stopped halfway.  A driver
        error here makes :meth:`abort` close the connection, which ends what it held."""

    def error_message(self, error: Exception) -> str:
        """The part of a driver error a DBA needs, on one line."""
        return first_line(error)

    def identity_problems(self) -> list[PreflightProblem]:
        """That the readable data directory is the running server's own files, not an old copy
        or another server's (:meth:`foreign_data_directory` words it); nothing by default."""
        return []

    # -- the connection -----------------------------------------------------------------------

    @property
    def conn(self) -> Connection:
        """The session's connection."""
        if self._conn is None:
            raise RuntimeError("connect() first")
        return self._conn

    def connect(self) -> ServerInfo:
        """Refuse a URL with a password (it would reach the config, argv and logs), connect,
        then :meth:`describe_server`."""
        if urlsplit(self.url).password:
            raise PreflightError(
                f"the [database] url carries a password; remove it and put the password in "
                f"{self.password_sources}, which splitmirror never writes anywhere"
            )
        try:
            self._conn = self.open_connection()
        except self.driver_errors as error:
            raise PreflightError(
                f"cannot connect to {self.server_name} at {redact_url(self.url)}: "
                f"{self.error_message(error)}; check the URL, that the server is running, and "
                f"{self.password_sources}"
            ) from None
        return self.describe_server()

    def _one(self, sql: str, *params: Any) -> Any:
        """The first column of the first row of ``sql``, or None when there is no row."""
        rows = self._rows(sql, *params)
        return rows[0][0] if rows else None

    def abort(self) -> None:
        """:meth:`release` the mode; when the server refuses, close the connection: a server
        ends a backup or a lock when the session that took it goes."""
        mode, self._mode = self._mode, None
        if self._conn is None:
            return
        try:
            self.release(mode)
        except self.driver_errors:
            self._drop_connection()

    def close(self) -> None:
        """:meth:`abort` (nothing when the mode was left), then close the connection."""
        if self._conn is None:
            return
        try:
            self.abort()
        finally:
            self._drop_connection()

    def _drop_connection(self) -> None:
        """Close the connection and forget it.  A close that fails (the server already dropped
        it, PyMySQL's "Already closed") changes nothing: the session is gone either way."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, *self.driver_errors):
                conn.close()

    # -- files ----------------------------------------------------------------------------------

    def host_path(self, server_path: str | os.PathLike[str]) -> Path:
        """Where a server path is on this host (``path_map``, :func:`host_path`)."""
        return host_path(self.settings.path_map, server_path)

    @property
    def datadir(self) -> Path:
        """The data directory on this host."""
        server_path = self.server_data_directory()
        if server_path is None:
            raise RuntimeError("the server did not say where its data directory is")
        return self.host_path(server_path)

    # -- preflight ------------------------------------------------------------------------------

    def data_directory_problems(self) -> list[PreflightProblem]:
        """The server's data directory must be readable here (through ``path_map`` for a server
        in a container); once it is, :meth:`identity_problems`."""
        here = self.datadir
        if not here.is_dir() or not os.access(here, os.R_OK | os.X_OK):
            return [
                PreflightProblem(
                    f"the data directory {self.server_data_directory()} is not readable here as {here}",
                    "run splitmirror on the database host, as root or the server's own OS user, or "
                    "set [database] path_map for a server in a container",
                )
            ]
        return self.identity_problems()

    def foreign_data_directory(self, what: str) -> PreflightProblem:
        """The problem for a data directory that holds ``what`` ("another cluster (...)")
        instead of the running server's files: a config left pointing at an old copy would
        quiesce the live server and fail late, or back up the wrong files."""
        return PreflightProblem(
            f"the data directory {self.datadir} holds {what}, not the files of the server at "
            f"{redact_url(self.url)}",
            "point [mirror] primary (and [database] path_map, for a server in a container) at the "
            "server's own data directory",
        )

    def freeze_problems(self, mode: Mode) -> list[PreflightProblem]:
        """What stops SPLIT freezing :meth:`freeze_paths` for ``mode``: not being root, and a
        path on the root filesystem, which cannot be frozen without freezing the host (the
        filesystems splitmirror's own files are on are judged by the session, not here)."""
        paths = self.freeze_paths(mode)
        if not paths:
            return []
        otherwise = f", or use {self.freeze_alternative}" if self.freeze_alternative else ""
        problems = []
        if os.geteuid() != 0:
            problems.append(
                PreflightProblem(
                    f"{self.freeze_reason}, which needs root", f"run splitmirror as root{otherwise}"
                )
            )
        for path in paths:
            if path.exists() and mount_point(path) == Path("/"):
                problems.append(
                    PreflightProblem(
                        f"{path} is on the root filesystem, which cannot be frozen",
                        f"put {self.frozen_files} on a filesystem of their own{otherwise}",
                    )
                )
        return problems


# -- restore steps ------------------------------------------------------------------------------

#: The uid and gid of the database user in the upstream ``postgres``, ``mysql`` and ``mariadb``
#: images (Oracle's images use 54321).
UPSTREAM_IMAGE_UID = 999


def ran_in_container(directories: Iterable[tuple[str, str | None]]) -> bool:
    """Whether the server saw its files elsewhere than this host (``path_map`` mapped them), so
    it ran in a container: ``directories`` are (server path, host path at backup time) pairs, as
    an engine records them in ``prepare``'s metadata."""
    return any(
        host and posixpath.normpath(server) != posixpath.normpath(host) for server, host in directories
    )


def outermost_mounts(mounts: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(host, inside)`` mounts without those another one already holds (a binary log or
    archive directory inside the data directory comes with it): what a ``docker run`` mounts."""
    kept: list[tuple[str, str]] = []
    for host, inside in sorted(mounts, key=lambda m: len(m[1])):
        if not any(inside == k or inside.startswith(k.rstrip("/") + "/") for _h, k in kept):
            kept.append((host, inside))
    return kept


def container_steps(
    mounts: Iterable[tuple[str | Path, str | Path]],
    server_args: Sequence[str] = (),
    *,
    os_user: str,
    outside: Sequence[str | Path] = (),
    uid: int = UPSTREAM_IMAGE_UID,
    why: str = "",
    env: Mapping[str, str] | None = None,
) -> list[RestoreStep]:
    """The container route of a restore: start the restored copy in a container of the server's
    image (:data:`~splitmirror.restore_steps.IMAGE`), each restored directory mounted where the
    server had it.  The images' entrypoints hand only the data directory to their ``os_user``,
    so restored directories ``outside`` it are handed over first (to ``uid``).  ``why`` ends the
    ``docker run`` step's comment ("; archive_mode=off keeps it out of the live WAL archive")."""
    steps = []
    if outside:
        steps.append(
            RestoreStep.run(
                "chown", "-R", f"{uid}:{uid}", *outside,
                comment=f"the {os_user} user of the upstream images", route="container",
            )
        )  # fmt: skip
    steps.append(
        RestoreStep.container(
            mounts,
            server_args,
            comment=f"IMAGE: the server's image; it hands the files to its {os_user} user{why}",
            env=env,
        )
    )
    return steps
