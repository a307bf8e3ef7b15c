"""``splitmirror demo``: a live SQLite ledger backed up twice, FREEZE then HOT_BACKUP.

Everything lives in one folder (primary, mirror, archives, catalog, the two configs), so a DBA
can read the configs, rerun ``splitmirror backup DIR/freeze.toml`` and look at the catalog with
``splitmirror list --catalog DIR/catalog.db``.  Each archive is extracted and opened afterwards to
show that it is a consistent database holding every row acknowledged before QUIESCE.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from rich.console import Console

from .catalog.base import SessionSummary
from .config import load_config
from .errors import UserError
from .hooks import Hooks
from .report import print_summary, summary_json
from .session import Session
from .workload import acknowledged, create_ledger, start_writer, stop_writer

_CONFIG = """\
[session]
name = "demo-{mode}"
max_window = "30s"
catalog = "{root}/catalog.db"

[database]
url = "sqlite://{root}/primary/ledger.db"
mode = "{mode}"

[mirror]
provider = "directory"
primary = "{root}/primary"
mirror = "{root}/mirror"

[target]
path = "{root}/archives/ledger-{{session}}-{mode}.tar"
block_size = "256KiB"
"""


def _restore_check(archive: Path) -> tuple[str, int]:
    """Extract the archive and open the database: (integrity_check result, rows)."""
    with tempfile.TemporaryDirectory() as scratch:
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        with closing(sqlite3.connect(Path(scratch) / "ledger.db")) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            rows = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
    return str(integrity), int(rows)


#: Left in the demo's folder, so a second run knows the folder is its own to clear.
MARKER = ".splitmirror-demo"


def _prepare_folder(root: Path) -> None:
    """A new or empty folder, or one an earlier demo made (which is cleared); anything else is
    refused: the demo never deletes what it did not create."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} exists and is not a folder; give --dir a new or empty folder")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise UserError(
                f"{root} exists, is not empty and was not made by splitmirror demo; give --dir a new or "
                "empty folder (the demo never deletes what it did not create)"
            )
        for entry in root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by splitmirror demo; a later demo run clears this folder\n")


def run_demo(directory: Path, *, out: Console, err: Console, as_json: bool = False) -> list[dict[str, Any]]:
    root = directory.resolve()
    _prepare_folder(root)
    for sub in ("primary", "mirror", "archives"):
        (root / sub).mkdir(parents=True)
    db = root / "primary" / "ledger.db"
    create_ledger(db, rows=50_000)
    acks = root / "acks.txt"
    writer = start_writer(db, acks)
    results: list[dict[str, Any]] = []
    try:
        time.sleep(0.5)  # let the writer get going: the backups must be of a live database
        for mode in ("freeze", "hot-backup"):
            config_path = root / f"{mode}.toml"
            config_path.write_text(_CONFIG.format(root=root, mode=mode))
            config_path.chmod(0o600)
            acked_before = len(acknowledged(acks))
            summary: SessionSummary = Session(load_config(config_path), Hooks()).run()
            integrity, rows = _restore_check(Path(summary.archive or ""))
            results.append(
                {
                    "session": summary_json(summary),
                    "restored_integrity": integrity,
                    "restored_rows": rows,
                    "writer_acks_before_session": acked_before,
                }
            )
            if not as_json:
                print_summary(out, summary)
                out.print(
                    f"restored copy: integrity_check={integrity}, {rows} rows "
                    f"(seed 50000 + the writer's {acked_before} acknowledged before the session "
                    f"started, plus what it committed before QUIESCE)\n"
                )
    finally:
        stop_writer(writer)
    total = len(acknowledged(acks))
    if as_json:
        import json

        print(json.dumps({"demo": str(root), "writer_commits": total, "sessions": results}, indent=2))
    else:
        out.print(f"the writer committed {total} rows while the two sessions ran")
        out.print(f"folder:   {root}")
        out.print(f"archives: {root / 'archives'}")
        out.print(f"catalog:  {root / 'catalog.db'}  (try: splitmirror list --config {root / 'freeze.toml'})")
        here = Path(sys.executable).parent
        if (here / "splitmirror").exists() and shutil.which("splitmirror") != str(here / "splitmirror"):
            out.print(f"splitmirror is {here / 'splitmirror'}; put it on PATH with: . {here / 'activate'}")
    return results
