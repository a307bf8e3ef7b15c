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
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg

from splitmirror.restore import RestoreResult
from splitmirror.testing.containers import PrintedContainer, ServerContainer, image_for
from splitmirror.testing.steps import started_in_container

from .testing import START_TIMEOUT, PostgresLedgerDatabase, RestoredServer

#: Where the server's data directory is inside the container (upstream image and ours).
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


class ContainerPostgres:
    """PostgreSQL ``version`` in a container on the host directory ``datadir``.

    An empty ``datadir`` is initialised (data checksums on, ``password`` for ``postgres``); an
    existing one (a restore) is started as it is.  :meth:`start` returns once the server accepts
    connections and has finished recovery; :meth:`stop` is always safe."""

    def __init__(self, version: str, datadir: Path, password: str) -> None:
        self.version = version
        self.datadir = datadir
        self.image = image_for("postgres", version)
        self.password = password
        #: More host directories for the server (host path → container path): tablespaces.
        self.mounts: dict[Path, str] = {}
        self.container: ServerContainer | PrintedContainer | None = None

    def start(self, *settings: str) -> ContainerPostgres:
        """Start the server with extra ``name=value`` settings and wait until it is writable."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        command = ["postgres"]
        for setting in settings:
            command += ["-c", setting]
        self.container = ServerContainer(
            self.image,
            port=PORT,
            env={"POSTGRES_PASSWORD": self.password, "POSTGRES_INITDB_ARGS": "--data-checksums"},
            mounts={self.datadir: DATA, **self.mounts},
            command=command,
        )
        try:
            self.container.start()
            self._wait_until_writable()
        except BaseException:
            self.stop()
            raise
        return self

    @contextlib.contextmanager
    def restored(self, restore: RestoreResult) -> Iterator[ContainerPostgres]:
        """A copy restored by ``restore``, started by the printed container steps in this
        server's image (nothing added but a published port), until the block ends."""
        copy = ContainerPostgres(self.version, restore.directory, self.password)
        with started_in_container(restore.steps, self.image, PORT) as container:
            copy.container = container
            copy._wait_until_writable()
            yield copy

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres``: no password, it comes from PGPASSFILE."""
        assert self.container is not None, "start() first"
        return f"postgresql://postgres@127.0.0.1:{self.container.host_port}/postgres"

    @property
    def conninfo(self) -> str:
        return self.url

    @property
    def path_map(self) -> dict[str, str]:
        """The engine option that tells splitmirror where the server's files are on this host."""
        return {DATA: str(self.datadir), **{inside: str(host) for host, inside in self.mounts.items()}}

    def _wait_until_writable(self, timeout: float = START_TIMEOUT) -> None:
        assert self.container is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if not self.container.running:
                raise RuntimeError(
                    f"the {self.image} container on {self.datadir} exited\n{self.container.logs()}"
                )
            try:
                with psycopg.connect(
                    self.url, password=self.password, connect_timeout=2, autocommit=True
                ) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    if row is not None and row[0] is False:
                        return
                    last = "still in recovery"
            except psycopg.OperationalError as error:
                last = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL in {self.image} on {self.datadir} was not writable in {timeout:.0f} s "
                    f"({last})\n{self.container.logs()}"
                )
            time.sleep(0.2)

    def amcheck(self) -> tuple[bool, str]:
        """``pg_amcheck`` inside the container, over its own socket (trust for local connections)."""
        assert self.container is not None, "start() first"
        code, output = self.container.exec(
            ["pg_amcheck", "--all", "--install-missing", "--heapallindexed"], user="postgres"
        )
        return code == 0, output or ("ok" if code == 0 else f"exit {code}")

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()
            self.container = None


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
