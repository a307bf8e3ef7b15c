"""PostgreSQL servers in containers, for tests: the layout a DBA with a containerized server has.

The server runs in a container (the image chosen by :func:`splitmirror.testing.containers.image_for`:
upstream ``postgres:N``, or the Debian-package equivalent ``compose/build-images`` makes), its data
directory bind-mounted from a host path that plays the primary disk.  splitmirror runs on the
host: it connects over TCP on 127.0.0.1 and reads the files through the engine's ``path_map``
(``/var/lib/postgresql/data`` → the host path), exactly as in compose/docker-compose.yml.

The password is the container's ``POSTGRES_PASSWORD``; splitmirror and the ledger writers get it
from a ``.pgpass`` file named by ``$PGPASSFILE`` (the fixture sets both), never from a URL.  A
restored copy is started in a *fresh* container by the ``docker run`` step the restore printed,
as a DBA would bring it up, and checked with the ``pg_amcheck`` inside that container.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from splitmirror.api import first_line
from splitmirror.testing import RestoreResult
from splitmirror.testing.containers import ContainerServer, image_for
from splitmirror.testing.steps import started_in_container

from .testing import START_TIMEOUT, PostgresLedgerDatabase, RestoredServer

#: Where the server's data directory is inside the container, passed as ``PGDATA``.  It is the
#: upstream images' default up to 17 and ours' for every version; upstream ``postgres:18`` moved
#: its default to ``/var/lib/postgresql/18/docker`` and refuses to start while a mount or a
#: cluster sits at this path instead, so the harness names it explicitly, as the printed restore does.
DATA = "/var/lib/postgresql/data"
PORT = 5432


def pgpass_line(password: str, user: str = "postgres") -> str:
    """A ``.pgpass`` line admitting ``user`` on 127.0.0.1, any port and database."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"127.0.0.1:*:*:{user}:{escaped}\n"


def write_pgpass(path: Path, password: str) -> Path:
    """A ``.pgpass`` file (0600, as libpq insists) admitting postgres on 127.0.0.1."""
    path.write_text(pgpass_line(password))
    path.chmod(0o600)
    return path


class ContainerPostgres(ContainerServer):
    """PostgreSQL ``version`` in a container on the host directory ``datadir``.

    An empty ``datadir`` is initialised (data checksums on, ``password`` for ``postgres``); an
    existing one (a restore) is started as it is.  :meth:`start` returns once the server accepts
    connections and has finished recovery; :meth:`stop` is always safe."""

    data = DATA
    port = PORT
    start_timeout = START_TIMEOUT

    def __init__(self, version: str, datadir: Path, password: str) -> None:
        super().__init__(image_for("postgres", version), datadir)
        self.version = version
        self.password = password

    def start(self, *settings: str) -> ContainerPostgres:
        """Start the server with extra ``name=value`` settings and wait until it is writable."""
        command = ["postgres"]
        for setting in settings:
            command += ["-c", setting]
        self.start_container(
            {"POSTGRES_PASSWORD": self.password, "POSTGRES_INITDB_ARGS": "--data-checksums", "PGDATA": DATA},
            command,
        )
        return self

    def restored(self, restore: RestoreResult) -> contextlib.AbstractContextManager[ContainerPostgres]:
        """A copy restored by ``restore``, started by the printed container steps in this
        server's image (nothing added but a published port), until the block ends."""
        copy = ContainerPostgres(self.version, restore.directory, self.password)
        return copy.running_in(started_in_container(restore.steps, self.image, PORT))

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres``: no password, it comes from PGPASSFILE."""
        return f"postgresql://postgres@127.0.0.1:{self.host_port}/postgres"

    @property
    def conninfo(self) -> str:
        return self.url

    def probe(self) -> str | None:
        """Writable: connected, and out of recovery."""
        try:
            with psycopg.connect(
                self.url, password=self.password, connect_timeout=2, autocommit=True
            ) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                return None if row is not None and row[0] is False else "still in recovery"
        except psycopg.OperationalError as error:
            return first_line(error)

    def amcheck(self) -> tuple[bool, str]:
        """``pg_amcheck`` inside the container, over its own socket (trust for local connections)."""
        assert self.container is not None, "start() first"
        code, output = self.container.exec(
            ["pg_amcheck", "--all", "--install-missing", "--heapallindexed"], user="postgres"
        )
        return code == 0, output or ("ok" if code == 0 else f"exit {code}")


class ContainerLedgerDatabase(PostgresLedgerDatabase):
    """A :class:`ContainerPostgres` as the contract suite's database; restores come up in a
    fresh container of the same image."""

    def __init__(
        self,
        server: ContainerPostgres,
        options: Mapping[str, Any] | None = None,
        *,
        primary: Path | None = None,
    ) -> None:
        options = {"path_map": server.path_map, **(options or {})}
        super().__init__(server.url, server.datadir, options, primary=primary)
        self.server = server

    def restored_server(self, restore: RestoreResult) -> contextlib.AbstractContextManager[RestoredServer]:
        return self.server.restored(restore)
