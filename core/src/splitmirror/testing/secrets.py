"""Where a password must never show up, and the tools to look: process arguments while a
session runs, and every byte of what it leaves (logs, catalog, archives, ``--json`` output).

A plugin's secrets test gives its server a password that starts with :data:`SENTINEL`, runs
sessions (a good one and failing ones), and asserts :func:`found_in_files` and
:func:`found_in_texts` come back empty and :class:`ArgvWatch` saw nothing.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from ..errors import SessionFailed
from ..phases import Phase
from .contract import Fault
from .database import LedgerDatabase
from .drill import SessionRunner

#: Every test password starts with this, so a leak is unmistakable wherever it lands.
SENTINEL = "sm-sentinel-"


def sentinel_password() -> str:
    return SENTINEL + secrets.token_urlsafe(12)


class ArgvWatch:
    """Samples ``/proc/*/cmdline`` every few milliseconds while it is entered, noting every
    process whose arguments hold ``secret`` (watch the whole session: the watchdog, plugins'
    helper processes, anything they start)."""

    def __init__(self, secret: str, interval: float = 0.005) -> None:
        self.secret = secret.encode()
        self.interval = interval
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="argv-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    argv = (entry / "cmdline").read_bytes()
                except OSError:
                    continue  # gone meanwhile
                if self.secret in argv:
                    self.seen.add(argv.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


def found_in_files(secret: str, roots: Iterable[Path]) -> list[str]:
    """Every file under ``roots`` (or the file itself) whose bytes hold ``secret``."""
    needle, found = secret.encode(), []
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def found_in_texts(secret: str, texts: dict[str, str]) -> list[str]:
    """The names of the texts (outputs, error messages) that hold ``secret``."""
    return [name for name, text in texts.items() if secret in text]


def private(path: Path) -> bool:
    """Mode 0600 for a file, 0700 for a directory: nobody but the owner reads it."""
    return (os.stat(path).st_mode & 0o077) == 0


def leaks(database: LedgerDatabase, runner: SessionRunner, password: str) -> dict[str, list[str]]:
    """Run a good session through the command line (``backup --json``, then ``list``, ``show``
    and ``verify`` with ``--json``) while watching every process's arguments, then a session
    that fails inside the window, in process with every log record captured; return where
    ``password`` was found: ``argv``, ``texts`` (outputs, logs, the exception) and ``files``
    (catalog, archives, mirror, config).  Empty lists everywhere is the pass."""
    database.create_ledger()
    ws = runner.workspace
    config = runner.config(database, "hot-backup")
    cli = [sys.executable, "-m", "splitmirror"]
    texts: dict[str, str] = {}
    with ArgvWatch(password) as watch:
        done = subprocess.run([*cli, "backup", "--json", str(config.source)], capture_output=True, text=True)
        texts["backup --json"] = done.stdout + done.stderr
        session = json.loads(done.stdout)["id"] if done.returncode == 0 else 0
        for command in (
            ["list", "--json"],
            ["show", str(session), "--json"],
            ["verify", str(session), "--json"],
        ):
            shown = subprocess.run(
                [*cli, *command, "--catalog", str(ws.catalog)], capture_output=True, text=True
            )
            texts[" ".join(command)] = shown.stdout + shown.stderr
    if done.returncode != 0 or watch.samples < 10:
        raise AssertionError(f"the session to watch did not run: {texts['backup --json'][-2000:]}")
    records = _Records()
    logging.getLogger().addHandler(records)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        runner.run(database, "hot-backup", Fault(Phase.SPLIT))
        raise AssertionError("the failing session did not fail")
    except SessionFailed as failed:
        texts["exception"] = "".join(traceback.format_exception(failed))
    finally:
        logging.getLogger().removeHandler(records)
        logging.getLogger().setLevel(level)
    texts["logs"] = "\n".join(records.lines)
    files = [*ws.root.glob(ws.catalog.name + "*"), ws.archives, ws.mirror, config.source]
    return {
        "argv": sorted(watch.seen),
        "texts": found_in_texts(password, texts),
        "files": found_in_files(password, files),
    }


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()} {record.exc_text or ''}")
