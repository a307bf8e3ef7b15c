"""Test support for the PostgreSQL plugin: its side of splitmirror's contract suite.

:class:`PostgresLedgerDatabase` is the plugin's :class:`splitmirror.testing.LedgerDatabase`;
:class:`HostLedgerDatabase` runs it on a :class:`~.cluster.HostPostgres` cluster from the host's
binaries (``ContainerLedgerDatabase`` in :mod:`.container`, in containers).  The clusters
themselves, and how restored copies start, are in :mod:`.cluster`, whose names are also
importable from here.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import psycopg

from splitmirror.testing import LedgerDatabase, RestoredLedger, RestoreResult, committed_within

from . import ledger
from .cluster import (
    DEFAULT_BINDIR,
    OS_USER,
    START_TIMEOUT,
    STOP_TIMEOUT,
    HostPostgres,
    amcheck,
    bindir,
    free_port,
    give_to_postgres,
    make_traversable,
    restored,
    run_as_postgres,
    started_as_printed,
    unavailable,
)

__all__ = [
    "DEFAULT_BINDIR",
    "OS_USER",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "HostLedgerDatabase",
    "HostPostgres",
    "PostgresLedgerDatabase",
    "RestoredServer",
    "amcheck",
    "bindir",
    "free_port",
    "give_to_postgres",
    "make_traversable",
    "restored",
    "run_as_postgres",
    "started_as_printed",
    "unavailable",
]


#: Directories whose contents a backup never needs: PostgreSQL's documentation lists them as
#: omitted from base backups (the server recreates or resets them at start).
EMPTIED_DIRS = frozenset(
    {"pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"}
)
#: Files in the data directory's root that describe the running server, never its data.
RUNTIME_FILES = frozenset({"postmaster.pid", "postmaster.opts"})


def _temporary_relation(name: str) -> bool:
    """``t<backend>_<relfilenode>[...]``: a temporary table's file, gone at restart."""
    head, _, rest = name.partition("_")
    return head[:1] == "t" and head[1:].isdigit() and rest[:1].isdigit()


class PostgresLedgerDatabase(LedgerDatabase):
    """A live PostgreSQL cluster as the contract suite's database.

    ``url`` is the cluster's conninfo URL (never with a password), ``datadir`` its data
    directory on this host, ``primary`` the directory splitmirror mirrors and a restore
    recreates: the data directory itself, or a directory holding it and the tablespaces.
    ``options`` are the engine's ``[database]`` keys.  Subclasses
    say how a restored copy is started: :class:`HostLedgerDatabase` with the host's binaries,
    ``ContainerLedgerDatabase`` (:mod:`splitmirror_postgresql.container`) in a fresh container."""

    def __init__(
        self,
        url: str,
        datadir: Path,
        options: Mapping[str, Any] | None = None,
        *,
        primary: Path | None = None,
    ) -> None:
        self.url = url
        self.datadir = datadir
        self.primary = primary or datadir
        self.options = dict(options or {})

    @abc.abstractmethod
    def restored_server(self, restore: RestoreResult) -> contextlib.AbstractContextManager[RestoredServer]:
        """Start the restored copy by the steps ``restore`` printed; stop it on leaving, pass or fail."""

    def create_ledger(self) -> None:
        ledger.create_ledger(self.url)

    _OTHERS = (
        "SELECT pid, application_name, state, left(query, 60) FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )

    def leftovers(self) -> list[str]:
        """Client backends besides the one asking, and replication slots: a session's backup
        connection or its temporary slot outliving it."""
        with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
            backends = [
                f"backend {pid} ({state}: {query})" for pid, _app, state, query in conn.execute(self._OTHERS)
            ]
            slots = [
                f"replication slot {name}"
                for (name,) in conn.execute("SELECT slot_name FROM pg_replication_slots")
            ]
        return backends + slots

    def kill_connections(self) -> int:
        """``pg_terminate_backend`` for every other client backend (the session's among them)."""
        with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
            pids = [pid for pid, *_rest in conn.execute(self._OTHERS)]
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return len(pids)

    def writer_command(self, writer: int, acks: Path) -> list[str]:
        return ledger.writer_command(self.url, acks, writer)

    def accepts_writes(self, timeout: float = 3.0) -> bool:
        """A committed write to the ledger (insert and delete of a row no writer uses, so the
        ledger is unchanged) within ``timeout`` seconds: up to 2 s to connect, 1 s of statement
        time (:func:`~splitmirror.testing.committed_within`)."""

        def write() -> None:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SET statement_timeout = 1000")
                with conn.transaction():
                    conn.execute("INSERT INTO ledger (writer, seq) VALUES (-1, -pg_backend_pid())")
                    conn.execute("DELETE FROM ledger WHERE writer = -1 AND seq = -pg_backend_pid()")

        return committed_within(timeout, write, (psycopg.Error,))

    def files_in_use(self) -> set[Path]:
        """Every regular file of the cluster a backup needs, by walking the data directory (and
        tablespaces through ``pg_tblspc``), independently of the engine's discovery.

        Left out, as PostgreSQL's documentation says a base backup may: ``postmaster.pid``,
        ``postmaster.opts``, the contents of ``pg_replslot``, ``pg_dynshmem``, ``pg_notify``,
        ``pg_serial``, ``pg_snapshots``, ``pg_stat_tmp``, ``pg_subtrans``, ``pgsql_tmp*``,
        ``pg_internal.init`` (relation cache, rebuilt) and temporary relations (``t<n>_<m>``).

        Also left out: ``pg_wal``.  WAL is needed, but by content, not by name: the set is taken
        after the session, by when the server has switched, created and recycled segments (the
        backup stop alone switches to a new one), so names present now were never in the
        archive.  HOT_BACKUP collects the segments from the start to the stop LSN itself, and
        the restore drill (recovery must reach consistency) is what proves the WAL is complete.

        Files created after the session by the live server (a visibility map autovacuum makes,
        say) would show up here too; the test clusters are idle outside the drill, which checks
        rows rather than names."""
        datadir = self.datadir
        found: set[Path] = set()
        for top, dirs, files in os.walk(datadir, followlinks=True):
            rel = Path(top).relative_to(datadir)
            if rel == Path("."):
                dirs[:] = [d for d in dirs if d != "pg_wal" and d not in EMPTIED_DIRS]
            dirs[:] = [d for d in dirs if not d.startswith("pgsql_tmp")]
            for name in files:
                if rel == Path(".") and name in RUNTIME_FILES:
                    continue
                if name.startswith("pgsql_tmp") or name == "pg_internal.init" or _temporary_relation(name):
                    continue
                path = Path(top) / name
                if path.is_file():
                    found.add(path)
        return found

    def restored_ledger(self, restore: RestoreResult) -> RestoredLedger:
        """Start the restored copy (:meth:`restored_server`), which must finish recovery, run
        pg_amcheck on it and read the ledger; the server is stopped again before returning."""
        with self.restored_server(restore) as server:
            ok, text = server.amcheck()
            rows = ledger.ledger_rows(server.conninfo)
        return RestoredLedger(ok, text, rows)


class RestoredServer(Protocol):
    """A restored copy that is up and has finished recovery."""

    @property
    def conninfo(self) -> str: ...

    def amcheck(self) -> tuple[bool, str]:
        """pg_amcheck of every database: ``(ok, output)``, as :func:`amcheck`."""
        ...


@dataclasses.dataclass(frozen=True)
class _HostRestored:
    conninfo: str
    binaries: Path

    def amcheck(self) -> tuple[bool, str]:
        return amcheck(self.conninfo, binaries=self.binaries)


class HostLedgerDatabase(PostgresLedgerDatabase):
    """A :class:`HostPostgres` cluster; restored copies run with the same host binaries."""

    def __init__(self, server: HostPostgres, *, primary: Path | None = None) -> None:
        super().__init__(server.conninfo, server._require_datadir(), primary=primary)
        self.server = server

    @contextlib.contextmanager
    def restored_server(self, restore: RestoreResult) -> Iterator[RestoredServer]:
        with started_as_printed(restore, binaries=self.server.bindir) as conninfo:
            yield _HostRestored(conninfo, self.server.bindir)
