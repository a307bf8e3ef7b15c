"""The Prometheus textfile as node_exporter reads it: parsed with the official client's parser."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from splitmirror.catalog import SqliteCatalog
from splitmirror.phases import PHASE_ORDER
from splitmirror.testing.faults import run_killed
from test_cli import cli


def metrics_of(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file: (name, sorted labels) → value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[("splitmirror_" + name, tuple(sorted({"name": "ledger", **labels}.items())))]


def metrics_config(
    write_config: Any, root: Path, textfile: str, name: str = "ledger", extra: str = ""
) -> Path:
    return write_config(name=name, extra=f'\n[metrics]\ntextfile = "{root}/{textfile}"\n' + extra)


def test_a_done_then_a_failed_session_as_an_alert_sees_them(
    ledger: Path, write_config: Any, root: Path
) -> None:
    (root / "prom").mkdir()
    config = metrics_config(write_config, root, "prom/splitmirror.prom")
    done = cli("backup", str(config), "--json", "-q")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    samples = metrics_of(root / "prom" / "splitmirror.prom")
    assert value(samples, "last_session_id") == summary["id"]
    assert value(samples, "last_session_success") == 1
    assert value(samples, "last_session_window_seconds") == pytest.approx(summary["window_ms"] / 1000)
    assert value(samples, "last_session_bytes") == summary["bytes"]
    assert value(samples, "last_session_files") == summary["files"]
    for phase in summary["phases"]:
        seconds = value(samples, "last_session_phase_duration_seconds", phase=phase["name"])
        assert seconds == pytest.approx(phase["duration_ms"] / 1000, abs=1e-6)
    assert {p["name"] for p in summary["phases"]} == {p.name for p in PHASE_ORDER}
    catalog = SqliteCatalog(root / "catalog.db")
    finished = catalog.get(summary["id"]).finished_at
    catalog.close()
    assert finished is not None
    good = dt.datetime.fromisoformat(finished).timestamp()
    assert value(samples, "last_success_timestamp_seconds") == pytest.approx(good)
    assert value(samples, "archives") == 1

    # The next session fails in BACKUP: its target program reads nothing and fails.
    failing = config.read_text().replace(
        f'path = "{root}/archives/ledger-{{session}}.tar"', 'command = ["false"]'
    )
    config.write_text(failing)
    failed = cli("backup", str(config), "-q")
    assert failed.returncode == 1
    samples = metrics_of(root / "prom" / "splitmirror.prom")
    assert value(samples, "last_session_success") == 0
    assert value(samples, "last_session_id") == summary["id"] + 1
    assert value(samples, "last_session_info", status="FAILED", mode="freeze", failed_phase="BACKUP") == 1
    assert value(samples, "last_success_timestamp_seconds") == pytest.approx(
        good
    )  # the alert's clock runs on


def test_a_shared_file_keeps_every_configuration_and_is_replaced_whole(
    ledger: Path, write_config: Any, root: Path
) -> None:
    first = metrics_config(write_config, root, "shared.prom", name="orders")
    second = metrics_config(write_config, root, "shared.prom", name="ledger")
    assert cli("backup", str(first), "-q").returncode == 0
    path = root / "shared.prom"
    before = path.read_text()
    with path.open() as reader:  # what node_exporter may be reading meanwhile
        assert cli("backup", str(second), "-q").returncode == 0
        assert reader.read() == before  # the old file whole: the new one was renamed over it
    samples = metrics_of(path)
    names = {dict(labels)["name"] for (_, labels) in samples}
    assert names == {"orders", "ledger"}
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    # nothing half-written left beside it; the lock is not a .prom file, which the collector skips
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".shared.prom.")] == [
        ".shared.prom.lock"
    ]


def test_name_in_the_path_gives_each_configuration_its_file(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = metrics_config(write_config, root, "splitmirror-{name}.prom")
    assert cli("backup", str(config), "-q").returncode == 0
    assert value(metrics_of(root / "splitmirror-ledger.prom"), "last_session_success") == 1


def test_a_configuration_without_a_good_backup_yet_is_one_for_the_alert(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = metrics_config(write_config, root, "splitmirror.prom")
    config.write_text(
        config.read_text().replace(f'path = "{root}/archives/ledger-{{session}}.tar"', 'command = ["false"]')
    )
    assert cli("backup", str(config), "-q").returncode == 1
    samples = metrics_of(root / "splitmirror.prom")
    assert value(samples, "last_success_timestamp_seconds") == 0  # time() - 0: the alert fires
    assert value(samples, "last_session_success") == 0


def test_an_unwritable_textfile_is_a_warning_never_a_failed_backup(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = metrics_config(write_config, root, "no-such-directory/splitmirror.prom")
    proc = cli("backup", str(config), "-q")
    assert proc.returncode == 0
    assert "the metrics textfile" in proc.stderr and "could not be written" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_killed_session_is_in_the_metrics_through_the_watchdog(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = metrics_config(write_config, root, "splitmirror.prom")
    killed = run_killed(config, "BACKUP", root)
    samples = metrics_of(root / "splitmirror.prom")
    assert value(samples, "last_session_id") == killed.session_id
    assert value(samples, "last_session_success") == 0


def test_a_damaged_shared_file_is_written_anew(ledger: Path, write_config: Any, root: Path) -> None:
    (root / "splitmirror.prom").write_text("this is { not a textfile\n")
    proc = cli("backup", str(metrics_config(write_config, root, "splitmirror.prom")), "-q")
    assert proc.returncode == 0 and "could not be read" in proc.stderr
    assert value(metrics_of(root / "splitmirror.prom"), "last_session_success") == 1
