"""Connecting to MySQL or MariaDB from a ``mysql://`` / ``mariadb://`` URL, without a password in it.

``mysql://USER@HOST:PORT/DATABASE`` or ``mysql://USER@localhost/?unix_socket=/run/mysqld/mysqld.sock``.
The password comes from ``$MYSQL_PWD`` (as for the mysql client) or an option file's ``[client]``
group (``~/.my.cnf`` style, named by the engine's ``option_file``, else ``~/.my.cnf`` when it
exists), never from the URL or the config file, so it never reaches argv, the catalog or logs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql
import pymysql.connections

SCHEMES = ("mysql", "mariadb")
DEFAULT_PORT = 3306


class UrlError(ValueError):
    """The URL cannot be used; the message is one sentence."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to connect and as whom (never the password)."""

    user: str
    host: str
    port: int
    database: str | None
    unix_socket: str | None


def parse_url(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise UrlError(f"{url!r} is not a mysql:// or mariadb:// URL")
    if parts.password:
        raise UrlError(
            "the [database] url carries a password; remove it and put the password in MYSQL_PWD or "
            "the [client] group of an option file (option_file, or ~/.my.cnf)"
        )
    query = parse_qs(parts.query)
    socket = query.get("unix_socket", [None])[0]
    database = unquote(parts.path.lstrip("/")) or None
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise UrlError(f"the port in {url!r} is not a number") from None
    return Target(unquote(parts.username or "root"), parts.hostname or "localhost", port, database, socket)


def default_option_file() -> Path | None:
    candidate = Path.home() / ".my.cnf"
    return candidate if candidate.is_file() else None


def connect(
    url: str, *, option_file: Path | None = None, timeout: float = 10.0, database: str | None = None
) -> pymysql.connections.Connection[Any]:
    """A connection in autocommit mode; raises :class:`UrlError` or PyMySQL's errors."""
    target = parse_url(url)
    options = option_file or default_option_file()
    kwargs: dict[str, Any] = {
        "user": target.user,
        "host": target.host,
        "port": target.port,
        "database": database if database is not None else target.database,
        "connect_timeout": max(1, int(timeout)),
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if target.unix_socket:
        kwargs["unix_socket"] = target.unix_socket
    if options is not None:
        kwargs.update(read_default_file=str(options), read_default_group="client")
    # An empty password lets the option file's password through (PyMySQL's rule).
    return pymysql.connect(password=os.environ.get("MYSQL_PWD", ""), **kwargs)
