"""``[notify] command``: told of every session's end; its failures never fail a backup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from splitmirror.testing.faults import run_killed
from test_cli import cli

#: A notifier that records what it was given: its standard input and its environment.
RECORDER = textwrap.dedent(
    """
    import json, os, sys
    out = sys.argv[1]
    given = sys.stdin.read()
    env = {k: v for k, v in os.environ.items() if k.startswith("SPLITMIRROR_") or k == "PGPASSWORD"}
    with open(out, "a") as f:
        f.write(json.dumps({"stdin": given, "env": env}) + "\\n")
    print("the notifier's own output")
    """
)


def notifier(root: Path, *, on: str = "", timeout: str = "") -> tuple[str, Path]:
    script, record = root / "notifier.py", root / "notified.jsonl"
    script.write_text(RECORDER)
    lines = [
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(script))}, {json.dumps(str(record))}]"
    ]
    lines += [f"on = {on}"] if on else []
    lines += [f'timeout = "{timeout}"'] if timeout else []
    return "\n[notify]\n" + "\n".join(lines) + "\n", record


def told(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_the_notifier_gets_the_summary_and_the_status(ledger: Path, write_config: Any, root: Path) -> None:
    section, record = notifier(root)
    proc = cli("backup", str(write_config(extra=section)), "--json", "-q", env={"PGPASSWORD": "s3cret"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    [call] = told(record)
    assert json.loads(call["stdin"]) == summary
    assert call["env"]["SPLITMIRROR_STATUS"] == "DONE"
    assert call["env"]["SPLITMIRROR_SESSION"] == str(summary["id"])
    assert call["env"]["SPLITMIRROR_NAME"] == "ledger"
    assert call["env"]["SPLITMIRROR_ARCHIVE"] == summary["archive"]
    assert call["env"]["SPLITMIRROR_FAILED_PHASE"] == ""
    assert "PGPASSWORD" not in call["env"]  # a database's password is not the notifier's
    assert "the notifier's own output" not in proc.stdout + proc.stderr


def test_only_the_outcomes_asked_for(ledger: Path, write_config: Any, root: Path) -> None:
    section, record = notifier(root, on='["FAILED"]')
    config = write_config(extra=section)
    assert cli("backup", str(config), "-q").returncode == 0
    assert told(record) == []
    config.write_text(
        config.read_text().replace(f'path = "{root}/archives/ledger-{{session}}.tar"', 'command = ["false"]')
    )
    assert cli("backup", str(config), "-q").returncode == 1
    [call] = told(record)
    assert call["env"]["SPLITMIRROR_STATUS"] == "FAILED"
    assert call["env"]["SPLITMIRROR_FAILED_PHASE"] == "BACKUP"
    assert call["env"]["SPLITMIRROR_ERROR"]


def test_a_failing_notifier_is_a_warning_and_the_backup_stands(
    ledger: Path, write_config: Any, root: Path
) -> None:
    extra = '\n[notify]\ncommand = ["sh", "-c", "echo the mail relay said no >&2; exit 3"]\n'
    proc = cli("backup", str(write_config(extra=extra)), "--json", "-q")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["status"] == "DONE"
    assert "the notify command sh exited 3: the mail relay said no" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_notifier_is_a_warning(ledger: Path, write_config: Any, root: Path) -> None:
    proc = cli("backup", str(write_config(extra='\n[notify]\ncommand = ["/no/such/notifier"]\n')), "-q")
    assert proc.returncode == 0
    assert "the notify command /no/such/notifier could not be started" in proc.stderr


def test_a_hanging_notifier_is_ended_with_its_children(ledger: Path, write_config: Any, root: Path) -> None:
    pids = root / "pids"
    extra = f'\n[notify]\ncommand = ["sh", "-c", "sleep 300 & echo $! > {pids}; wait"]\ntimeout = "1s"\n'
    started = time.monotonic()
    proc = cli("backup", str(write_config(extra=extra)), "-q")
    assert proc.returncode == 0
    assert time.monotonic() - started < 30
    assert "did not finish within 1s and was ended" in proc.stderr
    child = int(pids.read_text())
    for _ in range(50):  # the group got SIGKILL; the orphan is reaped by init
        if not Path(f"/proc/{child}").exists() or "State:\tZ" in Path(f"/proc/{child}/status").read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the notifier's child {child} outlived it")


def test_an_archive_on_stdout_is_not_mixed_with_the_notifier_output(
    ledger: Path, write_config: Any, root: Path
) -> None:
    section, _ = notifier(root)
    config = write_config(extra=section)
    config.write_text(
        config.read_text().replace(f'path = "{root}/archives/ledger-{{session}}.tar"', 'path = "-"')
    )
    backup = subprocess.run(
        [sys.executable, "-m", "splitmirror", "backup", str(config), "-q"], capture_output=True, timeout=120
    )
    assert backup.returncode == 0
    verify = subprocess.run(
        [sys.executable, "-m", "splitmirror", "verify", "--archive", "-"],
        input=backup.stdout, capture_output=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_killed_session_is_told_by_the_watchdog(ledger: Path, write_config: Any, root: Path) -> None:
    section, record = notifier(root)
    killed = run_killed(write_config(extra=section), "BACKUP", root)
    deadline = time.monotonic() + 10
    while not told(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    [call] = told(record)
    assert call["env"]["SPLITMIRROR_SESSION"] == str(killed.session_id)
    assert call["env"]["SPLITMIRROR_STATUS"] == "FAILED"
    assert call["env"]["SPLITMIRROR_FAILED_PHASE"] == "BACKUP"


def test_a_read_command_gets_no_database_password_either(ledger: Path, write_config: Any, root: Path) -> None:
    """``verify`` loads no engine of its own; the password variables are left out all the same."""
    seen = root / "read-env"
    archive = f"{root}/archives/ledger-{{session}}.tar.zst"
    config = write_config()
    target = (
        f'command = ["zstd", "-q", "-o", "{archive}"]\n'
        f'read_command = ["sh", "-c", "env > {seen}; exec zstd -dc {archive}"]\n'
    )
    config.write_text(
        config.read_text().replace(f'path = "{root}/archives/ledger-{{session}}.tar"\n', target)
    )
    assert cli("backup", str(config), "-q").returncode == 0
    verified = cli("verify", "1", "--catalog", str(root / "catalog.db"), env={"PGPASSWORD": "s3cret"})
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "PGPASSWORD" not in seen.read_text() and "PATH=" in seen.read_text()
