"""Two sessions at once: one configuration is one session at a time (the second is refused,
naming the first), a killed holder's lock is taken over, a row its process left STARTED is
closed by the next session, and different configurations share one catalog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from splitmirror.catalog import SqliteCatalog
from splitmirror.cli import main
from splitmirror.config import load_config
from splitmirror.hooks import Hooks
from splitmirror.session import Session
from splitmirror.testing.faults import failure_of, run_killed
from splitmirror.workload import create_ledger
from test_signals import start_stalled


def test_a_second_session_on_one_config_is_refused_naming_the_first(
    ledger: Path, write_config: Any, tmp_path: Path
) -> None:
    config = write_config()
    first, _marker = start_stalled(config, "SYNC", tmp_path)
    try:
        result = CliRunner().invoke(main, ["backup", str(config)])
        assert result.exit_code == 4, result.output
        message = result.output.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message
        assert f"another session is already running for {config} (pid {first.pid}, started 20" in message
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


def test_a_killed_holders_lock_is_taken_over_and_its_row_closed(
    ledger: Path, write_config: Any, tmp_path: Path
) -> None:
    config = write_config()
    killed = run_killed(config, "QUIESCE", tmp_path)
    cfg = load_config(config)
    assert Session(cfg, Hooks()).run().status == "DONE"
    assert failure_of(cfg.session.catalog, killed.session_id)["status"] == "FAILED"  # type: ignore[arg-type]


def test_a_row_left_started_without_a_watchdog_is_closed_by_the_next_session(
    ledger: Path, write_config: Any, tmp_path: Path
) -> None:
    config = write_config()
    killed = run_killed(config, "DISCOVER", tmp_path, watchdog=False)
    cfg = load_config(config)
    catalog: Path = cfg.session.catalog  # type: ignore[assignment]
    assert failure_of(catalog, killed.session_id)["status"] == "STARTED", "nobody recorded it yet"
    assert Session(cfg, Hooks()).run().status == "DONE"
    row = failure_of(catalog, killed.session_id)
    assert (row["status"], row["failed_phase"]) == ("FAILED", "QUIESCE"), row
    assert "ended without recording an outcome" in str(row["error"])


def test_two_configurations_share_one_catalog(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.db"
    configs = []
    for name in ("orders", "billing"):
        root = tmp_path / name
        for sub in ("primary", "archives"):
            (root / sub).mkdir(parents=True)
        create_ledger(root / "primary" / f"{name}.db", rows=5000)
        config = root / "session.toml"
        config.write_text(
            f'[session]\nname = "{name}"\ncatalog = "{catalog}"\n'
            f'[database]\nurl = "sqlite://{root}/primary/{name}.db"\nmode = "hot-backup"\n'
            f'[mirror]\nprimary = "{root}/primary"\nmirror = "{root}/mirror"\n'
            f'[target]\npath = "{root}/archives/{name}-{{session}}.tar"\n'
        )
        config.chmod(0o600)
        configs.append((name, config))
    cli = [sys.executable, "-m", "splitmirror"]
    procs = {
        name: subprocess.Popen(
            [*cli, "backup", "--json", "--quiet", str(config)], stdout=subprocess.PIPE, text=True
        )
        for name, config in configs
    }
    outputs = {name: proc.communicate(timeout=120)[0] for name, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values()), outputs
    summaries = {name: json.loads(out) for name, out in outputs.items()}
    rows = {s.name: s for s in SqliteCatalog(catalog).sessions()}
    assert set(rows) == {"orders", "billing"}
    for name, summary in summaries.items():
        assert rows[name].id == summary["id"] and rows[name].status == "DONE"
        assert rows[name].archive and os.path.exists(rows[name].archive)
        members = [f.member for f in SqliteCatalog(catalog).files(summary["id"])]
        assert f"{name}.db" in members, members
