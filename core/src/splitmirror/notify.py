"""``[notify] command``: a program told of every session's end, as borgmatic's hooks are.

It gets the session's JSON summary (``backup --json``'s shape) on its standard input and the
outcome in its environment (``SPLITMIRROR_STATUS``, ``SPLITMIRROR_SESSION``, ``SPLITMIRROR_NAME``,
``SPLITMIRROR_FAILED_PHASE``, ``SPLITMIRROR_ERROR``, ``SPLITMIRROR_ARCHIVE``), so a one-line
``curl`` or a mail script needs no JSON parser.  It runs after the catalog recorded the outcome,
so nothing it does changes it: a notifier that fails, hangs past its ``timeout`` (its whole process
group is killed) or cannot be started is logged as a warning and the session's exit code stays
what the session earned.  Its output never reaches splitmirror's standard output, which may be the
archive itself (``path = "-"``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from typing import TYPE_CHECKING

from . import impl
from .catalog.base import SessionSummary
from .config import Config
from .processes import how_it_ended, kill_group, last_words, site_environment, wait_exit
from .report import summary_json

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("splitmirror.notify")


def environment(summary: SessionSummary) -> dict[str, str]:
    return {
        "SPLITMIRROR_STATUS": summary.status,
        "SPLITMIRROR_SESSION": str(summary.id),
        "SPLITMIRROR_NAME": summary.name,
        "SPLITMIRROR_FAILED_PHASE": summary.failed_phase or "",
        "SPLITMIRROR_ERROR": summary.error or "",
        "SPLITMIRROR_ARCHIVE": summary.archive or "",
    }


def notify(config: Config, summary: SessionSummary) -> str | None:
    """Run ``config``'s notifier for ``summary``; what went wrong in one sentence, or None."""
    if config.notify is None or summary.status not in config.notify.on:
        return None
    argv, timeout = config.notify.command, config.notify.timeout
    with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as said:
        given.write(json.dumps(summary_json(summary), default=str).encode())
        given.seek(0)
        try:
            process = subprocess.Popen(
                argv, stdin=given, stdout=said, stderr=said, env=site_environment(environment(summary)),
                start_new_session=True,
            )  # fmt: skip
        except OSError as error:
            return f"the notify command {argv[0]} could not be started: {error.strerror}"
        try:
            code = wait_exit(process, timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            return f"the notify command {argv[0]} did not finish within {timeout:g}s and was ended"
        except BaseException:
            kill_group(process)
            raise
        if code != 0:
            words = last_words(said)
            return f"the notify command {argv[0]} {how_it_ended(code)}" + (f": {words}" if words else "")
    return None


@impl
def splitmirror_session_finished(session: Session, summary: SessionSummary) -> None:
    problem = notify(session.config, summary)
    if problem:
        log.warning("%s; the session's outcome stands (%s)", problem, summary.status)
