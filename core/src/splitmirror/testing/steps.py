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
            try:
                done = subprocess.run(
                    step.argv, env=environment, capture_output=True, timeout=300, check=False
                )
            except FileNotFoundError:
                raise StepFailed(
                    f"the printed step `{step.text()}` needs {step.argv[0]}, which is not installed"
                ) from None
            if done.returncode != 0:
                output = (done.stdout + done.stderr).decode(errors="replace").strip()
                raise StepFailed(f"the printed step `{step.text()}` exited {done.returncode}: {output}")
        elif step.kind == "start":
            # The child keeps its own copy of the log's descriptor; ours closes at once.
            with open(log, "ab") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
                started.append(
                    subprocess.Popen(step.argv, env=environment, stdout=out, stderr=subprocess.STDOUT)
                )
    return started


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
    """Run the restore's ``docker run`` step with ``image`` for ``IMAGE`` and ``port`` published
    on 127.0.0.1; the container is removed on leaving, pass or fail."""
    step = container_step(steps)
    container = PrintedContainer([*step.docker_options], image, [*step.server_args], port=port)
    try:
        yield container.start()
    finally:
        container.stop()
