"""The entry point: registers the PostgreSQL engine."""

from __future__ import annotations

from collections.abc import Callable

from splitmirror.api import DatabaseEngine, impl

from .engine import PostgresEngine


@impl
def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
    register(PostgresEngine)
