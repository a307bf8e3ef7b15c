"""``splitmirror drill``: a user's own archive restored, started and checked, then cleaned up.

The project's drills prove the code; this proves an archive.  It does what a DBA would do with
it on the bad day, and nothing a DBA would not:

1. restore the archive into a scratch directory of its own (every member checked against the
   catalog's checksums, as ``restore`` does);
2. start the database there *by the engine's restore steps*, the ones ``restore`` prints: the
   container route when ``[drill] image`` names the server's image, the host route otherwise
   (the server's programs on ``PATH``, ``[drill] binaries`` first).  What the drill adds is
   plumbing only: a free port on 127.0.0.1 (published, for a container), the engine's
   variables that keep the copy out of the live server's way, a label on the container;
3. have the engine check the copy (:meth:`~splitmirror.engine.DatabaseEngine.drill_check`): its
   own integrity check and the DBA's ``[drill] query``;
4. stop the copy and remove the scratch directory, pass or fail, and record the outcome in the
   catalog (``list`` shows each configuration's last drill; the metrics carry it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .catalog import Catalog
from .catalog.base import DrillRecord, utc_now
from .config import Config, plugin_options
from .drillcopy import DrillCopy, DrillFailed, DrillRoute
from .engine import DatabaseEngine
from .errors import SplitmirrorError, UserError
from .hooks import Hooks
from .operations import DrillConfig
from .processes import how_it_ended, kill_group, last_words, wait_exit
from .restore import from_catalog, locate_archive, restore_archive
from .restore_steps import RestoreStep, for_route

#: The label every drill container carries (``docker ps --filter label=splitmirror.drill``).
LABEL = "splitmirror.drill"


@dataclasses.dataclass(frozen=True)
class DrillResult:
    record: DrillRecord
    archive: str
    directory: Path
    kept: bool  # the scratch directory was kept (``--keep``)

    @property
    def passed(self) -> bool:
        return self.record.status == "PASSED"

    def to_json(self) -> dict[str, Any]:
        return {**self.record.to_json(), "archive": self.archive, "directory": str(self.directory),
                "kept": self.kept}  # fmt: skip


def settings(config: Config) -> DrillConfig:
    """The configuration's ``[drill]``, or the defaults (host route, no query)."""
    return config.drill or DrillConfig()


def run_drill(
    catalog: Catalog, session_id: int, config: Config, hooks: Hooks, *, keep: bool = False
) -> DrillResult:
    """Drill session ``session_id``'s archive; the outcome is recorded whatever it is, a
    SIGTERM or SIGHUP included (they end the drill as a failure, its copy stopped and removed)."""
    wanted = settings(config)
    summary = catalog.get(session_id)
    scratch = scratch_of(config)
    started, clock = utc_now(), time.monotonic()
    # The catalog's tag names what a drill leaves (its scratch directory, its container's label):
    # drill ids are per catalog, and catalogs may share a scratch directory.
    tag = catalog.address.tag
    drill_id, let_go = catalog.drill_started(
        session_id,
        name=summary.name,
        started_at=started,
        abandoned=lambda dead: _remove_leftovers(scratch, tag, dead),
    )
    directory = scratch / f"{PREFIX}{tag}-{drill_id}-(not made)"
    route: DrillRoute = ""
    checks: list[str] = []
    error: str | None = "the drill ended before it recorded an outcome"
    source: object = summary.archive
    interrupted: list[str] = []
    try:
        with _signals_end_the_drill(interrupted):
            directory = _scratch_directory(scratch, tag, drill_id)
            source, files = locate_archive(session_id, None, catalog.address)
            restored = restore_archive(
                source, directory / "restore", expected=from_catalog(files or []), hooks=hooks
            )
            engine = hooks.engine_for_url(config.database.url)
            on_host = any(step.route == "host" for step in restored.steps)
            route = "container" if wanted.image else ("host" if on_host else "")
            copy = DrillCopy(
                directory=restored.directory, manifest=restored.manifest, route=route,
                host="127.0.0.1" if route else None, port=_free_port() if route == "host" else None,
                url=config.database.url, options=plugin_options(config, "database", engine.options_model),
                query=wanted.query, deadline=clock + wanted.timeout, path=_path(wanted),
            )  # fmt: skip
            try:
                label = f"{tag}-{drill_id}"
                with _started(engine, restored.steps, copy, directory, wanted.image or "", label) as ready:
                    checks = engine.drill_check(ready)
            finally:  # a start step that failed may still have left the server running
                if route == "host":
                    with contextlib.suppress(Exception):
                        engine.drill_stop(copy)
        error = None
    except (DrillFailed, UserError, DrillInterrupted) as failure:
        # A signal inside a database driver's call may come out as the driver's own error.
        error = f"interrupted by {interrupted[0]}" if interrupted else str(failure)
    except BaseException as bug:  # recorded as what it is, then raised with its traceback
        error = f"interrupted by {interrupted[0]}" if interrupted else f"{type(bug).__name__}: {bug}"
        raise
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
        catalog.finish_drill(
            drill_id, status="FAILED" if error else "PASSED", finished_at=utc_now(),
            duration_ms=(time.monotonic() - clock) * 1000, route=route, checks=checks, error=error,
        )  # fmt: skip
        let_go()
    record = next(d for d in catalog.drills(session_id=session_id) if d.id == drill_id)
    return DrillResult(record, str(source), directory, keep)


class DrillInterrupted(SplitmirrorError):
    """SIGTERM or SIGHUP during a drill (systemd stopping the unit, a closed terminal)."""


@contextlib.contextmanager
def _signals_end_the_drill(interrupted: list[str]) -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT as an exception, so the copy is stopped, the container removed
    and the outcome recorded on the way out, as for any failure; the signal's name goes into
    ``interrupted``.  Only the first is raised: a second one must not cut the cleanup short."""

    def interrupt(signum: int, frame: object) -> None:
        interrupted.append(signal.Signals(signum).name)
        if len(interrupted) == 1:
            raise DrillInterrupted(f"interrupted by {interrupted[0]}")

    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {signum: signal.signal(signum, interrupt) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


#: Names a drill's scratch directory: ``splitmirror-drill-TAG-ID-random``.
PREFIX = "splitmirror-drill-"


def _remove_leftovers(scratch: Path, tag: str, drill_id: int) -> None:
    """What a drill killed outright left: its scratch directory, its container.  (A server its
    host steps started is not found this way: operations.md says so.)"""
    for left in scratch.glob(f"{PREFIX}{tag}-{drill_id}-*"):
        shutil.rmtree(left, ignore_errors=True)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={LABEL}={tag}-{drill_id}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        for container in listed.stdout.split():
            _remove(container)


def _scratch_directory(scratch: Path, tag: str, drill_id: int) -> Path:
    """A directory of the drill's own in ``scratch``: the server's own user (postgres, mysql)
    must pass through to the restore its steps hand it (0711); nobody may list what is in it."""
    try:
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{tag}-{drill_id}-", dir=scratch))
        directory.chmod(0o711)
    except OSError as error:
        raise DrillFailed(
            f"cannot make a directory in [drill] scratch {scratch} ({error.strerror}); give splitmirror "
            "a directory it may write"
        ) from None
    return directory


def _path(wanted: DrillConfig) -> str:
    """``PATH`` with ``[drill] binaries`` first."""
    return os.pathsep.join([*([str(wanted.binaries)] if wanted.binaries else []), os.environ.get("PATH", "")])


def scratch_of(config: Config) -> Path:
    """Where restores go: ``[drill] scratch``, else the system's temporary directory; never
    inside the primary or the mirror (a restore there would be backed up, or clobbered)."""
    scratch = (settings(config).scratch or Path(tempfile.gettempdir())).resolve()
    for key, place in (("primary", config.mirror.primary), ("mirror", config.mirror.mirror)):
        if scratch.is_relative_to(Path(place).resolve()):
            raise UserError(
                f"[drill] scratch {scratch} is inside the [mirror] {key}; point it at a directory of "
                "its own, such as /var/tmp/splitmirror-drill"
            )
    if not scratch.is_dir():
        raise UserError(f"[drill] scratch {scratch} is not a directory; create it or choose another")
    return scratch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _started(
    engine: type[DatabaseEngine], steps: Sequence[RestoreStep], copy: DrillCopy, directory: Path, image: str,
    label: str,
) -> Iterator[DrillCopy]:  # fmt: skip
    """Start ``copy`` by its route's steps and yield it, reachable; stop it on leaving, pass or
    fail (the host route's daemon, if its steps leave one, is the engine's ``drill_stop``)."""
    if copy.route == "":
        yield copy
        return
    if engine.drill_port is None:
        raise DrillFailed(
            f"[drill] image is set, but {engine.name} copies are opened in place, not started: remove image"
            if copy.route == "container"
            else f"the {engine.name} engine names no server port, so its copy cannot be reached"
        )
    environment = {**os.environ, "PATH": copy.path}
    if copy.route == "container":
        _run_steps([s for s in for_route(steps, "container") if s.kind == "run"], environment, copy)
        with _container(steps, image, engine.drill_port, label) as (container, port):
            yield dataclasses.replace(copy, port=port, running=lambda: _running(container))
        return
    assert copy.port is not None
    environment.update(engine.drill_environment(copy.port, directory))
    started: list[subprocess.Popen[bytes]] = []
    try:
        for step in for_route(steps, "host"):
            if step.kind == "run":
                _run_steps([step], environment, copy)
            elif step.kind == "start":
                if shutil.which(step.argv[0], path=copy.path) is None:
                    raise DrillFailed(_missing(step))
                with (directory / "server.log").open("ab") as log:
                    started.append(
                        subprocess.Popen(
                            step.argv,
                            env=environment,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
        yield dataclasses.replace(copy, running=lambda: all(p.poll() is None for p in started))
    finally:
        for process in started:
            _end(process)


def _run_steps(steps: Sequence[RestoreStep], environment: Mapping[str, str], copy: DrillCopy) -> None:
    """Each ``run`` step to completion, in a process group of its own (killed with what it
    started when the drill's time is up), within ``[drill] timeout``."""
    for step in steps:
        with tempfile.TemporaryFile() as said:
            try:
                process = subprocess.Popen(
                    step.argv, env=dict(environment), stdin=subprocess.DEVNULL, stdout=said, stderr=said,
                    start_new_session=True,
                )  # fmt: skip
            except FileNotFoundError:
                raise DrillFailed(_missing(step)) from None
            try:
                code = wait_exit(process, copy.left())
            except subprocess.TimeoutExpired:
                kill_group(process)
                raise DrillFailed(
                    f"the restore step `{step.text()}` did not finish within [drill] timeout"
                ) from None
            except BaseException:
                kill_group(process)
                raise
            # Not killed when it exits: a step such as `pg_ctl start` leaves the server it started.
            if code != 0:
                raise DrillFailed(
                    f"the restore step `{step.text()}` {how_it_ended(code)}: {last_words(said, 3)}"
                )


def _missing(step: RestoreStep) -> str:
    return (
        f"the restore step `{step.text()}` needs {step.argv[0]}, which is not on PATH; install the "
        "server's programs or name their directory in [drill] binaries (or, for a server that runs "
        "in a container, name its image in [drill] image)"
    )


def _end(process: subprocess.Popen[bytes]) -> None:
    """A server a ``start`` step runs: asked to shut down (SIGTERM), killed after 30 s."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        kill_group(process)


@contextlib.contextmanager
def _container(
    steps: Sequence[RestoreStep], image: str, inner_port: int, label: str
) -> Iterator[tuple[str, int]]:
    """The container route's ``docker run`` step with ``image`` for ``IMAGE``, ``inner_port``
    published on 127.0.0.1; yields the container and the published port; removes the container
    on leaving."""
    found = [step for step in steps if step.kind == "container"]
    if len(found) != 1:
        raise DrillFailed(
            f"[drill] image is set, but the restore steps have {len(found)} container steps, not one; "
            "this engine's copies start on the host: remove image"
        )
    step = found[0]
    argv = [
        "docker", "run", "--label", f"{LABEL}={label}", "-p", f"127.0.0.1::{inner_port}",
        *step.docker_options, image, *step.server_args,
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    except FileNotFoundError:
        raise DrillFailed("[drill] image is set, but there is no docker program on PATH") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()[-2:]
        raise DrillFailed(f"the container step failed: {' / '.join(said)}")
    container = done.stdout.strip()
    try:
        published = subprocess.run(
            ["docker", "port", container, f"{inner_port}/tcp"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.split()
        if not published:
            raise DrillFailed(f"the container {container[:12]} stopped at once")
        yield container, int(published[0].rsplit(":", 1)[1])
    except DrillFailed as failure:
        if _running(container):  # it opened: the engine's sentence says it all
            raise
        raise DrillFailed(f"{failure} (the server's last words: {_logs(container)})") from None
    finally:
        _remove(container)


def _remove(container: str) -> None:
    subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True, timeout=120, check=False)


def _running(container: str) -> bool:
    done = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", container],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() == "true"


def _logs(container: str) -> str:
    done = subprocess.run(
        ["docker", "logs", "--tail", "5", container], capture_output=True, text=True, timeout=60
    )
    return " / ".join((done.stdout + done.stderr).strip().splitlines()[-5:]) or "(no output)"
