"""The restore of a server that ran in a container (``path_map``): the files the restore writes
and the steps it prints, from a manifest as a session writes it.  No database runs: the
container drill (test_oracle_contract.py) executes these steps where the image can be pulled."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from splitmirror_oracle.restore import prepare

SERVER = "/opt/oracle/oradata"


def manifest(host: Path) -> dict[str, Any]:
    return {
        "files": [{"path": str(host / "FREE/system01.dbf"), "member": "FREE/system01.dbf"}],
        "metadata": {
            "db_name": "FREE", "sid": "FREE", "cdb": True,
            "control_files": [f"{SERVER}/FREE/control01.ctl", f"{SERVER}/FREE/control02.ctl"],
            "backup_controlfile": f"{SERVER}/FREE/splitmirror-backup.ctl",
            "datafiles": [[1, f"{SERVER}/FREE/system01.dbf"]],
            "parameters": {
                "db_name": [2, "FREE"], "spfile": [2, "/x/spfileFREE.ora"], "sga_target": [6, "1073741824"],
            },
            "redo_logs": [f"{SERVER}/FREE/redo01.log"],
            "tempfiles": [f"{SERVER}/FREE/temp01.dbf"],
            "directories": [[SERVER, str(host)]],
        },
        "redo_range": {
            "end_scn": 4242,
            "archived_logs": [f"{SERVER}/FREE/archive/1_8_1.arc", f"{SERVER}/FREE/archive/1_9_1.arc"],
        },
    }  # fmt: skip


def test_the_container_route_mounts_each_directory_where_the_server_had_it(tmp_path: Path) -> None:
    restore = tmp_path / "restore"
    (restore / "FREE/archive").mkdir(parents=True)
    (restore / "FREE/system01.dbf").write_bytes(b"data")
    (restore / "FREE/splitmirror-backup.ctl").write_bytes(b"backup control file")
    steps = prepare(restore, manifest(Path("/srv/ora")))

    assert (restore / "FREE/control01.ctl").read_bytes() == b"backup control file"
    (container,) = [s for s in steps if s.kind == "container"]
    assert list(container.argv) == [
        "docker", "run", "-d", "-v", f"{restore}:{SERVER}",
        "-v", f"{restore}/splitmirror-oracle:/splitmirror-oracle",
        "--user", "root", "--entrypoint", "bash", "IMAGE", "/splitmirror-oracle/start-container.sh",
    ]  # fmt: skip
    helpers = restore / "splitmirror-oracle"
    pfile = (helpers / "initFREE.ora").read_text()
    assert f"*.control_files='{SERVER}/FREE/control01.ctl','{SERVER}/FREE/control02.ctl'" in pfile
    assert "*.sga_target=1073741824" in pfile and "*.db_name='FREE'" in pfile and "spfile" not in pfile
    script = (helpers / "recover.sql").read_text()
    assert "RENAME FILE" not in script  # the paths are the server's own inside the container
    assert f"{SERVER}/FREE/archive/1_8_1.arc\n{SERVER}/FREE/archive/1_9_1.arc\nCANCEL\n" in script
    assert script.index("STARTUP NOMOUNT PFILE='/splitmirror-oracle/initFREE.ora'") < script.index("RECOVER")
    start = (helpers / "start-container.sh").read_text()
    assert f"chown -R oracle:oinstall {SERVER} " in start and "/splitmirror-oracle/recover.sql" in start
    for shell in helpers.glob("*.sh"):
        subprocess.run(["bash", "-n", str(shell)], check=True)
    host = (helpers / "recover-host.sql").read_text()
    assert f"RENAME FILE '{SERVER}/FREE/redo01.log' TO '{restore}/FREE/redo01.log'" in host
    assert f"{restore}/FREE/archive/1_9_1.arc\nCANCEL" in host
    assert any("SCN 4242" in s.comment for s in steps if s.kind == "note")


def test_files_outside_the_restore_go_into_it_never_to_the_live_paths(tmp_path: Path) -> None:
    """A control file, an online log and a tempfile outside the primary: on this host they are
    placed (or created by OPEN RESETLOGS) under splitmirror-oracle/outside/, which the container
    route mounts too; nothing names the live path as a target."""
    restore = tmp_path / "restore"
    (restore / "FREE").mkdir(parents=True)
    (restore / "FREE/splitmirror-backup.ctl").write_bytes(b"backup control file")
    data = manifest(Path("/srv/ora"))
    data["metadata"]["control_files"].append("/u02/ctl/control03.ctl")
    data["metadata"]["redo_logs"].append("/u03/redo/redo01b.log")
    data["metadata"]["tempfiles"].append("/u04/temp/temp02.dbf")
    steps = prepare(restore, data)
    helpers = restore / "splitmirror-oracle"
    assert (helpers / "outside/u02/ctl/control03.ctl").read_bytes() == b"backup control file"
    assert (helpers / "outside/u03/redo").is_dir() and (helpers / "outside/u04/temp").is_dir()
    host_pfile = (helpers / "initFREE-host.ora").read_text()
    assert f"'{helpers}/outside/u02/ctl/control03.ctl'" in host_pfile and "None" not in host_pfile
    host = (helpers / "recover-host.sql").read_text()
    assert f"RENAME FILE '/u03/redo/redo01b.log' TO '{helpers}/outside/u03/redo/redo01b.log'" in host
    assert f"RENAME FILE '/u04/temp/temp02.dbf' TO '{helpers}/outside/u04/temp/temp02.dbf'" in host
    container = (helpers / "recover.sql").read_text()
    assert (
        "RENAME FILE '/u03/redo/redo01b.log' TO '/splitmirror-oracle/outside/u03/redo/redo01b.log'"
        in container
    )
    assert f"RENAME FILE '{SERVER}/FREE/redo01.log'" not in container  # mounted where the server had it
    pfile = (helpers / "initFREE.ora").read_text()
    assert "'/splitmirror-oracle/outside/u02/ctl/control03.ctl'" in pfile
    assert not [s for s in steps if s.kind == "manual"]


def test_the_copy_does_not_act_as_production(tmp_path: Path) -> None:
    """No redo to the live standby, no registration with the live listeners, no scheduler jobs."""
    restore = tmp_path / "restore"
    (restore / "FREE").mkdir(parents=True)
    (restore / "FREE/splitmirror-backup.ctl").write_bytes(b"backup control file")
    data = manifest(Path("/srv/ora"))
    data["metadata"]["parameters"].update(
        {
            "log_archive_dest_1": [2, f"LOCATION={SERVER}/FREE/archive"],
            "log_archive_dest_2": [2, "SERVICE=stby ASYNC"],
            "log_archive_dest_10": [2, "SERVICE=far ASYNC"],
            "log_archive_dest_31": [2, "SERVICE=farther ASYNC"],
            "dg_broker_start": [1, "TRUE"],
            "log_archive_dest_state_2": [2, "ENABLE"],
            "log_archive_config": [2, "DG_CONFIG=(prod,stby)"],
            "fal_server": [2, "stby"],
            "remote_listener": [2, "scan.example:1521"],
            "local_listener": [2, "(ADDRESS=(HOST=prod1)(PORT=1521))"],
            "job_queue_processes": [3, "80"],
            "common_user_prefix": [2, ""],
        }
    )
    prepare(restore, data)
    for name in ("initFREE.ora", "initFREE-host.ora"):
        pfile = (restore / "splitmirror-oracle" / name).read_text()
        dropped_all = (
            "dest_2",
            "dest_10",
            "dest_31",
            "dest_state_2",
            "log_archive_config",
            "fal_server",
            "dg_broker",
        )
        for dropped in (*dropped_all, "listener", "=80"):
            assert dropped not in pfile, (name, dropped)
        assert "*.job_queue_processes=0" in pfile and "*.common_user_prefix=''" in pfile
    container = (restore / "splitmirror-oracle/initFREE.ora").read_text()
    assert f"*.log_archive_dest_1='LOCATION={SERVER}/FREE/archive'" in container


def test_a_primary_inside_the_mapped_directory_is_mounted_where_the_server_had_it(tmp_path: Path) -> None:
    """``primary = /srv/ora/FREE`` under ``"/opt/oracle/oradata" = "/srv/ora"``: the restore is
    the server's ``/opt/oracle/oradata/FREE``, mounted there, and nothing is renamed."""
    restore = tmp_path / "restore"
    restore.mkdir()
    (restore / "system01.dbf").write_bytes(b"data")
    (restore / "splitmirror-backup.ctl").write_bytes(b"backup control file")
    data = manifest(Path("/srv/ora"))
    data["files"] = [{"path": "/srv/ora/FREE/system01.dbf", "member": "system01.dbf"}]
    steps = prepare(restore, data)
    (container,) = [s for s in steps if s.kind == "container"]
    assert f"{restore}:{SERVER}/FREE" in container.argv
    assert (restore / "control01.ctl").read_bytes() == b"backup control file"
    assert "RENAME FILE" not in (restore / "splitmirror-oracle/recover.sql").read_text()


def test_an_archive_without_a_backup_control_file_is_not_prepared(tmp_path: Path) -> None:
    data = manifest(Path("/srv/ora"))
    del data["metadata"]["backup_controlfile"]
    with pytest.raises(FileNotFoundError, match="names no backup control file"):
        prepare(tmp_path, data)
    data = manifest(Path("/srv/ora"))
    with pytest.raises(FileNotFoundError, match=r"splitmirror-backup\.ctl is not in the restore"):
        prepare(tmp_path, data)
