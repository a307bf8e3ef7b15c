"""What to do after a restore: one list of steps, for people and for machines alike.

An engine's ``prepare_restore`` returns :class:`RestoreStep` objects.  ``splitmirror restore``
prints each one's :meth:`~RestoreStep.text`; ``restore --json`` gives the same objects'
fields.  Both come from the same ``argv``, so a script that executes the JSON form runs exactly
the command a DBA reads, and the contract suite's restore drill does just that
(:mod:`splitmirror.testing.steps`): a restored copy that starts only with options a test
harness added of its own is caught.

Steps come in *routes*.  ``host`` steps start the database on this host; ``container`` steps
start it in a container instead (for a server that ran in one); a step with no route applies
whichever way the database was started (an integrity check, the point-in-time recipe).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

#: ``run``: a command that runs to completion.  ``start``: a command that starts the server and
#: runs until it stops (printed with ``&``).  ``container``: a ``docker run`` that starts the
#: server in a container; its ``argv`` names the image :data:`IMAGE`.  ``manual``: something only
#: a person can do, in words.  ``note``: what to know, no command.
Kind = Literal["run", "start", "container", "manual", "note"]
Route = Literal["", "host", "container"]
KINDS: tuple[Kind, ...] = ("run", "start", "container", "manual", "note")

#: Stands for the server's own image in a ``container`` step: splitmirror talks to the server
#: over the network and cannot know which image it runs.
IMAGE = "IMAGE"


@dataclasses.dataclass(frozen=True)
class RestoreStep:
    """One step after the files are in place.  Build them with :meth:`run`, :meth:`start`,
    :meth:`container`, :meth:`manual` and :meth:`note`."""

    kind: Kind
    argv: tuple[str, ...] = ()
    comment: str = ""
    route: Route = ""

    @classmethod
    def run(cls, *argv: str | Path, comment: str = "", route: Route = "") -> RestoreStep:
        return cls("run", _strings(argv), comment, route)

    @classmethod
    def start(cls, *argv: str | Path, comment: str = "") -> RestoreStep:
        return cls("start", _strings(argv), comment, "host")

    @classmethod
    def container(
        cls,
        mounts: Iterable[tuple[str | Path, str | Path]],
        server_args: Sequence[str] = (),
        comment: str = "",
        *,
        env: Mapping[str, str] | None = None,
    ) -> RestoreStep:
        """``docker run -d -e NAME=VALUE ... -v HOST:INSIDE ... IMAGE SERVER_ARGS``:
        ``server_args`` go to the server (the upstream images pass arguments that start with
        ``-`` to it)."""
        variables = [arg for name, value in (env or {}).items() for arg in ("-e", f"{name}={value}")]
        volumes = [arg for host, inside in mounts for arg in ("-v", f"{host}:{inside}")]
        argv = ("docker", "run", "-d", *variables, *volumes, IMAGE, *server_args)
        return cls("container", argv, comment, "container")

    @classmethod
    def manual(cls, words: str, *, route: Route = "") -> RestoreStep:
        return cls("manual", (), words, route)

    @classmethod
    def note(cls, words: str, *, route: Route = "") -> RestoreStep:
        return cls("note", (), words, route)

    @property
    def server_args(self) -> tuple[str, ...]:
        """A ``container`` step's arguments to the server (after :data:`IMAGE`)."""
        return self.argv[self.argv.index(IMAGE) + 1 :] if IMAGE in self.argv else ()

    @property
    def docker_options(self) -> tuple[str, ...]:
        """A ``container`` step's options to ``docker run`` (between ``run`` and :data:`IMAGE`)."""
        return self.argv[2 : self.argv.index(IMAGE)] if IMAGE in self.argv else ()

    def text(self) -> str:
        """The line ``restore`` prints: the command as a shell would take it, then the comment
        (on the same line, whatever it holds: a line break would start another command)."""
        comment = " ".join(self.comment.split())
        if self.kind in ("manual", "note"):
            return comment if self.kind == "manual" else f"# {comment}"
        command = shlex.join(self.argv) + (" &" if self.kind == "start" else "")
        return f"{command}   # {comment}" if comment else command

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "route": self.route,
            "argv": list(self.argv),
            "comment": self.comment,
            "text": self.text(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestoreStep:
        """The inverse of :meth:`to_json` (the ``text`` is derived, so it is not read back)."""
        kind, route = data["kind"], data.get("route", "")
        if kind not in KINDS or route not in ("", "host", "container"):
            raise ValueError(f"not a restore step: {data!r}")
        return cls(kind, tuple(str(a) for a in data.get("argv", ())), str(data.get("comment", "")), route)


def as_step(step: RestoreStep | str) -> RestoreStep:
    """A plugin written before steps had fields returns strings: each is shown as it is."""
    return step if isinstance(step, RestoreStep) else RestoreStep.manual(step)


def for_route(steps: Iterable[RestoreStep], route: Route) -> list[RestoreStep]:
    """The steps to follow for one way of starting the database, in order."""
    return [step for step in steps if step.route in ("", route)]


def grouped(steps: Sequence[RestoreStep]) -> list[tuple[str, list[RestoreStep]]]:
    """Consecutive steps of one route under a heading, as ``restore`` prints them:
    ``on this host``, ``or in a container``, ``then`` (an empty heading for leading common steps)."""
    groups: list[tuple[str, list[RestoreStep]]] = []
    previous: Route | None = None
    for step in steps:
        if step.route != previous or not groups:
            heading = {
                "host": "on this host",
                "container": "or in a container" if previous == "host" else "in a container",
                "": "then" if groups else "",
            }[step.route]
            groups.append((heading, []))
            previous = step.route
        groups[-1][1].append(step)
    return groups


def _strings(argv: Sequence[str | Path]) -> tuple[str, ...]:
    return tuple(str(arg) for arg in argv)
