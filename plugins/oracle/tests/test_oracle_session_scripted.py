"""A whole ``splitmirror backup`` and ``splitmirror restore`` through the command line, the
database being the *scripted* instance (:mod:`scripted_oracle`, not Oracle): the engine's files
travel through the real session, mirror, archive, catalog and restore.  What these prove is the
plumbing (datafiles from the split mirror, archived logs and the backup control file collected
after the window, in logical order; the restore's control files, parameter file and recovery
script); that Oracle recovers the result is for the container drill."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from scripted_oracle import ScriptedOracle

from splitmirror.cli import main
from splitmirror.testing import SessionRunner
from splitmirror_oracle import connection

URL = "oracle://c##splitmirror@db.example:1521/FREE"


@pytest.fixture
def instance(splitmirror_workspace: object, monkeypatch: pytest.MonkeyPatch) -> ScriptedOracle:
    scripted = ScriptedOracle(splitmirror_workspace.root / "oradata")  # type: ignore[attr-defined]
    monkeypatch.setattr(connection, "connect", scripted.connect)
    return scripted


@pytest.mark.parametrize("mode", ["hot-backup", "freeze"])
def test_backup_then_restore_prints_the_recovery(
    mode: str, instance: ScriptedOracle, splitmirror_session: SessionRunner, tmp_path: Path
) -> None:
    config = splitmirror_session.config_file(URL, mode, {}, instance.oradata)
    done = CliRunner().invoke(main, ["backup", str(config), "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output)
    assert summary["status"] == "DONE"
    catalog = str(splitmirror_session.workspace.catalog)
    target = tmp_path / "restored"
    restored = CliRunner().invoke(
        main, ["restore", str(summary["id"]), "--to", str(target), "--catalog", catalog]
    )
    assert restored.exit_code == 0, restored.output

    # Every datafile, the archived log of the backup and the backup control file; no online
    # log, no current control file from the mirror: the backup control file stands in for it.
    log = Path(instance.archived[-1][0]).relative_to(instance.oradata)
    for datafile in instance.datafiles:
        assert (target / Path(datafile[1]).relative_to(instance.oradata)).is_file()
    assert (target / log).read_bytes() == Path(instance.archived[-1][0]).read_bytes()
    backup_ctl = (target / "splitmirror-backup.ctl").read_bytes()
    assert backup_ctl.startswith(b"backup control file")
    assert (target / "control01.ctl").read_bytes() == (target / "control02.ctl").read_bytes() == backup_ctl

    helpers = target / "splitmirror-oracle"
    script = (helpers / "recover-host.sql").read_text()
    renamed = f"ALTER DATABASE RENAME FILE '{instance.datafiles[0][1]}' TO '{target / 'data01.dbf'}';"
    assert renamed in script
    tail = script[script.index("RECOVER DATABASE USING BACKUP CONTROLFILE UNTIL CANCEL") :].splitlines()
    assert tail[:4] == [
        "RECOVER DATABASE USING BACKUP CONTROLFILE UNTIL CANCEL",
        str(target / log),
        "CANCEL",
        "WHENEVER SQLERROR EXIT FAILURE",
    ]
    assert tail[4:] == ["ALTER DATABASE OPEN RESETLOGS;", "ALTER PLUGGABLE DATABASE ALL OPEN;", "EXIT"]
    pfile = (helpers / "initFREE-host.ora").read_text()
    assert f"*.control_files='{target / 'control01.ctl'}','{target / 'control02.ctl'}'" in pfile
    assert "spfile" not in pfile and f"LOCATION={helpers / 'archive'}" in pfile
    assert "*.processes=300" in pfile and "*.enable_pluggable_database=TRUE" in pfile
    assert f"su - oracle -c 'bash {helpers / 'recover-host.sh'}'" in restored.output
    assert "docker run" not in restored.output  # the server did not run in a container
    for shell in helpers.glob("*.sh"):
        subprocess.run(["bash", "-n", str(shell)], check=True)


def test_noarchivelog_is_refused_by_check_in_one_sentence(
    instance: ScriptedOracle, splitmirror_session: SessionRunner
) -> None:
    instance.log_mode = "NOARCHIVELOG"
    config = splitmirror_session.config_file(URL, "hot-backup", {}, instance.oradata)
    result = CliRunner().invoke(main, ["check", str(config)])
    assert result.exit_code == 3, result.output
    assert "NOARCHIVELOG mode, and BEGIN BACKUP needs ARCHIVELOG (ORA-01123)" in result.output
    assert "Traceback" not in result.output and not instance.alters()


def test_archived_logs_outside_the_primary_are_refused_before_the_window(
    instance: ScriptedOracle, splitmirror_session: SessionRunner, tmp_path: Path
) -> None:
    """The archive destination is where the logs are collected from after the window: outside
    the primary it cannot be archived, which check says before any session begins."""
    instance.archive = tmp_path / "elsewhere"
    instance.archive.mkdir()
    instance._archive_current("ALTER SYSTEM ARCHIVE LOG CURRENT", [])
    config = splitmirror_session.config_file(URL, "hot-backup", {}, instance.oradata)
    result = CliRunner().invoke(main, ["check", str(config)])
    assert result.exit_code == 3, result.output
    assert f"the database uses a file outside the primary: {instance.archived[-1][0]}" in result.output
    assert not instance.alters()[1:], "nothing but the test's own log switch"
