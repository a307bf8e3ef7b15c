"""Named registries for the objects plugins register (engines, mirror providers, targets).

A name belongs to exactly one plugin: registering it twice is an error that names both plugins,
so a DBA never wonders which of two "postgresql" engines ran.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Generic, Protocol, TypeVar

from .errors import PluginError


class Named(Protocol):
    name: str


T = TypeVar("T", bound=type)


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    cls: T
    plugin: str


class Registry(Generic[T]):
    """Classes of one family, by name, in registration order, remembering who registered them."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Entry[T]] = {}

    def add(self, cls: T, plugin: str) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {plugin!r} registered a {self.family} without a name; "
                f"give {cls.__qualname__} a class attribute `name`"
            )
        if name in self._entries:
            other = self._entries[name].plugin
            raise PluginError(
                f"{self.family} {name!r} is registered by both plugin {other!r} and plugin "
                f"{plugin!r}; uninstall one of them or block it with SPLITMIRROR_BLOCK_PLUGINS"
            )
        self._entries[name] = Entry(cls, plugin)

    def copy(self) -> Registry[T]:
        twin: Registry[T] = Registry(self.family)
        twin._entries = dict(self._entries)
        return twin

    def get(self, name: str) -> T:
        entry = self._entries.get(name)
        if entry is None:
            raise PluginError(self._unknown(name))
        return entry.cls

    def _unknown(self, name: str) -> str:
        known = ", ".join(self._entries) or "none"
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (
            f"unknown {self.family} {name!r}; {hint}installed: {known} "
            f"(run `splitmirror plugins` to see what is installed)"
        )

    def entries(self) -> list[tuple[str, Entry[T]]]:
        return list(self._entries.items())

    def names(self) -> list[str]:
        return list(self._entries)

    def provided_by(self, plugin: str) -> list[str]:
        return [name for name, entry in self._entries.items() if entry.plugin == plugin]
