"""The catalog: sessions, phase timings, the window, and every file each archive holds."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from ..errors import CatalogError
from .base import Catalog, DrillRecord, FileRecord, PhaseRecord, SessionSummary
from .sqlite import SqliteCatalog

CATALOG_ENV = "SPLITMIRROR_CATALOG"


def default_catalog_path(configured: Path | None = None) -> Path:
    """The config's ``catalog``, else ``$SPLITMIRROR_CATALOG``, else the user's data directory."""
    if configured is not None:
        return configured
    if os.environ.get(CATALOG_ENV):
        return Path(os.environ[CATALOG_ENV])
    return Path(platformdirs.user_data_dir("splitmirror")) / "catalog.db"


def open_catalog(path: Path | None = None, *, create: bool = True) -> Catalog:
    """The catalog at ``path`` (or the default).  Commands that only read pass ``create=False``:
    a catalog that is not there is a wrong path, never a new, empty catalog to report from."""
    where = default_catalog_path(path)
    if not create and not where.exists():
        raise CatalogError(
            f"there is no catalog at {where}; name the one your sessions use with --config FILE "
            "(its [session] catalog) or --catalog PATH"
        )
    return SqliteCatalog(where)


__all__ = [
    "CATALOG_ENV",
    "Catalog",
    "DrillRecord",
    "FileRecord",
    "PhaseRecord",
    "SessionSummary",
    "SqliteCatalog",
    "default_catalog_path",
    "open_catalog",
]
