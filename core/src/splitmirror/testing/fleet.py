"""Off-host backup proven with hosts of their own on one machine (docs/fleet.md).

A *host* here is a network namespace and a mount namespace: the network of a sleeping container
on one docker network (so it reaches exactly the containers on that network), and a mount
namespace of the process's own in which the paths the host must not reach are covered by an
empty tmpfs.  The database host's network holds the database server and the catalog; the
backup hosts' network holds the catalog only, and their mount namespaces hide the primary.  The
mirror's disk (a loop device) is seen by all of them, as a LUN zoned to both would be.  Each
host runs ``splitmirror`` as a DBA would, with its own configuration file.

:class:`Fleet` builds the networks, the catalog (a PostgreSQL server in a container, reached at
its address on each network) and the hosts, and removes them all on leaving.
:func:`fleet_drill` runs ledger writers through an off-host session and checks the restored
archive as :func:`~splitmirror.testing.drill.run_drill` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker.errors

from ..restore.run import restore_archive
from ..workload import acknowledged
from .containers import LABEL, client, image_for, newest_usable
from .database import LedgerDatabase
from .drill import DrillReport, _start_writers, _stop, _wait_for_acks

#: The catalog's database, role and password on the catalog server.
CATALOG_DB = CATALOG_ROLE = "splitmirror"
CATALOG_PASSWORD = "fleet-catalog-secret"


class Host:
    """One host: the network of a sleeping container on ``network``, and ``hidden`` paths."""

    def __init__(self, name: str, network: str, image: str, hidden: Sequence[Path]) -> None:
        self.name, self.network, self.hidden = name, network, list(hidden)
        self.container = client().containers.run(
            image, ["sleep", "infinity"], detach=True, network=network, labels={LABEL: str(os.getpid())},
            name=f"splitmirror-{name}-{os.getpid()}",
        )  # fmt: skip
        self.container.reload()
        self.pid = int(self.container.attrs["State"]["Pid"])

    def argv(self, *argv: str | Path) -> list[str]:
        """``argv`` as this host runs it: in its network, with what it must not reach hidden."""
        covers = [f"mount -t tmpfs -o size=1m,mode=0700 hidden {shlex.quote(str(p))}" for p in self.hidden]
        script = "set -e; " + "".join(f"{cover}; " for cover in covers) + 'exec "$@"'
        return [
            "nsenter", f"--net=/proc/{self.pid}/ns/net", "--",
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", script, "sh", *(str(a) for a in argv),
        ]  # fmt: skip

    def splitmirror(
        self, *args: str | Path, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``splitmirror ARGS`` on this host."""
        return subprocess.run(
            self.argv(sys.executable, "-m", "splitmirror", *args),
            capture_output=True, text=True, timeout=300, check=False, env=self.env(env),
        )  # fmt: skip

    def popen(self, *args: str | Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(sys.executable, "-m", "splitmirror", *args), text=True, env=self.env(env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**os.environ, "SPLITMIRROR_HOST": self.name, **(extra or {})}

    def reaches(self, address: str, port: int) -> bool:
        """Whether a TCP connection from this host to ``address:port`` opens within 2 s."""
        probe = f"import socket; socket.create_connection(({address!r}, {port}), 2).close()"
        return subprocess.run(self.argv(sys.executable, "-c", probe), capture_output=True).returncode == 0

    def sees(self, path: Path) -> bool:
        """Whether ``path`` exists for this host."""
        probe = f"import os, sys; sys.exit(0 if os.path.exists({str(path)!r}) else 1)"
        return subprocess.run(self.argv(sys.executable, "-c", probe), capture_output=True).returncode == 0

    def stop(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.container.remove(force=True)


class Fleet:
    """Two docker networks (``db``: database host, database server, catalog; ``backup``: backup
    hosts, catalog), the catalog server on both, and the hosts made by :meth:`host`."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self.image = image_for("postgres", newest_usable("postgres"))
        self.networks = {
            role: client().networks.create(
                f"splitmirror-fleet-{role}-{tag}", labels={LABEL: str(os.getpid())}
            )
            for role in ("db", "backup")
        }
        self.hosts: list[Host] = []
        self.catalog = client().containers.run(
            self.image, detach=True, environment={"POSTGRES_PASSWORD": "fleet-admin"},
            network=self.networks["db"].name, labels={LABEL: str(os.getpid())},
            name=f"splitmirror-catalog-{tag}",
        )  # fmt: skip
        self.networks["backup"].connect(self.catalog)
        self._catalog_ready()

    def _catalog_ready(self) -> None:
        deadline = time.monotonic() + 120
        while self.catalog.exec_run(["pg_isready", "-h", "127.0.0.1", "-U", "postgres"]).exit_code != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the catalog server did not start\n{self.catalog.logs(tail=30)!r}")
            time.sleep(0.3)
        for sql in (
            f"CREATE ROLE {CATALOG_ROLE} LOGIN PASSWORD '{CATALOG_PASSWORD}'",
            f"CREATE DATABASE {CATALOG_DB} OWNER {CATALOG_ROLE}",
        ):
            psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql]
            result = self.catalog.exec_run(psql, environment={"PGPASSWORD": "fleet-admin"})
            if result.exit_code != 0:
                raise RuntimeError(f"{sql}: {result.output!r}")

    def address(self, container: Any, role: str) -> str:
        """``container``'s address on the ``role`` network."""
        container.reload()
        return str(container.attrs["NetworkSettings"]["Networks"][self.networks[role].name]["IPAddress"])

    def catalog_url(self, role: str) -> str:
        """The catalog's URL as a host on the ``role`` network reaches it (no password in it)."""
        return f"postgresql://{CATALOG_ROLE}@{self.address(self.catalog, role)}:5432/{CATALOG_DB}"

    def attach(self, container_id: str) -> str:
        """Put a database server's container on the database hosts' network; its address there."""
        self.networks["db"].connect(container_id)
        return self.address(client().containers.get(container_id), "db")

    def host(self, name: str, role: str, hidden: Sequence[Path]) -> Host:
        host = Host(name, str(self.networks[role].name), self.image, hidden)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            host.stop()
        with contextlib.suppress(docker.errors.NotFound):
            self.catalog.remove(force=True)
        for network in self.networks.values():
            network.reload()
            for container in network.containers:  # a database server the test attached
                with contextlib.suppress(docker.errors.APIError):
                    network.disconnect(container, force=True)
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()


@contextlib.contextmanager
def fleet() -> Iterator[Fleet]:
    built = Fleet()
    try:
        yield built
    finally:
        built.close()


@contextlib.contextmanager
def mirror_disks(directory: Path, size: int, count: int) -> Iterator[list[Path]]:
    """``count`` loop devices of ``size`` bytes, for block mirrors; their ownership records
    (kept in /var/lib, named after the device, :mod:`splitmirror.mirror.ownership`) go with them."""
    from ..mirror.ownership import state_files
    from .loopfs import loop_device

    with contextlib.ExitStack() as stack:
        devices = []
        for n in range(count):
            image = directory / f"mirror-{n}.img"
            with open(image, "wb") as f:
                f.truncate(size)
            device = stack.enter_context(loop_device(image))
            record = state_files(device)[1]
            record.unlink(missing_ok=True)
            stack.callback(record.unlink, missing_ok=True)
            devices.append(device)
        yield devices


def device_size(mount: Path) -> int:
    """The size of the block device mounted at ``mount``."""
    from ..mirror.block import mounted_device

    device = mounted_device(mount)
    if device is None:
        raise RuntimeError(f"{mount} is not the mount point of a block device")
    with open(device, "rb") as f:
        return f.seek(0, os.SEEK_END)


def _toml(value: object) -> str:
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value)) if not isinstance(value, bool | int) else json.dumps(value)


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def database_config(
    path: Path,
    *,
    name: str,
    url: str,
    mode: str,
    options: Mapping[str, Any],
    primary: Path,
    mirror: Path,
    catalog: str,
) -> Path:
    """A database host's configuration, as docs/fleet.md writes it: off-host, the block mirror,
    no ``[target]``."""
    keys = "".join(f"{key} = {_toml(value)}\n" for key, value in options.items())
    return _written(
        path,
        f'[session]\nname = "{name}"\nbackup = "off-host"\ncatalog = "{catalog}"\n\n'
        f'[database]\nurl = "{url}"\nmode = "{mode}"\n{keys}\n'
        f'[mirror]\nprovider = "block"\nprimary = "{primary}"\nmirror = "{mirror}"\n',
    )


def worker_config(
    path: Path, *, catalog: str, devices: Sequence[Path], target: str, lease: str = "3s"
) -> Path:
    """A backup host's configuration: ``target`` is the ``[target]`` section's body."""
    return _written(
        path,
        f'[archive]\ncatalog = "{catalog}"\ndevices = {_toml(list(devices))}\nlease = "{lease}"\n\n'
        f"[target]\n{target}\n",
    )


def catalog_env() -> dict[str, str]:
    """What every host of the fleet is given to log in to the catalog."""
    return {"SPLITMIRROR_CATALOG_PASSWORD": CATALOG_PASSWORD}


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    return json.loads(result.stdout)


def fleet_drill(
    database: LedgerDatabase,
    db_host: Host,
    backup_host: Host,
    config: Path,
    worker: Path,
    scratch: Path,
    *,
    env: Mapping[str, str] | None = None,
    writers: int = 4,
    warmup: int = 20,
) -> DrillReport:
    """Ledger writers through ``backup CONFIG --split-only`` on ``db_host``, ``archive WORKER``
    on ``backup_host``, then the archive restored and started by its printed steps, and every
    row acknowledged before the backup began looked for (a command's session cannot be watched
    for QUIESCE from here, so the bound is the command's start)."""
    env = {**catalog_env(), **(env or {})}
    database.create_ledger()
    acks = {w: scratch / f"acks-fleet-{w}.txt" for w in range(1, writers + 1)}
    procs = _start_writers(database, acks)
    try:
        _wait_for_acks(procs, acks, warmup)
        before = {w: len(acknowledged(path)) for w, path in acks.items()}
        split = json_of(db_host.splitmirror("backup", config, "--split-only", "--json", env=env))
    finally:
        _stop(procs)
    (outcome,) = json_of(
        backup_host.splitmirror("archive", worker, "--session", str(split["id"]), "--json", env=env)
    )
    if outcome["status"] != "DONE":
        raise AssertionError(f"the backup host's archive ended {outcome['status']}: {outcome['error']}")
    restored = restore_archive(Path(outcome["archive"]), scratch / f"restored-{split['id']}")
    ledger = database.restored_ledger(restored)
    lost, gaps = {}, {}
    for w, path in acks.items():
        present = ledger.rows.get(w, set())
        lost[w] = sorted(set(acknowledged(path)[: before[w]]) - present)
        gaps[w] = sorted(set(range(1, max(present, default=0) + 1)) - present)
    return DrillReport(
        mode=split["mode"], writers=writers, acknowledged=sum(before.values()),
        found=sum(len(ledger.rows.get(w, set())) for w in acks), lost=lost, gaps=gaps,
        integrity=ledger.integrity, integrity_ok=ledger.integrity_ok, stats=split["stats"],
    )  # fmt: skip
