"""Database servers in containers, for plugin tests: which image, an engine that answers, cleanup,
and a server that is ready.

**Which image.**  :func:`~splitmirror.testing.images.image_for` (imported here too) is the one
place that decides: the override variable, the upstream image, the offline one; when none is
usable it raises :class:`Unavailable` with a sentence saying why and what to do.

**Cleanup.**  :class:`ServerContainer` starts a container with testcontainers (the Ryuk reaper is
off by default: its image cannot be pulled everywhere), labelled ``splitmirror.testing``; ports
are published on 127.0.0.1 only.  Fixtures stop what they start in a ``finally``; whatever a
crashed test left is stopped at interpreter exit, and ``.ci/run`` removes anything labelled
before it starts.

**Ready.**  :class:`ContainerServer` is what a plugin's test server builds on: the image started
on a host data directory, or a restored copy started by the ``docker run`` a restore printed,
then probed (a query, never a log line) until the server takes work.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Self

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# testcontainers reads the Ryuk setting when it is imported, hence the order.
import docker
import docker.errors
import docker.models.containers
from testcontainers.core.container import DockerContainer

from .images import IMAGES as IMAGES
from .images import ImageChoice as ImageChoice
from .images import Unavailable as Unavailable
from .images import client as client
from .images import image_for as image_for
from .images import newest as newest
from .images import newest_usable as newest_usable
from .images import on_every as on_every
from .images import on_newest as on_newest
from .images import override_variable as override_variable
from .images import versions as versions

#: Label on every container the tests start (``docker ps -f label=splitmirror.testing``).
LABEL = "splitmirror.testing"


#: Every container started and not yet stopped, stopped at exit as a last resort.
_RUNNING: set[ServerContainer | PrintedContainer] = set()


@atexit.register
def _stop_all() -> None:
    for container in list(_RUNNING):
        container.stop()


class ServerContainer:
    """One database server container: ``image`` with ``env``, host directories bind-mounted
    (``mounts``: host path → container path), TCP ``port`` published on 127.0.0.1.  ``start``
    returns once the container runs (the plugin waits for its server); ``stop`` is always safe."""

    def __init__(
        self,
        image: str,
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        mounts: Mapping[Path, str] | None = None,
        command: Sequence[str] = (),
    ) -> None:
        self.image = image
        self.port = port
        self._container = DockerContainer(image, env=dict(env or {}))
        # 127.0.0.1 only, a random free port: docker-py takes (address, port) where the typing says int.
        self._container.ports[f"{port}/tcp"] = ("127.0.0.1", None)  # type: ignore[assignment]
        for host, inside in (mounts or {}).items():
            self._container.with_volume_mapping(str(host), inside, mode="rw")
        if command:
            self._container.with_command(list(command))
        self._container.with_kwargs(labels={LABEL: str(os.getpid())})
        self._started = False

    def start(self) -> ServerContainer:
        client()  # Unavailable with a sentence when no engine answers
        _RUNNING.add(self)
        try:
            self._container.start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    @property
    def host_port(self) -> int:
        """The port on 127.0.0.1 that reaches the server's ``port``."""
        return int(self._container.get_exposed_port(self.port))

    @property
    def id(self) -> str:
        """The container's id (to attach it to another network, :mod:`.fleet`)."""
        return str(self._container.get_wrapped_container().id)

    @property
    def running(self) -> bool:
        if not self._started:
            return False
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return bool(wrapped.status == "running")

    def exec(self, argv: Sequence[str], *, user: str = "") -> tuple[int, str]:
        """Run ``argv`` inside the container (as ``user``); exit code and combined output."""
        result = self._container.get_wrapped_container().exec_run(list(argv), user=user)
        output = result.output.decode(errors="replace") if isinstance(result.output, bytes) else ""
        code = result.exit_code if result.exit_code is not None else -1  # None only when detached
        return code, output.strip()

    def logs(self, lines: int = 40) -> str:
        """The tail of the server's output, for failure messages."""
        if not self._started:
            return "(container not started)"
        stdout, stderr = self._container.get_logs()
        text = (stdout + stderr).decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Remove the container (and its anonymous volumes), whatever state it is in."""
        try:
            if self._container._container is not None:
                self._container.stop()
        except docker.errors.NotFound:
            pass
        finally:
            _RUNNING.discard(self)
            self._started = False


class PrintedContainer:
    """A container started by the ``docker`` command itself, from a ``docker run`` line a
    restore printed: ``docker run`` + the harness's plumbing (a label, ``port`` published on
    127.0.0.1) + the line's own ``docker_options`` (``-d`` among them) + ``image`` +
    ``server_args``.  Offers what :class:`ServerContainer` does (``host_port``, ``running``,
    ``exec``, ``logs``, ``stop``)."""

    def __init__(
        self, docker_options: Sequence[str], image: str, server_args: Sequence[str], *, port: int
    ) -> None:
        self.port = port
        self.image = image
        self.argv = [
            "docker", "run", "--label", f"{LABEL}={os.getpid()}", "-p", f"127.0.0.1::{port}",
            *docker_options, image, *server_args,
        ]  # fmt: skip
        self.id = ""

    def start(self) -> PrintedContainer:
        client()  # Unavailable with a sentence when no engine answers
        done = subprocess.run(self.argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv)} failed: {(done.stdout + done.stderr).strip()}")
        self.id = done.stdout.strip()
        _RUNNING.add(self)
        return self

    def _wrapped(self) -> docker.models.containers.Container:
        return client().containers.get(self.id)

    @property
    def host_port(self) -> int:
        wrapped = self._wrapped()
        wrapped.reload()
        bindings = wrapped.ports.get(f"{self.port}/tcp")
        if not bindings:
            raise RuntimeError(f"the container {self.id[:12]} publishes no port {self.port}\n{self.logs()}")
        return int(bindings[0]["HostPort"])

    @property
    def running(self) -> bool:
        try:
            wrapped = self._wrapped()
        except docker.errors.NotFound:
            return False
        return bool(wrapped.status == "running")

    def exec(self, argv: Sequence[str], *, user: str = "") -> tuple[int, str]:
        result = self._wrapped().exec_run(list(argv), user=user)
        output = result.output.decode(errors="replace") if isinstance(result.output, bytes) else ""
        return (result.exit_code if result.exit_code is not None else -1), output.strip()

    def logs(self, lines: int = 40) -> str:
        try:
            text = self._wrapped().logs().decode(errors="replace")
        except docker.errors.NotFound:
            return "(container gone)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.id:
            subprocess.run(
                ["docker", "rm", "-f", "-v", self.id], capture_output=True, timeout=120, check=False
            )
        _RUNNING.discard(self)


class ContainerServer(abc.ABC):
    """A database server in a container of ``image`` for a plugin's tests, its data directory
    bind-mounted from the host directory ``datadir`` (which plays the primary disk), so that
    splitmirror on the host reads the files through the engine's :attr:`path_map`.

    A subclass says where the image keeps its data (:attr:`data`), the server's :attr:`port`
    and how to tell it is ready (:meth:`probe`); its ``start`` calls :meth:`start_container`
    with the image's environment and command, and a restored copy runs by
    :meth:`running_in`.  :meth:`stop` is always safe."""

    #: Where the image keeps the data directory (``/var/lib/postgresql/data``).
    data: ClassVar[str]
    #: The server's TCP port inside the container.
    port: ClassVar[int]
    #: Seconds a server may take to be ready, crash recovery of a restored copy included.
    start_timeout: ClassVar[float] = 120.0

    def __init__(self, image: str, datadir: Path, mounts: Mapping[Path, str] | None = None) -> None:
        self.image = image
        self.datadir = datadir
        #: More host directories for the server (host path → container path): tablespaces, a
        #: binary log directory of its own.
        self.mounts: dict[Path, str] = dict(mounts or {})
        self.container: ServerContainer | PrintedContainer | None = None

    @abc.abstractmethod
    def probe(self) -> str | None:
        """None once the server takes work (accepts a connection, has finished recovery), else
        what it answered instead, for the message if it never does.  Catch the driver's errors
        here: the container runs, and the server may not listen yet."""

    def start_container(self, env: Mapping[str, str], command: Sequence[str]) -> None:
        """Start :attr:`image` with ``env`` and ``command``, the data directory (created if
        missing) and :attr:`mounts` mounted, and return once it is ready; stopped again if it
        is not."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.container = ServerContainer(
            self.image,
            port=self.port,
            env=env,
            mounts={self.datadir: self.data, **self.mounts},
            command=command,
        )
        try:
            self.container.start()
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise

    @contextlib.contextmanager
    def running_in(self, started: contextlib.AbstractContextManager[PrintedContainer]) -> Iterator[Self]:
        """This server in the container ``started`` runs (the ``docker run`` a restore printed,
        :func:`splitmirror.testing.steps.started_in_container`), once it is ready, until the
        block ends and ``started`` removes it."""
        with started as container:
            self.container = container
            try:
                self.wait_until_ready()
                yield self
            finally:
                self.container = None

    @property
    def host_port(self) -> int:
        """The port on 127.0.0.1 that reaches the server."""
        if self.container is None:
            raise RuntimeError("start() first")
        return self.container.host_port

    @property
    def path_map(self) -> dict[str, str]:
        """The engine's ``path_map``: where the server's directories are on this host."""
        return {self.data: str(self.datadir), **{inside: str(host) for host, inside in self.mounts.items()}}

    def wait_until_ready(self) -> None:
        """Probe until the server is ready; RuntimeError with the container's log when it
        exits or is not ready within :attr:`start_timeout`."""
        container = self.container
        if container is None:
            raise RuntimeError("start() first")
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not container.running:
                raise RuntimeError(f"the {self.image} container on {self.datadir} exited\n{container.logs()}")
            answer = self.probe()
            if answer is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server in {self.image} on {self.datadir} was not ready in "
                    f"{self.start_timeout:.0f} s ({answer})\n{container.logs()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Remove the container, if one runs."""
        if self.container is not None:
            self.container.stop()
            self.container = None


def leftovers() -> list[str]:
    """IDs of containers this process labelled :data:`LABEL` that still exist (a test's cleanup
    check).  Only this process's: another test run on the same engine has its own, still running."""
    label = f"{LABEL}={os.getpid()}"
    return [c.short_id for c in client().containers.list(all=True, filters={"label": label})]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now (for a compose service's host port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def compose_command() -> list[str] | None:
    """``docker compose`` (the v2 plugin) or ``docker-compose`` (v1, Debian's package), or None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


#: The compose file of this repository (compose/README.md), when running from a checkout.
COMPOSE_FILE = Path(__file__).resolve().parents[4] / "compose" / "docker-compose.yml"


@contextlib.contextmanager
def compose_up(service: str, env: Mapping[str, str], ready: Callable[[], bool]) -> Iterator[ComposeProject]:
    """Bring one service of :data:`COMPOSE_FILE` up with ``env`` and wait until ``ready()``
    (120 s at most); ``down --volumes`` afterwards, pass or fail.  Raises :class:`Unavailable`
    when no compose is installed or the file is not there (an installed splitmirror)."""
    command = compose_command()
    if command is None:
        raise Unavailable(
            "neither `docker compose` nor docker-compose is installed (compose/start-engine installs one)"
        )
    if not COMPOSE_FILE.is_file():
        raise Unavailable(f"{COMPOSE_FILE} is not here: the compose tests run from a checkout")
    project = ComposeProject(command, COMPOSE_FILE, f"splitmirror-test-{os.getpid()}", env)
    try:
        project("up", "-d", service)
        deadline = time.monotonic() + 120
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the compose service {service} did not answer:\n{project('logs', service)}"
                )
            time.sleep(0.3)
        yield project
    finally:
        project("down", "--volumes", "--remove-orphans")


class ComposeProject:
    """One project of a compose file, for tests that follow compose/README.md: ``up`` a service,
    ``down`` everything (volumes included) in a ``finally``."""

    def __init__(self, command: Sequence[str], file: Path, project: str, env: Mapping[str, str]) -> None:
        self.argv = [*command, "-f", str(file), "-p", project]
        self.env = {**os.environ, **env}

    def __call__(self, *args: str) -> str:
        """Run ``compose ARGS``; its output, or RuntimeError with it."""
        argv = [*self.argv, *args]
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {(result.stdout + result.stderr).strip()}")
        return result.stdout
