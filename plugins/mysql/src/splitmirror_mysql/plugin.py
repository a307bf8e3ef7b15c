"""The entry point: registers the MySQL/MariaDB engine."""

from __future__ import annotations

from collections.abc import Callable

from splitmirror.api import DatabaseEngine, impl

from .engine import MysqlEngine


@impl
def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
    register(MysqlEngine)
