"""Starting a restored copy exactly as ``splitmirror restore`` printed it.

A restore drill proves only what it runs.  A harness that starts restored copies with server
options of its own (a binary log, say) hides a restore that does not start by the printed
steps: that happened, so drills start copies with these functions, which execute the
:class:`~splitmirror.restore_steps.RestoreStep` objects the restore returned (the same objects
``restore`` prints and ``restore --json`` emits) and add nothing the server reads.

What a harness may add is plumbing a DBA's shell has anyway: environment variables (``PATH`` to
the server's binaries, ``PGPORT``), and for a container the options ``docker run`` needs to be
reachable and cleaned up (a published port on 127.0.0.1, a label) plus the image that stands in
for the step's ``IMAGE``.  Everything after ``IMAGE`` goes to the server untouched.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..restore_steps import RestoreStep, for_route
from .containers import PrintedContainer


class StepFailed(RuntimeError):
    """A printed step failed as written: the restore's instructions are wrong."""


def run_host_steps(
    steps: Sequence[RestoreStep], *, env: Mapping[str, str] | None = None, log: Path | None = None
) -> list[subprocess.Popen[bytes]]:
    """Run the steps that start the copy on this host, in order: ``run`` steps to completion
    (a failure raises :class:`StepFailed` with the step and its output), ``start`` steps in the
    background, as the printed ``&`` says; returns those processes (the caller ends them).
    ``manual`` and ``note`` steps are for people and are skipped."""
    environment = {**os.environ, **(env or {})}
    started: list[subprocess.Popen[bytes]] = []
    for step in for_route(steps, "host"):
        if step.kind == "run":
            _run([step], environment)
        elif step.kind == "start":
            # The child keeps its own copy of the log's descriptor; ours closes at once.
            with open(log, "ab") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
                started.append(
                    subprocess.Popen(step.argv, env=environment, stdout=out, stderr=subprocess.STDOUT)
                )
    return started


def _run(steps: Sequence[RestoreStep], environment: Mapping[str, str]) -> None:
    """Each step's command to completion; :class:`StepFailed` with its output when one fails."""
    for step in steps:
        try:
            done = subprocess.run(step.argv, env=environment, capture_output=True, timeout=300, check=False)
        except FileNotFoundError:
            raise StepFailed(
                f"the printed step `{step.text()}` needs {step.argv[0]}, which is not installed"
            ) from None
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise StepFailed(f"the printed step `{step.text()}` exited {done.returncode}: {output}")


def container_step(steps: Sequence[RestoreStep]) -> RestoreStep:
    """The one ``container`` step of a restore; :class:`StepFailed` when there is none."""
    found = [step for step in steps if step.kind == "container"]
    if len(found) != 1:
        printed = "\n".join(step.text() for step in steps)
        raise StepFailed(
            f"expected one `docker run` step among the printed steps, found {len(found)}:\n{printed}"
        )
    return found[0]


@contextlib.contextmanager
def started_in_container(steps: Sequence[RestoreStep], image: str, port: int) -> Iterator[PrintedContainer]:
    """Run the restore's container route: its ``run`` steps on this host, then its ``docker
    run`` step with ``image`` for ``IMAGE`` and ``port`` published on 127.0.0.1; the container
    is removed on leaving, pass or fail."""
    step = container_step(steps)
    _run([s for s in steps if s.route == "container" and s.kind == "run"], dict(os.environ))
    container = PrintedContainer([*step.docker_options], image, [*step.server_args], port=port)
    try:
        yield container.start()
    finally:
        container.stop()


@contextlib.contextmanager
def host_steps_in_container(
    steps: Sequence[RestoreStep], image: str, port: int, directory: Path
) -> Iterator[PrintedContainer]:
    """Run the restore's *host* steps, as printed, inside a container of ``image`` that stands
    in for a database host: ``directory`` (the restore) is mounted at its own path, and the
    ``run`` steps and then the ``start`` step run in a shell there, the server in the
    foreground.  For servers whose binaries this machine lacks (MySQL, MariaDB): the bare
    server line is proven without installing the server here."""
    host = for_route(steps, "host")
    starts = [step for step in host if step.kind == "start"]
    if len(starts) != 1:
        printed = "\n".join(step.text() for step in steps)
        raise StepFailed(
            f"expected one step that starts the server on this host, found {len(starts)}:\n{printed}"
        )
    script = [shlex.join(step.argv) for step in host if step.kind == "run"] + [
        f"exec {shlex.join(starts[0].argv)}"
    ]
    options = ["-d", "-v", f"{directory}:{directory}", "--entrypoint", "sh"]
    container = PrintedContainer(options, image, ["-c", " && ".join(script)], port=port)
    try:
        yield container.start()
    finally:
        container.stop()
