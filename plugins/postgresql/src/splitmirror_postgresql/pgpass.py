"""The password libpq would use for the *live* server, for a connection to somewhere else.

A backup connects with the ``[database] url`` and nothing more: libpq takes the password from
``PGPASSWORD``, else from the password file (the URL's ``passfile``, ``$PGPASSFILE``, else
``~/.pgpass``), matching each line's ``host:port:database:user`` against the URL's.  A drill
reaches the restored copy at 127.0.0.1 and a port of its own, so libpq's own lookup would
match the copy's host and port, not the live ones the DBA wrote the line for.
:func:`live_password` does libpq's lookup for the live URL (``passwordFromFile`` in
``fe-connect.c``: wildcards, backslash escapes, comments, a file readable by others ignored);
the drill hands the result to the copy's connection as a parameter, never in a URL.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

#: libpq's host for password-file lines when the URL names none, or names its default socket
#: directory.  Which directory that is depends on how libpq was built (Debian's:
#: /var/run/postgresql, upstream's: /tmp), so both forms of a socket host are tried.
DEFAULT_HOST = "localhost"
DEFAULT_PORT = "5432"


def live_password(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The password for ``url``'s server from ``PGPASSWORD`` or the password file, or None
    (libpq then connects without one: trust, peer, a certificate)."""
    env = os.environ if environ is None else environ
    params = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    if env.get("PGPASSWORD"):
        return env["PGPASSWORD"]
    user = params.get("user") or env.get("PGUSER") or pwd.getpwuid(os.geteuid()).pw_name
    dbname = params.get("dbname") or env.get("PGDATABASE") or user
    host = (params.get("host") or env.get("PGHOST") or params.get("hostaddr") or "").split(",")[0]
    port = (params.get("port") or env.get("PGPORT") or DEFAULT_PORT).split(",")[0] or DEFAULT_PORT
    passfile = params.get("passfile") or env.get("PGPASSFILE") or str(Path("~/.pgpass").expanduser())
    hosts = [DEFAULT_HOST] if not host else ([host, DEFAULT_HOST] if host.startswith(("/", "@")) else [host])
    for candidate in hosts:
        found = from_file(Path(passfile), candidate, port, dbname, user)
        if found is not None:
            return found
    return None


def from_file(path: Path, host: str, port: str, dbname: str, user: str) -> str | None:
    """The first line of the password file ``path`` that matches, as libpq reads it; None when
    none does, or the file is missing, not a regular file, or readable by group or others
    (libpq warns and ignores such a file)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            return None
        text = path.read_text(errors="replace")
    except OSError:
        return None
    wanted = (host, port, dbname, user)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = _fields(line)
        if len(fields) < 5:
            continue  # four fields and no password: libpq finds no ':' after the user
        if all(raw == "*" or value == token for (raw, value), token in zip(fields, wanted, strict=False)):
            return fields[4][1]
    return None


def _fields(line: str) -> list[tuple[str, str]]:
    """``(raw, unescaped)`` per ``:``-separated field; a backslash escapes the next character
    (``\\:`` and ``\\\\``).  A raw ``*`` is a wildcard; an escaped ``\\*`` is a star."""
    fields: list[tuple[str, str]] = []
    raw, value, escaped = "", "", False
    for char in line:
        if escaped:
            raw, value, escaped = raw + char, value + char, False
        elif char == "\\":
            raw, escaped = raw + char, True
        elif char == ":":
            fields.append((raw, value))
            raw, value = "", ""
        else:
            raw, value = raw + char, value + char
    if escaped:  # a backslash at the end of the line stands for itself
        raw, value = raw + "\\", value + "\\"
    fields.append((raw, value))
    return fields
