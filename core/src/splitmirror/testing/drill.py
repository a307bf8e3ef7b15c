"""Running sessions against a plugin's database, and the restore drill.

A drill is the proof a DBA wants: concurrent writers commit numbered rows through a whole
session; the archive is restored; the restored database must open, pass its own integrity
check, hold every row acknowledged before QUIESCE began, and have no gap below any writer's
highest row.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import impl
from ..catalog.base import SessionSummary
from ..config import Config, load_config
from ..hooks import Hooks
from ..phases import Phase
from ..restore import RestoreResult, restore_archive
from ..session import Session
from ..workload import acknowledged
from .database import LedgerDatabase


@dataclasses.dataclass(frozen=True)
class Workspace:
    """The folders of one test: a primary (unless the database brings its own), the mirror,
    archives, the catalog, restores."""

    root: Path

    @property
    def primary(self) -> Path:
        return self.root / "primary"

    @property
    def mirror(self) -> Path:
        return self.root / "mirror"

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.db"

    def create(self) -> Workspace:
        for folder in (self.primary, self.archives):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def _toml(value: Any) -> str:
    if isinstance(value, Mapping):  # an inline table, e.g. PostgreSQL's path_map
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):  # an argument list, e.g. the command mirror's
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value if isinstance(value, int | float) else str(value))


class SessionRunner:
    """Writes a session config for a :class:`LedgerDatabase` and runs it; plugins registered in
    :attr:`plugins` are added for each session (entry-point plugins load as usual)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.plugins: list[object] = []
        #: Extra ``[mirror]`` keys, e.g. ``{"provider": "block"}`` (then ``workspace.mirror`` is
        #: the mirror's image file).
        self.mirror_options: dict[str, Any] = {}
        #: ``[mirror] mirror`` when not the workspace's (a btrfs snapshot directory must be on
        #: the primary's btrfs).
        self.mirror_path: Path | None = None
        #: Extra ``[session]`` keys, e.g. ``{"cpu_nice": 19}``.
        self.session_options: dict[str, Any] = {}
        self._configs = 0

    def config(self, database: LedgerDatabase, mode: str, *, max_window: str = "30s") -> Config:
        """A session config for ``database`` in ``mode``, written and loaded."""
        path = self.config_file(database.url, mode, database.options, database.primary, max_window=max_window)
        return load_config(path)

    def config_file(
        self,
        url: str,
        mode: str,
        options: Mapping[str, Any] | None = None,
        primary: Path | None = None,
        *,
        max_window: str = "30s",
    ) -> Path:
        """Write a session config (``[database] url``, ``mode`` and the engine's ``options``;
        ``primary`` by default the workspace's) without loading it: for a test of what
        loading or ``check`` says about it (:meth:`command`)."""
        self._configs += 1
        ws = self.workspace
        database_keys = {"url": url, "mode": mode, **(options or {})}
        text = "\n".join(
            [
                "[session]",
                f'name = "contract-{self._configs}"',
                f"max_window = {_toml(max_window)}",
                f"catalog = {_toml(ws.catalog)}",
                *(f"{key} = {_toml(value)}" for key, value in self.session_options.items()),
                "[database]",
                *(f"{key} = {_toml(value)}" for key, value in database_keys.items()),
                "[mirror]",
                f"primary = {_toml(primary or ws.primary)}",
                f"mirror = {_toml(self.mirror_path or ws.mirror)}",
                *(f"{key} = {_toml(value)}" for key, value in self.mirror_options.items()),
                "[target]",
                f"path = {_toml(ws.archives / 'contract-{session}.tar')}",
            ]
        )
        path = ws.root / f"session-{self._configs}.toml"
        path.write_text(text + "\n")
        path.chmod(0o600)
        return path

    @staticmethod
    def command(*args: str | Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``splitmirror ARGS`` in a process of its own, as a DBA runs it (the plugins it loads
        are the installed ones), with ``env`` added to the environment: its exit code, standard
        output and standard error."""
        argv = [sys.executable, "-m", "splitmirror", *(str(arg) for arg in args)]
        environment = {**os.environ, **(env or {})}
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=environment)

    def hooks(self, *observers: object) -> Hooks:
        """The plugin manager sessions and restores use: entry points, :attr:`plugins`, ``observers``.
        Strict: an observer that raises (an assertion in a test's) fails the session."""
        hooks = Hooks(strict=True)
        for i, plugin in enumerate([*self.plugins, *observers]):
            hooks.register(plugin, f"contract-plugin-{i}")
        return hooks

    def run(
        self, database: LedgerDatabase, mode: str, *observers: object, max_window: str = "30s"
    ) -> SessionSummary:
        """One session; raises :class:`~splitmirror.errors.SessionFailed` when it fails."""
        return Session(self.config(database, mode, max_window=max_window), self.hooks(*observers)).run()

    def restore(self, summary: SessionSummary, directory: Path) -> RestoreResult:
        """``splitmirror restore``'s path (safety scan, checksums, sparse files, the engine's
        preparation) for the session's archive; the result holds the steps it printed."""
        return restore_archive(Path(summary.archive or ""), directory, hooks=self.hooks())


@dataclasses.dataclass(frozen=True)
class DrillReport:
    mode: str
    writers: int
    acknowledged: int  # rows acknowledged before QUIESCE began
    found: int  # writer rows in the restored database
    lost: Mapping[int, list[int]]  # writer -> acknowledged seq numbers missing
    gaps: Mapping[int, list[int]]  # writer -> seq numbers missing below its highest
    integrity: str
    integrity_ok: bool
    #: The session's ``stats`` (``bulk_sync``, ``final_sync`` with their ``tracking`` ...).
    stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def rows_lost(self) -> int:
        return sum(len(v) for v in self.lost.values())

    @property
    def passed(self) -> bool:
        return self.integrity_ok and not self.rows_lost and not any(self.gaps.values())

    def __str__(self) -> str:
        gaps = sum(len(v) for v in self.gaps.values())
        return (
            f"drill {self.mode}, {self.writers} writers: {self.acknowledged} rows acknowledged "
            f"before QUIESCE, {self.found} found, {self.rows_lost} lost, {gaps} gaps, "
            f"integrity {self.integrity!r}"
        )


class _AcksAtQuiesce:
    """Counts each writer's acknowledgements the moment QUIESCE starts."""

    def __init__(self, acks: Mapping[int, Path]) -> None:
        self.acks = acks
        self.counts: dict[int, int] = {}

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.QUIESCE:
            self.counts = {w: len(acknowledged(path)) for w, path in self.acks.items()}


def _start_writers(database: LedgerDatabase, acks: Mapping[int, Path]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(database.writer_command(w, path), stderr=subprocess.PIPE) for w, path in acks.items()
    ]


def _wait_for_acks(procs: list[subprocess.Popen[bytes]], acks: Mapping[int, Path], at_least: int) -> None:
    deadline = time.monotonic() + 60
    while any(len(acknowledged(path)) < at_least for path in acks.values()):
        for proc in procs:
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"a ledger writer exited with {proc.returncode}: {stderr.strip()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the writers did not reach {at_least} acknowledged rows in 60 s")
        time.sleep(0.02)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def run_drill(
    database: LedgerDatabase, runner: SessionRunner, mode: str, *, writers: int = 4, warmup: int = 20
) -> DrillReport:
    """Ledger writers through a whole session, then restore and check what was acknowledged."""
    ws = runner.workspace
    database.create_ledger()
    acks = {w: ws.root / f"acks-{mode}-{w}.txt" for w in range(1, writers + 1)}
    marks = _AcksAtQuiesce(acks)
    procs = _start_writers(database, acks)
    try:
        _wait_for_acks(procs, acks, warmup)
        summary = runner.run(database, mode, marks)
    finally:
        _stop(procs)
    restored = runner.restore(summary, ws.root / f"restored-{mode}-{summary.id}")
    ledger = database.restored_ledger(restored)
    lost: dict[int, list[int]] = {}
    gaps: dict[int, list[int]] = {}
    for w, path in acks.items():
        present = ledger.rows.get(w, set())
        before = acknowledged(path)[: marks.counts.get(w, 0)]
        lost[w] = sorted(set(before) - present)
        gaps[w] = sorted(set(range(1, max(present, default=0) + 1)) - present)
    return DrillReport(
        mode=mode,
        writers=writers,
        acknowledged=sum(marks.counts.values()),
        found=sum(len(ledger.rows.get(w, set())) for w in acks),
        lost=lost,
        gaps=gaps,
        integrity=ledger.integrity,
        integrity_ok=ledger.integrity_ok,
        stats=summary.stats,
    )
