"""Connecting to Oracle from an ``oracle://USER@HOST:PORT/SERVICE`` URL, without a password in it.

python-oracledb in thin mode: pure Python, no Instant Client, and so no operating-system
authentication (``/ as sysdba``); a password is always needed.  It comes from the file named by
``[database] password_file`` (its first line; the file must not be readable by group or
others, as a ``.pgpass`` must not), else from ``$SPLITMIRROR_ORACLE_PASSWORD``: never from the
URL or the configuration, so it reaches neither argv, the catalog nor the logs.

The session logs in with an administrative privilege (``privilege``: SYSBACKUP by default,
the one Oracle made for backups; or SYSDBA; or ``none`` for an account holding the system
privileges itself), which for a remote login needs the account in the password file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote

import oracledb

SCHEMES = ("oracle",)
DEFAULT_PORT = 1521
#: Where the password comes from, in sentences.
PASSWORD_SOURCES = "SPLITMIRROR_ORACLE_PASSWORD or [database] password_file"
PASSWORD_VARIABLE = "SPLITMIRROR_ORACLE_PASSWORD"
#: ``privilege`` → python-oracledb's authentication mode.
MODES = {
    "sysbackup": oracledb.AUTH_MODE_SYSBKP,
    "sysdba": oracledb.AUTH_MODE_SYSDBA,
    "none": oracledb.AUTH_MODE_DEFAULT,
}


class ConnectionProblem(ValueError):
    """The URL or the password source cannot be used; the message is one sentence."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to connect and as whom (never the password)."""

    user: str
    host: str
    port: int
    service: str


def parse_url(url: str) -> Target:
    """The parts of ``oracle://USER@HOST[:PORT]/SERVICE``; :class:`ConnectionProblem` naming
    what is missing.  Read by hand, not by ``urllib``: Oracle's common users are named
    ``C##NAME``, and a URL parser takes that ``#`` for the start of a fragment (``%23`` works
    too)."""
    scheme, separator, rest = url.partition("://")
    if scheme not in SCHEMES or not separator:
        raise ConnectionProblem(f"{url!r} is not an oracle:// URL")
    userinfo, at, location = rest.rpartition("@")
    if ":" in userinfo:
        raise ConnectionProblem(
            f"the [database] url carries a password; remove it and put the password in {PASSWORD_SOURCES}"
        )
    address, _slash, service = location.partition("/")
    service = unquote(service.split("?", 1)[0].strip("/"))
    if address.startswith("["):  # [IPv6]:port
        host, _bracket, after = address[1:].partition("]")
        port_text = after.removeprefix(":")
    else:
        host, _colon, port_text = address.partition(":")
    if not port_text.isdigit() and port_text:
        raise ConnectionProblem(f"the port in {url!r} is not a number")
    if not at or not userinfo or not host or not service:
        raise ConnectionProblem(
            f"{url!r} must name the user, the host and the service: oracle://USER@HOST:1521/SERVICE "
            "(the container database's own service, such as FREE or ORCLCDB, not a PDB's)"
        )
    return Target(unquote(userinfo), host, int(port_text or DEFAULT_PORT), service)


def password(password_file: Path | None) -> str:
    """The password from ``password_file`` or :data:`PASSWORD_VARIABLE`; one sentence when
    neither gives one, or when the file is readable by others."""
    if password_file is not None:
        try:
            mode = password_file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConnectionProblem(
                    f"the password file {password_file} is readable by group or others; "
                    f"chmod 600 {password_file}"
                )
            lines = password_file.read_text().splitlines()
        except OSError as error:
            raise ConnectionProblem(
                f"cannot read the password file {password_file} ({error.strerror}); "
                "check [database] password_file"
            ) from None
        if not lines or not lines[0]:
            raise ConnectionProblem(
                f"the password file {password_file} is empty; put the password on its first line"
            )
        return lines[0]
    found = os.environ.get(PASSWORD_VARIABLE)
    if not found:
        raise ConnectionProblem(
            f"no password for Oracle: set {PASSWORD_VARIABLE} or [database] password_file "
            "(thin mode has no operating-system login)"
        )
    return found


def connect(
    url: str, *, privilege: str, password_file: Path | None, timeout: float, call_timeout: float
) -> oracledb.Connection:
    """A connection with autocommit on, ``timeout`` seconds to connect and ``call_timeout``
    seconds for each round trip (a statement that outlives it fails, and the connection with
    it); raises :class:`ConnectionProblem` or python-oracledb's errors."""
    target = parse_url(url)
    conn = oracledb.connect(
        user=target.user,
        password=password(password_file),
        host=target.host,
        port=target.port,
        service_name=target.service,
        mode=MODES[privilege],
        tcp_connect_timeout=max(1.0, timeout),
        retry_count=0,
    )
    conn.autocommit = True
    conn.call_timeout = max(1, int(call_timeout * 1000))
    return conn


def code(error: BaseException) -> str:
    """The ``ORA-NNNNN`` (or ``DPY-NNNN``) code of a python-oracledb error, or ``""``."""
    detail = error.args[0] if error.args else None
    return str(getattr(detail, "full_code", "") or "")


def message(error: BaseException) -> str:
    """A python-oracledb error on one line: its ``ORA-``/``DPY-`` line, and the cause the driver
    puts on the next (``[Errno 111] Connection refused``), without the help link or the
    connection id."""
    detail = error.args[0] if error.args else error
    text = str(getattr(detail, "message", detail))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Help:")]
    if not lines:
        return type(error).__name__
    first = re.sub(r" \(CONNECTION_ID=[^)]*\)", "", lines[0])
    return f"{first.rstrip('.')}: {lines[1]}" if len(lines) > 1 else first
