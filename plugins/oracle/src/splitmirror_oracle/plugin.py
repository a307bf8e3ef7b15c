"""The entry point: registers the Oracle engine."""

from __future__ import annotations

from collections.abc import Callable

from splitmirror.api import DatabaseEngine, impl

from .engine import OracleEngine


@impl
def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
    register(OracleEngine)
