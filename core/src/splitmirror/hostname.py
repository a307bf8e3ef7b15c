"""This host's name, as the catalog records who ran a phase (an off-host session runs on two)."""

from __future__ import annotations

import os
import socket


def host() -> str:
    """``$SPLITMIRROR_HOST`` when set (a container's own name may be a random id), else the host name."""
    return os.environ.get("SPLITMIRROR_HOST") or socket.gethostname()
