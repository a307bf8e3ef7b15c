"""One exception root, and the errors the command line prints as a single sentence.

Library code raises; only the CLI decides how to exit.  A :class:`UserError` is a *handled*
error: its message is already the sentence a DBA should read (what is wrong, what to do), so the
CLI prints it without a traceback and exits with its ``exit_code``.
"""

from __future__ import annotations

from typing import ClassVar


class SplitmirrorError(Exception):
    """Root of every exception splitmirror raises on purpose."""


class UserError(SplitmirrorError):
    """A problem the user can fix; printed as one sentence, never with a traceback."""

    exit_code: ClassVar[int] = 2


class ConfigError(UserError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2


class PluginError(UserError):
    """A plugin is unknown, broken, or two plugins claim the same name."""

    exit_code = 2


class PreflightError(UserError):
    """A preflight check failed: nothing was changed on the database."""

    exit_code = 3


class SessionBusyError(UserError):
    """Another session holds the lock for this configuration."""

    exit_code = 4


class CatalogError(UserError):
    """The catalog cannot be opened, or the session asked for is not in it."""

    exit_code = 5


class SessionFailed(SplitmirrorError):
    """A session started and failed; the catalog row says ``FAILED`` with the phase.

    ``reason`` is the first line of the underlying error, as the catalog's ``error`` holds it;
    ``phase`` is where it happened.  The message (what the CLI prints) puts them together:
    ``session 12 failed in SPLIT: mirror device is smaller than the primary``.
    """

    exit_code: ClassVar[int] = 1

    def __init__(self, session_id: int, phase: str, reason: str) -> None:
        super().__init__(f"session {session_id} failed in {phase}: {reason}")
        self.session_id = session_id
        self.phase = phase
        self.reason = reason


class WindowExceeded(SplitmirrorError):
    """The quiesce window passed ``max_window``; the session aborts and unquiesces."""


class SessionInterrupted(SplitmirrorError):
    """SIGTERM (or SIGINT) arrived during a session; raised where the session was."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
