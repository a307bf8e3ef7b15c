"""The plugin API: everything a plugin may import from splitmirror, in one module.

What is named in ``__all__`` here is promised to plugin authors: it keeps its name and meaning
across the releases of the range a plugin declares (``splitmirror>=0.1,<0.2``).  Everything
else in the ``splitmirror`` package is the implementation and may change in any release,
however it is reachable; a plugin that imports it pins itself to one version.  Test code has a second public
module, :mod:`splitmirror.testing` (fixtures, the contract suite, the fault matrix, container
and ledger helpers).  ``tests/test_api.py`` keeps the in-tree plugins to these two.

The names, by what a plugin does with them:

* **register** its classes: :data:`impl` marks the hook implementations.
* **a database engine**: :class:`DatabaseEngine` and what its methods take and return
  (:class:`DatabaseFile`, :class:`ExtraMember`, :class:`UnquiesceResult`, :class:`ServerInfo`,
  :class:`PreflightProblem`, :class:`Mode`, :class:`Phase`); for a database *server*, the
  foundation of :mod:`splitmirror.server` (:class:`ServerEngine`, :class:`ServerOptions`,
  :data:`PathMap`, :func:`host_path`, :func:`container_steps`, :func:`ran_in_container`,
  :func:`outermost_mounts`).
* **a mirror provider** or **a target**: :class:`MirrorProvider` (:class:`SyncStats`,
  :class:`SplitStat`, :class:`Progress`, :class:`ExtentMap`, :class:`Fingerprint`) and
  :class:`Target` (:class:`TargetError`, :class:`TargetFull`).
* **options**: pydantic models with :class:`NoOptions` as the empty one, :data:`Duration` and
  :data:`Size` for ``"30s"`` and ``"256KiB"`` (:func:`parse_duration`, :func:`parse_size`,
  :func:`format_size`).
* **errors**: raise :class:`PreflightError` (exit 3), :class:`ConfigError` or
  :class:`PluginError` (exit 2) with one sentence that says what to do; anything else derives
  from :class:`SplitmirrorError`.  :func:`first_line` shortens a driver's message,
  :func:`redact_url` hides a password in a URL.
* **files**: :func:`mount_point` and :func:`same_filesystem`.
* **restore**: :class:`RestoreStep` (and :data:`IMAGE`, :data:`Kind`, :data:`Route`) for
  ``prepare_restore``; :func:`restored_location` and :func:`primary_at_backup` for where a path
  lands in a restore.  (What ``splitmirror restore`` did, ``RestoreResult``, which test adapters
  take, is :mod:`splitmirror.testing`'s.)
* **drill** a restored copy (``splitmirror drill``): :class:`DrillCopy`, what
  ``DatabaseEngine.drill_check`` is given, :class:`DrillFailed` for its one-sentence failure, and
  :func:`answer` for how a query's result is reported.
* **observe** a session: :class:`Session` (what observers read of it: ``id``, ``config``,
  ``mode``, ``engine``, ``files``, ``stats``), :class:`SessionSummary`, :class:`Config`.
"""

from __future__ import annotations

from . import impl
from .catalog.address import CatalogAddress
from .catalog.base import (
    ARCHIVED,
    ARCHIVING,
    DRILL_ABANDONED,
    UPDATABLE,
    WAITING,
    Catalog,
    DrillRecord,
    FileRecord,
    Handover,
    PhaseRecord,
    SessionSummary,
    utc_now,
)
from .config import Config, Duration, Size, redact_url
from .drillcopy import DrillCopy, DrillFailed, answer
from .engine import (
    DatabaseEngine,
    DatabaseFile,
    ExtraMember,
    NoOptions,
    PreflightProblem,
    ServerInfo,
    UnquiesceResult,
)
from .errors import (
    CatalogError,
    ConfigError,
    PluginError,
    PreflightError,
    SessionBusyError,
    SplitmirrorError,
    UserError,
    first_line,
)
from .extents import ExtentMap
from .filemap import Fingerprint
from .fsfreeze import mount_point, same_filesystem
from .mirror.base import MirrorProvider, SplitStat, SyncStats
from .phases import Mode, Phase
from .progress import Progress
from .restore_steps import IMAGE, Kind, RestoreStep, Route
from .restored_paths import primary_at_backup, restored_location
from .server import (
    PathMap,
    ServerEngine,
    ServerOptions,
    container_steps,
    host_path,
    outermost_mounts,
    ran_in_container,
)
from .session import Session
from .targets.base import Target, TargetError, TargetFull
from .units import format_size, parse_duration, parse_size

__all__ = [
    "ARCHIVED",
    "ARCHIVING",
    "DRILL_ABANDONED",
    "IMAGE",
    "UPDATABLE",
    "WAITING",
    "Catalog",
    "CatalogAddress",
    "CatalogError",
    "Config",
    "ConfigError",
    "DatabaseEngine",
    "DatabaseFile",
    "DrillCopy",
    "DrillFailed",
    "DrillRecord",
    "Duration",
    "ExtentMap",
    "ExtraMember",
    "FileRecord",
    "Fingerprint",
    "Handover",
    "Kind",
    "MirrorProvider",
    "Mode",
    "NoOptions",
    "PathMap",
    "Phase",
    "PhaseRecord",
    "PluginError",
    "PreflightError",
    "PreflightProblem",
    "Progress",
    "RestoreStep",
    "Route",
    "ServerEngine",
    "ServerInfo",
    "ServerOptions",
    "Session",
    "SessionBusyError",
    "SessionSummary",
    "Size",
    "SplitStat",
    "SplitmirrorError",
    "SyncStats",
    "Target",
    "TargetError",
    "TargetFull",
    "UnquiesceResult",
    "UserError",
    "answer",
    "container_steps",
    "first_line",
    "format_size",
    "host_path",
    "impl",
    "mount_point",
    "outermost_mounts",
    "parse_duration",
    "parse_size",
    "primary_at_backup",
    "ran_in_container",
    "redact_url",
    "restored_location",
    "same_filesystem",
    "utc_now",
]
