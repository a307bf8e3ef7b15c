"""The catalog: sessions, phase timings, the window, and every file each archive holds.

The catalog a session uses is a SQLite file (built in) or, behind a URL, one a plugin registers
(``splitmirror_register_catalogs``): :func:`open_catalog` picks it by the URL's scheme.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CatalogError
from .address import CATALOG_ENV, CatalogAddress, catalog_address
from .base import Catalog, DrillRecord, FileRecord, PhaseRecord, SessionSummary
from .sqlite import SqliteCatalog

if TYPE_CHECKING:
    from ..hooks import Hooks


def open_catalog(
    where: CatalogAddress | Path | str | None = None, *, create: bool = True, hooks: Hooks | None = None
) -> Catalog:
    """The catalog at ``where`` (or the default).  Commands that only read pass ``create=False``:
    a catalog that is not there is a wrong address, never a new, empty catalog to report from."""
    address = where if isinstance(where, CatalogAddress) else catalog_address(where)
    if address.url is None:
        return SqliteCatalog.open(address, create=create)
    return catalog_class(address, hooks).open(address, create=create)


def catalog_class(address: CatalogAddress, hooks: Hooks | None = None) -> type[Catalog]:
    """The registered catalog that opens ``address``'s URL scheme (plugins are loaded only for
    a catalog behind a URL)."""
    if hooks is None:
        from ..hooks import Hooks

        hooks = Hooks()
    for _name, entry in hooks.catalogs.entries():
        if address.scheme in entry.cls.url_schemes:
            cls: type[Catalog] = entry.cls
            return cls
    known = sorted(s for _n, e in hooks.catalogs.entries() for s in e.cls.url_schemes)
    raise CatalogError(
        f"no installed catalog opens {address.scheme}:// URLs (installed: "
        f"{', '.join(known) or 'none but SQLite files'}); install the plugin that provides it, e.g. "
        f"`pip install splitmirror-{address.scheme}`, or give the catalog as a file path"
    )


__all__ = [
    "CATALOG_ENV",
    "Catalog",
    "CatalogAddress",
    "DrillRecord",
    "FileRecord",
    "PhaseRecord",
    "SessionSummary",
    "SqliteCatalog",
    "catalog_address",
    "open_catalog",
]
