"""The site's programs, run the same way wherever splitmirror starts one (the command mirror's
split and resync commands, the command target's write and read commands).

An argument list, never a shell; a process group of its own, so that killing it kills what it
started too; its exit waited on through a pidfd (woken by the exit itself, not by polling); and,
when it fails, its own last words as the end of the one-sentence error.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
from collections.abc import Iterable, Mapping
from typing import IO

#: How much of a failing program's own words an error keeps.
SAID_LIMIT = 300

#: Environment variables that hold a database's password (each engine's
#: ``DatabaseEngine.secret_variables``, gathered as engines register): never handed on.
_SECRETS: set[str] = set()


def keep_secret(names: Iterable[str]) -> None:
    """Name variables :func:`site_environment` leaves out."""
    _SECRETS.update(names)


def site_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a site's program runs in (a notifier, a target or mirror command): this
    process's, without the database's password (a chat hook has no business with
    ``PGPASSWORD``), plus ``extra``.  The engines are gathered first if this process has not yet
    (``verify`` running a ``read_command``, the watchdog's notifier): their names are the list."""
    _gather_secrets()
    return {k: v for k, v in os.environ.items() if k not in _SECRETS} | dict(extra or {})


_gathered = False


def _gather_secrets() -> None:
    global _gathered
    if not _gathered:
        _gathered = True
        from .hooks import Hooks  # here: the hooks import this module

        with contextlib.suppress(Exception):  # a broken plugin is reported where it is used
            Hooks().engines.names()


def wait_exit(process: subprocess.Popen[bytes], timeout: float | None) -> int:
    """The exit code, woken by the exit itself (a pidfd), not by ``Popen.wait``'s polling,
    which sleeps up to 50 ms at a time.  A signal handler that raises still interrupts it;
    :class:`subprocess.TimeoutExpired` after ``timeout`` seconds (None: no limit)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # before Linux 5.3, or already reaped
        return process.wait(timeout)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(process.args, timeout or 0)
    finally:
        os.close(pidfd)
    return process.wait()


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program's whole process group; reap it if it is gone at once (a process
    in uninterruptible sleep is left to the kernel: the session must not wait on it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(0.1)


def how_it_ended(code: int) -> str:
    """``exited 1`` or ``was killed by signal 9 (SIGKILL)``, for a sentence about a program."""
    if code >= 0:
        return f"exited {code}"
    try:
        name = f" ({signal.Signals(-code).name})"
    except ValueError:
        name = ""
    return f"was killed by signal {-code}{name}"


def last_words(output: IO[bytes], lines: int = 2) -> str:
    """The last non-blank ``lines`` lines a program wrote to ``output`` (a file it wrote its
    standard error to), joined with ``" / "`` and cut to :data:`SAID_LIMIT` characters."""
    with contextlib.suppress(OSError, ValueError):
        size = output.seek(0, os.SEEK_END)
        output.seek(max(0, size - 16 * SAID_LIMIT))
        text = output.read().decode(errors="replace")
        said = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        joined = " / ".join(said)
        return joined if len(joined) <= SAID_LIMIT else "…" + joined[-SAID_LIMIT:]
    return ""
