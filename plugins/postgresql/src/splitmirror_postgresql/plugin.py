"""The entry point: registers the PostgreSQL engine, and the catalog a fleet of hosts shares."""

from __future__ import annotations

from collections.abc import Callable

from splitmirror.api import Catalog, DatabaseEngine, impl

from .catalog import PostgresCatalog
from .engine import PostgresEngine


@impl
def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
    register(PostgresEngine)


@impl
def splitmirror_register_catalogs(register: Callable[[type[Catalog]], None]) -> None:
    register(PostgresCatalog)
