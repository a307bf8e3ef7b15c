"""Running the command mirror's programs: an argument list (no shell), a timeout, the output.

The model is SAP BRBACKUP's ``split_cmd``/``resync_cmd``: a program that tells the array (LVM,
ZFS, a cloud) what to do and exits 0 when it is done.  Lines it prints beginning ``#INFO`` are
logged as they are; anything else it prints is what a failure says, so its last such line
becomes the session's one-sentence error.  The program runs in a process group of its own,
killed whole when it overstays its timeout or the session is interrupted (the window limit
raises in the middle of the wait): a split command that hangs must not hold the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from ..errors import SplitmirrorError

log = logging.getLogger("splitmirror.mirror.command")

#: The prefix of the lines a command prints for the log.
INFO = "#INFO"
#: How much of a failing command's own words the error keeps.
SAID_LIMIT = 300


class CommandFailed(SplitmirrorError):
    """A command exited non-zero or overstayed its timeout; the message is one sentence."""


def run_command(what: str, argv: Sequence[str], timeout: float, env: Mapping[str, str]) -> None:
    """Run ``argv`` (``what`` names it in the log and the error: "the split command") and wait
    up to ``timeout`` seconds; :class:`CommandFailed` unless it exits 0."""
    log.info("%s: %s", what, " ".join(argv))
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    except OSError as error:
        raise CommandFailed(f"{what} {argv[0]} could not be started: {error.strerror}") from None
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise CommandFailed(
            f"{what} {argv[0]} did not finish within {timeout:g}s and was ended; see what it waits for, "
            "or raise its timeout"
        ) from None
    except BaseException:  # the window limit, Ctrl-C: the group goes first, then the session
        _kill(process)
        raise
    said = _said(output.decode(errors="replace"))
    if process.returncode != 0:
        how = f"was killed by signal {-process.returncode}" if process.returncode < 0 else "failed"
        code = "" if process.returncode < 0 else f" with exit code {process.returncode}"
        raise CommandFailed(f"{what} {argv[0]} {how}{code}" + (f": {said}" if said else ""))


def _said(output: str) -> str:
    """Log the ``#INFO`` lines; the last other line, for a failure to quote."""
    last = ""
    for line in output.splitlines():
        if line.startswith(INFO):
            log.info("%s", line[len(INFO) :].strip())
        elif line.strip():
            last = line.strip()
    return last[:SAID_LIMIT]


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole process group and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.communicate(timeout=5)
