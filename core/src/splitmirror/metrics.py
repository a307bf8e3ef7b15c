"""A Prometheus textfile for node_exporter's textfile collector (``[metrics] textfile``).

What an alert needs is in the catalog, so the file is written *from the catalog*, whole, each time
(after a session, a prune, a drill): the last finished session of the configuration (status, end,
window, each phase, bytes), the end of its last ``DONE`` session, the archives retention keeps, and
its last drill.  "No good backup in 26 hours" is then one rule::

    time() - splitmirror_last_success_timestamp_seconds > 26 * 3600

Every sample carries the configuration's ``name``.  Several configurations may share one file:
the samples of other names already in it are kept (read with the client library's own parser,
under a lock beside the file), so a file per configuration (``{name}`` in the path) and one shared
file both work.  The file is replaced atomically (written beside it, then renamed), as the
textfile collector requires: it must never read half a file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from . import impl
from .catalog import Catalog, open_catalog
from .catalog.base import DONE, STARTED, DrillRecord, SessionSummary
from .config import Config
from .retention import has_archive, of_configuration

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("splitmirror.metrics")

#: Every family this module writes; a shared file's families of other names are kept by these.
PREFIX = "splitmirror_"


def _seconds(timestamp: str | None) -> float | None:
    return None if timestamp is None else dt.datetime.fromisoformat(timestamp).timestamp()


class _Samples:
    """The families of one configuration, built from the catalog."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.families: dict[str, GaugeMetricFamily] = {}

    def gauge(self, metric: str, help_text: str, value: float | None, **labels: str) -> None:
        if value is None:
            return
        family = self.families.get(metric)
        if family is None:
            family = GaugeMetricFamily(PREFIX + metric, help_text, labels=["name", *labels])
            self.families[metric] = family
        family.add_metric([self.name, *labels.values()], float(value))


def samples(name: str, sessions: list[SessionSummary], drills: list[DrillRecord]) -> list[Metric]:
    """The families for configuration ``name`` (its sessions and drills, oldest first)."""
    out = _Samples(name)
    finished = [s for s in sessions if s.status != STARTED]
    if finished:
        last = finished[-1]
        out.gauge("last_session_id", "The catalog id of the last finished session.", last.id)
        out.gauge("last_session_success", "1 when the last session ended DONE, else 0.", last.status == DONE)
        out.gauge(
            "last_session_info", "The last session's status, mode and failed phase (value 1).", 1,
            status=last.status, mode=last.mode, failed_phase=last.failed_phase or "",
        )  # fmt: skip
        out.gauge(
            "last_session_start_timestamp_seconds",
            "When the last session started.",
            _seconds(last.started_at),
        )
        out.gauge(
            "last_session_end_timestamp_seconds", "When the last session ended.", _seconds(last.finished_at)
        )
        window = None if last.window_ms is None else last.window_ms / 1000
        out.gauge("last_session_window_seconds", "The last session's window (QUIESCE to UNQUIESCE).", window)
        blocked = None if last.blocked_ms is None else last.blocked_ms / 1000
        out.gauge("last_session_blocked_seconds", "How long the last session held the writers.", blocked)
        for phase in last.phases:
            out.gauge(
                "last_session_phase_duration_seconds", "Each phase of the last session.",
                phase.duration_ms / 1000, phase=phase.name,
            )  # fmt: skip
        out.gauge("last_session_bytes", "Bytes of database files the last session archived.", last.bytes)
        out.gauge("last_session_files", "Files the last session archived.", last.files)
    good = [s for s in finished if s.status == DONE]
    # 0 when there has been none: "no good backup in 26 hours" fires for a configuration that
    # never had one, instead of finding no sample to compare.
    last_good = _seconds(good[-1].finished_at or good[-1].started_at) if good else 0.0
    out.gauge("last_success_timestamp_seconds", "When the last DONE session ended (0: never).", last_good)
    kept = [s for s in sessions if has_archive(s) and s.pruned is None]
    out.gauge("archives", "Archives the catalog holds as kept.", len(kept))
    out.gauge("archives_bytes", "Bytes of database files in the kept archives.", sum(s.bytes for s in kept))
    ended = [d for d in drills if d.status != "RUNNING"]
    if ended:
        drill = ended[-1]
        out.gauge("last_drill_success", "1 when the last drill passed, else 0.", drill.status == "PASSED")
        out.gauge("last_drill_timestamp_seconds", "When the last drill ended.", _seconds(drill.finished_at))
        out.gauge(
            "last_drill_session_id", "The session whose archive the last drill restored.", drill.session_id
        )
    return list(out.families.values())


class _Fixed(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _others(path: Path, name: str) -> list[Metric]:
    """The samples of other configurations already in a shared file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    kept = []
    try:
        for family in text_string_to_metric_families(text):
            if not family.name.startswith(PREFIX):
                continue
            family.samples = [s for s in family.samples if s.labels.get("name") != name]
            if family.samples:
                kept.append(family)
    except ValueError as error:  # not a textfile any more: it is replaced, not kept broken forever
        log.warning("the metrics textfile %s could not be read (%s); it is written anew", path, error)
        return []
    return kept


def _merged(ours: list[Metric], others: list[Metric]) -> list[Metric]:
    by_name = {family.name: family for family in others}
    for family in ours:
        if family.name in by_name:
            by_name[family.name].samples = [*by_name[family.name].samples, *family.samples]
        else:
            by_name[family.name] = family
    return [by_name[key] for key in sorted(by_name)]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Read-only is enough for flock, so another user (a drill run as postgres) may take it too.
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def textfile_path(config: Config) -> Path | None:
    if config.metrics is None:
        return None
    return Path(str(config.metrics.textfile).format(name=config.session.name))


def write(config: Config, catalog: Catalog) -> Path | None:
    """Write ``config``'s metrics (when it has ``[metrics]``) from ``catalog``; the file's path."""
    path = textfile_path(config)
    if path is None:
        return None
    name = config.session.name
    sessions = of_configuration(catalog.sessions(), config)  # as retention counts them
    ids = {s.id for s in sessions}
    ours = samples(name, sessions, [d for d in catalog.drills(name=name) if d.session_id in ids])
    with _locked(path):
        registry = CollectorRegistry()
        registry.register(_Fixed(_merged(ours, _others(path, name))))
        _replace(path, generate_latest(registry))
    return path


def _replace(path: Path, text: bytes) -> None:
    """Write ``path`` whole: beside it, readable by node_exporter's own user (0644 whatever the
    umask) and synced before the rename, so the collector reads the old file or the new one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)


def write_quietly(config: Config, catalog: Catalog | None = None) -> None:
    """:func:`write`, its failure a warning: metrics must never turn a backup into a failure."""
    if config.metrics is None:
        return
    try:
        if catalog is None:
            with contextlib.closing(open_catalog(config.session.catalog, create=False)) as opened:
                write(config, opened)
        else:
            write(config, catalog)
    except (OSError, ValueError) as error:
        log.warning("the metrics textfile %s could not be written: %s", textfile_path(config), error)


@impl
def splitmirror_session_finished(session: Session, summary: SessionSummary) -> None:
    write_quietly(session.config)
