"""Where a catalog is: a SQLite file (the embedded default), or a URL that a catalog plugin opens
(``postgresql://backup@catalog-db/splitmirror``, shared by a fleet of hosts).

A catalog behind a URL still needs a place on this host for what only this host uses: the
session locks (one session per configuration) and the drills' scratch names.  That is the
*home*: the SQLite file's directory, or for a URL the state directory
(``$SPLITMIRROR_STATE_DIR``, else the user's data directory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import platformdirs

from ..config import catalog_url, redact_url, url_has_password
from ..errors import CatalogError

CATALOG_ENV = "SPLITMIRROR_CATALOG"
STATE_ENV = "SPLITMIRROR_STATE_DIR"


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir("splitmirror"))


@dataclasses.dataclass(frozen=True)
class CatalogAddress:
    """A catalog's location, as the configuration, ``--catalog`` or the environment gave it."""

    text: str

    @property
    def url(self) -> str | None:
        """The URL a catalog plugin opens, or None for a SQLite file."""
        return self.text if catalog_url(self.text) else None

    @property
    def scheme(self) -> str:
        return self.text.split("://", 1)[0].split("+", 1)[0].lower() if self.url else ""

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None for a URL."""
        return None if self.url else Path(self.text)

    @property
    def shown(self) -> str:
        """How sentences name it: the path, or the URL without any password."""
        return redact_url(self.text) if self.url else self.text

    @property
    def home(self) -> Path:
        """This host's directory for the catalog's local state (``locks/``)."""
        if self.path is not None:
            return self.path.parent
        configured = os.environ.get(STATE_ENV)
        return Path(configured) if configured else data_dir()

    @property
    def tag(self) -> str:
        """Eight hex digits naming the catalog, for scratch directories and container labels."""
        key = str(self.path.resolve()) if self.path is not None else self.shown
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def __str__(self) -> str:
        return self.shown


def catalog_address(configured: str | Path | None = None) -> CatalogAddress:
    """The given catalog (a config's ``catalog``, ``--catalog``), else ``$SPLITMIRROR_CATALOG``,
    else ``catalog.db`` in the user's data directory."""
    if configured is not None and str(configured):
        given, how = str(configured), "the catalog URL"
    elif os.environ.get(CATALOG_ENV):
        given, how = os.environ[CATALOG_ENV], f"${CATALOG_ENV}"
    else:
        return CatalogAddress(str(data_dir() / "catalog.db"))
    if catalog_url(given) and url_has_password(given):
        raise CatalogError(
            f"{how} carries a password; remove it, and give it in $SPLITMIRROR_CATALOG_PASSWORD or "
            "a pgpass file (docs/fleet.md)"
        )
    return CatalogAddress(given)
