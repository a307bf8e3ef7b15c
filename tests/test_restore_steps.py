"""Restore steps: the printed line and the JSON form come from the same fields, so what a script
executes is what a DBA reads."""

from __future__ import annotations

import io
import json
import shlex
import time
from pathlib import Path

import pytest
from rich.console import Console

from splitmirror.restore import RestoreResult
from splitmirror.restore.report import print_restore
from splitmirror.restore_steps import IMAGE, RestoreStep, as_step, for_route, grouped
from splitmirror.restored_paths import primary_at_backup, restored_location
from splitmirror.testing.steps import StepFailed, container_step, run_host_steps

STEPS = [
    RestoreStep.run("chown", "-R", "mysql:mysql", Path("/r/my data"), route="host"),
    RestoreStep.start("mariadbd", "--datadir=/r/my data", "--log-bin=binlog", comment="crash recovery"),
    RestoreStep.container([("/r/my data", "/var/lib/mysql")], ["--log-bin=binlog"], comment="IMAGE: yours"),
    RestoreStep.note("point in time: mariadb-binlog ... | mariadb"),
]


def test_each_line_is_its_argv_as_a_shell_takes_it() -> None:
    chown, start, container, note = (step.text() for step in STEPS)
    assert shlex.split(chown) == ["chown", "-R", "mysql:mysql", "/r/my data"]
    assert start == "mariadbd '--datadir=/r/my data' --log-bin=binlog &   # crash recovery"
    assert shlex.split(container.split("   #")[0]) == [
        "docker", "run", "-d", "-v", "/r/my data:/var/lib/mysql", IMAGE, "--log-bin=binlog",
    ]  # fmt: skip
    assert note == "# point in time: mariadb-binlog ... | mariadb"


def test_a_container_step_splits_into_docker_options_and_server_arguments() -> None:
    container = STEPS[2]
    assert container.docker_options == ("-d", "-v", "/r/my data:/var/lib/mysql")
    assert container.server_args == ("--log-bin=binlog",)


def test_the_json_form_round_trips_and_carries_the_printed_text() -> None:
    for step in STEPS:
        data = json.loads(json.dumps(step.to_json()))
        assert data["text"] == step.text()
        assert RestoreStep.from_json(data) == step


def test_routes_and_headings() -> None:
    assert [s.kind for s in for_route(STEPS, "host")] == ["run", "start", "note"]
    assert [s.kind for s in for_route(STEPS, "container")] == ["container", "note"]
    assert [(heading, len(steps)) for heading, steps in grouped(STEPS)] == [
        ("on this host", 2),
        ("or in a container", 1),
        ("then", 1),
    ]


def test_restore_prints_the_groups_numbered() -> None:
    out = io.StringIO()
    result = RestoreResult("a.tar", Path("/r"), ["x"], [], 1, "mysql", STEPS, [])
    print_restore(Console(file=out, width=300), result)
    text = out.getvalue()
    assert "  on this host:\n    1. chown -R mysql:mysql '/r/my data'\n    2. mariadbd" in text
    assert "  or in a container:\n    1. docker run -d" in text
    assert "  then:\n    1. # point in time" in text


def test_a_plugin_returning_strings_still_has_them_shown() -> None:
    assert as_step("do this by hand").text() == "do this by hand"
    assert as_step("do this by hand").kind == "manual"


def test_restored_locations_follow_the_primary_recorded_in_the_file_list() -> None:
    manifest = {
        "files": [{"path": "", "member": "x"}, {"path": "/srv/db/mysql/ibdata1", "member": "mysql/ibdata1"}]
    }
    assert primary_at_backup(manifest) == Path("/srv/db")
    assert restored_location(Path("/r"), manifest, "/srv/db/binlog") == Path("/r/binlog")
    assert restored_location(Path("/r"), manifest, "/srv/elsewhere") is None
    assert primary_at_backup({"files": []}) is None


def test_host_steps_run_in_order_and_a_start_step_keeps_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    steps = [
        RestoreStep.run("touch", marker, route="host"),
        RestoreStep.start("sh", "-c", f"test -f {marker} && echo started && exec sleep 30"),
        RestoreStep.container([(tmp_path, "/data")]),  # another route: not run here
        RestoreStep.manual("then move it into place"),
    ]
    log = tmp_path / "server.log"
    (server,) = run_host_steps(steps, log=log)
    try:
        deadline = time.monotonic() + 10
        while not log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.poll() is None, "a start step runs until the server stops"
    finally:
        server.terminate()
        server.wait()
    assert log.read_text() == "started\n"


def test_a_printed_step_that_fails_as_written_says_which(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match=r"the printed step `false` exited 1"):
        run_host_steps([RestoreStep.run("false")])
    with pytest.raises(StepFailed, match="needs no-such-server-binary, which is not installed"):
        run_host_steps([RestoreStep.run("no-such-server-binary", "--datadir=/x")])
    with pytest.raises(StepFailed, match="expected one `docker run` step"):
        container_step([RestoreStep.run("true")])


def test_a_printed_line_is_exactly_the_command(tmp_path: Path) -> None:
    """Rich would turn :smile: into an emoji and [red] into a style: not in a step."""
    odd = Path("/r/:smile: [red]x[/red]")
    step = RestoreStep.run("chown", "-R", "mysql:mysql", odd, comment="two\nlines", route="host")
    assert step.text() == "chown -R mysql:mysql '/r/:smile: [red]x[/red]'   # two lines"
    out = io.StringIO()
    print_restore(
        Console(file=out, width=300), RestoreResult("a.tar", Path("/r"), [], [], 0, "x", [step], [])
    )
    assert f"1. {step.text()}\n" in out.getvalue()


def test_a_container_step_passes_environment_to_docker() -> None:
    step = RestoreStep.container([("/r/data", "/pg")], ["postgres"], env={"PGDATA": "/pg"})
    assert step.docker_options == ("-d", "-e", "PGDATA=/pg", "-v", "/r/data:/pg")
    assert step.text() == "docker run -d -e PGDATA=/pg -v /r/data:/pg IMAGE postgres"


def test_restore_lists_members_only_when_asked() -> None:
    result = RestoreResult("a.tar", Path("/r"), ["base/1/1259", "global/pg_control"], [], 2, "x", [], [])
    quiet, loud = io.StringIO(), io.StringIO()
    print_restore(Console(file=quiet, width=200), result)
    print_restore(Console(file=loud, width=200), result, verbose=True)
    assert "restored 2 members" in quiet.getvalue() and "global/pg_control" not in quiet.getvalue()
    assert "  global/pg_control\n" in loud.getvalue()
