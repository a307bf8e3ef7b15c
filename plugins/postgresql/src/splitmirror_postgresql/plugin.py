"""The entry point: registers the PostgreSQL engine."""

from __future__ import annotations

from collections.abc import Callable

from splitmirror import impl
from splitmirror.engine import DatabaseEngine

from .engine import PostgresEngine


@impl
def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
    register(PostgresEngine)
