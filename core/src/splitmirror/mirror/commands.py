"""Running the command mirror's programs: an argument list (no shell), a timeout, the output.

The model is SAP BRBACKUP's ``split_cmd``/``resync_cmd``: a program that tells the array (LVM,
ZFS, a cloud) what to do and exits 0 when it is done.  Lines it prints beginning ``#INFO`` are
logged as they come; anything else it prints is what a failure says, so its last such line
becomes the session's one-sentence error.

The program runs in a process group of its own.  Its *exit* is what is waited for, not the end
of its output: a program that leaves a child holding its standard output (``ssh`` with a
persistent control connection, a daemon it starts) has still finished.  One that overstays its
timeout, or is still running when the session is interrupted (the window limit raises in the
middle of the wait), has its whole group killed and is given 0.1 s to be reaped, no more: a
split command that hangs must not hold the database.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO

from ..errors import SplitmirrorError
from ..processes import SAID_LIMIT, kill_group, site_environment, wait_exit

log = logging.getLogger("splitmirror.mirror.command")

#: The prefix of the lines a command prints for the log.
INFO = "#INFO"
#: How long the output of a program that exited is still read (what a child of its own holds
#: open is not waited for).
DRAIN_S = 0.2


class CommandFailed(SplitmirrorError):
    """A command exited non-zero or overstayed its timeout; the message is one sentence."""


class _Output:
    """Reads a command's output as it comes: ``#INFO`` lines logged, the last other line kept."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.last = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError), stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith(INFO):
                    log.info("%s", line[len(INFO) :].strip())
                elif line.strip():
                    self.last = line.strip()[:SAID_LIMIT]

    def drain(self, seconds: float) -> None:
        self._thread.join(seconds)


def run_command(what: str, argv: Sequence[str], timeout: float, env: Mapping[str, str]) -> None:
    """Run ``argv`` (``what`` names it in the log and the error: "the split command") and wait
    up to ``timeout`` seconds for it to exit; :class:`CommandFailed` unless it exits 0."""
    log.info("%s: %s", what, " ".join(argv))
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=site_environment(env),
            start_new_session=True,
        )
    except OSError as error:
        raise CommandFailed(f"{what} {argv[0]} could not be started: {error.strerror}") from None
    assert process.stdout is not None
    output = _Output(process.stdout)
    try:
        code = wait_exit(process, timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        output.drain(DRAIN_S)
        said = f" (its last words: {output.last})" if output.last else ""
        raise CommandFailed(
            f"{what} {argv[0]} did not finish within {timeout:g}s and was ended{said}; see what it "
            "waits for, or raise its timeout"
        ) from None
    except BaseException:  # the window limit, Ctrl-C: the group goes first, then the session
        kill_group(process)
        raise
    if code != 0:
        output.drain(DRAIN_S)  # its last words (on success, the #INFO lines go on being logged)
        how = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
        raise CommandFailed(f"{what} {argv[0]} {how}" + (f": {output.last}" if output.last else ""))
