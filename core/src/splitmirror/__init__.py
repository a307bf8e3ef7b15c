"""splitmirror: consistent file-level backups of live databases from a split mirror.

Plugins import :data:`impl` to mark their hook implementations, from :mod:`splitmirror.api`,
the one module of splitmirror a plugin imports (``from splitmirror import impl`` works too)::

    from splitmirror.api import impl

    @impl
    def splitmirror_register_engines(register):
        register(MyEngine)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pluggy

from .hookspecs import PROJECT

try:
    __version__ = version("splitmirror")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: The marker for hook implementations in plugins.
impl = pluggy.HookimplMarker(PROJECT)

__all__ = ["__version__", "impl"]
