"""The command mirror provider, driven by docs/examples/command-mirror/'s loop-device recipe (a
resync with ``dd``, a split that detaches and, for the mount-point variant, mounts the image
read-only): the mirror-provider contract in both reading variants, the fault matrix's rows for
the commands, and the bad input."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from splitmirror.catalog import SqliteCatalog
from splitmirror.errors import SessionFailed
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase, Workspace
from splitmirror.testing.faults import is_frozen
from splitmirror.testing.mirror_contract import MirrorContract, MirrorSetup, command_recipe

RECIPE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "command-mirror"


def recipe(workspace: Workspace, variant: str, **overrides: Any) -> dict[str, Any]:
    """``[mirror]`` keys of the loop-device recipe, as docs/mirrors.md gives them."""
    return {**command_recipe(RECIPE, workspace, variant), **overrides}


def mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/self/mounts").read_text().splitlines())


@pytest.fixture(params=["device", "mountpoint"])
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestCommandMirrorContract(MirrorContract):
    @pytest.fixture
    def splitmirror_mirror(self, disk: Path, splitmirror_workspace: Workspace, variant: str) -> MirrorSetup:
        return MirrorSetup(primary=disk, options=recipe(splitmirror_workspace, variant))

    def split_leftovers(self, setup: MirrorSetup) -> list[str]:
        """A split image still mounted (the mount-point variant), or a file list left behind."""
        image = setup.options.get("image_mountpoint")
        left = [image] if image and mounted(Path(image)) else []
        return left + sorted(
            str(p) for p in Path(setup.options["sync_command"][1]).parent.glob("mirror/files-*")
        )


@pytest.fixture
def ledger(disk: Path) -> SqliteLedgerDatabase:
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    return database


@pytest.fixture
def runner(splitmirror_session: SessionRunner) -> SessionRunner:
    splitmirror_session.mirror_options = recipe(splitmirror_session.workspace, "mountpoint")
    return splitmirror_session


def script(workspace: Workspace, name: str, body: str) -> str:
    path = workspace.root / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_the_commands_get_the_session_and_their_info_lines_are_logged(
    runner: SessionRunner, ledger: SqliteLedgerDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "splitmirror.mirror.command")
    seen = runner.workspace.root / "seen"
    split = script(
        runner.workspace,
        "split",
        f'set -e\nenv | grep ^SPLITMIRROR_ | sort > {seen}\ncp "$SPLITMIRROR_FILE_LIST" {seen}.files\n'
        f'exec {RECIPE / "loop-split"} "$@"',
    )
    runner.mirror_options["split_command"] = [split, runner.mirror_options["split_command"][1]]
    image = runner.mirror_options["resync_command"][1]
    resync = script(
        runner.workspace,
        "resync",
        f'cp "$SPLITMIRROR_FILE_LIST" {seen}.resync\nexec {RECIPE / "loop-resync"} {image}',
    )
    runner.mirror_options["resync_command"] = [resync]
    summary = runner.run(ledger, "hot-backup")
    assert Path(f"{seen}.resync").read_text() == Path(f"{seen}.files").read_text(), "the resync gets the list"
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines())
    assert env["SPLITMIRROR_SESSION"] == str(summary.id) and env["SPLITMIRROR_PHASE"] == "SPLIT"
    assert env["SPLITMIRROR_PRIMARY"] == str(ledger.primary)
    assert Path(f"{seen}.files").read_text().splitlines()[0] == str(ledger.path), "in archive order"
    assert f"split session {summary.id}: " in caplog.text, "#INFO lines are logged"
    assert not mounted(Path(runner.mirror_options["image_mountpoint"])), "the resync let go of the image"


def test_a_failing_split_command_fails_split_in_its_own_words_and_releases(
    runner: SessionRunner, ledger: SqliteLedgerDatabase
) -> None:
    good = runner.mirror_options["split_command"]
    runner.mirror_options["split_command"] = [
        script(
            runner.workspace,
            "split",
            'echo "#INFO asking the array"\necho "array busy: try later" >&2\nexit 3',
        )
    ]
    with pytest.raises(SessionFailed) as failed:
        runner.run(ledger, "freeze")
    assert failed.value.phase == "SPLIT"
    said = str(failed.value)
    assert "the split command" in said and "failed with exit code 3: array busy: try later" in said
    assert ledger.accepts_writes()
    assert not mounted(Path(runner.mirror_options["image_mountpoint"]))
    runner.mirror_options["split_command"] = good
    assert runner.run(ledger, "freeze").status == "DONE", "the next session passes"


def test_a_split_command_that_hangs_is_ended_at_max_window_and_the_database_released(
    runner: SessionRunner, ledger: SqliteLedgerDatabase
) -> None:
    marker = f"splitmirror-hanging-{os.getpid()}"
    runner.mirror_options["split_command"] = [script(runner.workspace, marker, "sleep 600")]
    started = time.monotonic()
    with pytest.raises(SessionFailed, match="max_window") as failed:
        runner.run(ledger, "freeze", max_window="2s")
    assert failed.value.phase == "SPLIT" and time.monotonic() - started < 15
    assert ledger.accepts_writes()
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1, (
        "the command was ended"
    )
    assert not is_frozen(ledger.primary)


def test_a_failing_resync_fails_cleanup_but_keeps_the_archive(
    runner: SessionRunner, ledger: SqliteLedgerDatabase
) -> None:
    image = runner.mirror_options["resync_command"][1]
    resync = script(
        runner.workspace, "resync", f'{RECIPE / "loop-resync"} {image}\necho "array: resync refused"\nexit 1'
    )
    runner.mirror_options["resync_command"] = [resync]
    with pytest.raises(
        SessionFailed, match=r"the resync command .* failed with exit code 1: array: resync refused"
    ) as failed:
        runner.run(ledger, "freeze")
    assert failed.value.phase == "CLEANUP"
    summary = SqliteCatalog(runner.workspace.catalog).get(failed.value.session_id)
    assert summary.status == "FAILED" and Path(summary.archive or "").is_file(), "the archive is kept"
    verified = runner.command("verify", str(summary.id))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    restored = runner.workspace.root / "restored"
    done = runner.command("restore", str(summary.id), "--to", str(restored))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ({"image_device": "/dev/null"}, "set exactly one of image_mountpoint"),
        ({"image_mountpoint": None}, "set exactly one of image_mountpoint"),
        (
            {"split_command": ["/no/such/array-cli", "split"]},
            "split_command's program /no/such/array-cli is not found",
        ),
        ({"split_command": []}, "split_command"),
        ({"split_command": ["/bin/true", 3]}, "[mirror] split_command[1]: input should be a valid string"),
        (
            {"image_mountpoint": None, "image_device": "/dev/null", "freeze": False},
            "image_device needs freeze = true",
        ),
    ],
    ids=["both images", "no image", "missing program", "empty command", "a number", "extents unfrozen"],
)
def test_bad_command_mirror_keys_are_refused_in_one_sentence(
    keys: dict[str, Any], said: str, runner: SessionRunner, ledger: SqliteLedgerDatabase
) -> None:
    options = {**runner.mirror_options, **keys}
    runner.mirror_options = {k: v for k, v in options.items() if v is not None}
    done = runner.command("check", runner.config_file(ledger.url, "freeze", primary=ledger.primary))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert said in " ".join((done.stdout + done.stderr).split()), done.stdout + done.stderr


def test_a_split_that_is_its_own_instant_freezes_nothing_under_the_primary(
    disk: Path, splitmirror_workspace: Workspace
) -> None:
    """``freeze = false`` (a ZFS or LVM snapshot, which is one instant by itself and would wait
    on a frozen filesystem): the engine's freezes under the primary are left to the split."""
    from splitmirror.mirror.command import CommandMirror, CommandOptions

    keys = recipe(splitmirror_workspace, "mountpoint", freeze=False)
    options = CommandOptions.model_validate({k: v for k, v in keys.items() if k != "provider"})
    mirror = CommandMirror(disk, splitmirror_workspace.mirror, options)
    assert mirror.freezes_for([disk / "data"]) == [] and mirror.freeze_paths() == []
    frozen = CommandMirror(disk, splitmirror_workspace.mirror, options.model_copy(update={"freeze": True}))
    assert frozen.freezes_for([disk / "data"]) == [disk / "data", disk]


def test_an_image_device_that_is_not_a_copy_of_the_primarys_device_fails_split(
    disk: Path, splitmirror_session: SessionRunner, ledger: SqliteLedgerDatabase
) -> None:
    """Extents are offsets on the primary's device: an image of anything else would archive the
    wrong bytes under checksums made from them.  SPLIT compares the first MiB and refuses."""
    other = splitmirror_session.workspace.root / "other.img"
    other.write_bytes(b"\0" * (1 << 20))
    splitmirror_session.mirror_options = {
        "provider": "command",
        "split_command": ["/bin/true"],
        "image_device": str(other),
    }
    with pytest.raises(
        SessionFailed, match=rf"image_device {other} does not hold a copy of the primary's device"
    ):
        splitmirror_session.run(ledger, "freeze")
    assert ledger.accepts_writes() and not is_frozen(disk)


def test_the_primarys_own_device_as_image_device_is_refused(
    disk: Path, splitmirror_session: SessionRunner, ledger: SqliteLedgerDatabase
) -> None:
    from splitmirror.testing.loopfs import device_of

    own = device_of(disk)
    splitmirror_session.mirror_options = {
        "provider": "command",
        "split_command": ["/bin/true"],
        "image_device": str(own),
    }
    done = splitmirror_session.command(
        "check", splitmirror_session.config_file(ledger.url, "freeze", primary=disk)
    )
    assert (
        done.returncode != 0
        and f"image_device {own} is the primary's own device" in done.stdout + done.stderr
    )


def test_a_command_that_leaves_a_child_holding_its_output_has_still_finished(
    runner: SessionRunner, ledger: SqliteLedgerDatabase
) -> None:
    """Its exit is what counts (``ssh`` with a persistent connection, a daemon it starts): the
    window does not wait for the child, nor is the command said to hang."""
    marker = f"splitmirror-detached-{os.getpid()}"
    image = runner.mirror_options["split_command"][1]
    split = script(
        runner.workspace, "split", f'{RECIPE / "loop-split"} {image}\nsetsid sh -c "sleep 30 # {marker}" &'
    )
    runner.mirror_options["split_command"] = [split]
    try:
        summary = runner.run(ledger, "freeze", max_window="10s")
    finally:
        subprocess.run(["pkill", "-f", marker], check=False)
    assert summary.status == "DONE" and (summary.window_ms or 0) < 5000, summary.window_ms


def test_a_session_killed_in_cleanup_keeps_its_complete_archive(
    runner: SessionRunner, ledger: SqliteLedgerDatabase
) -> None:
    """A resync that runs for an hour, then kill -9 or the OOM killer: the watchdog marks the row
    FAILED in CLEANUP and leaves the archive, which verify and restore accept."""
    config = runner.config_file(ledger.url, "freeze", primary=ledger.primary)
    image = runner.mirror_options["resync_command"][1]
    killer = script(
        runner.workspace, "resync", f"{RECIPE / 'loop-resync'} {image}\nkill -KILL $PPID\nsleep 5"
    )
    text = config.read_text().replace(
        f'resync_command = ["{RECIPE / "loop-resync"}", "{image}"]', f'resync_command = ["{killer}"]'
    )
    assert killer in text
    config.write_text(text)
    died = runner.command("backup", config)
    assert died.returncode == -9, died.stderr
    catalog = SqliteCatalog(runner.workspace.catalog)
    deadline = time.monotonic() + 10
    while catalog.sessions()[0].status == "STARTED" and time.monotonic() < deadline:
        time.sleep(0.1)
    [summary] = catalog.sessions()
    assert (summary.status, summary.failed_phase) == ("FAILED", "CLEANUP"), summary
    assert Path(summary.archive or "").is_file(), "the watchdog kept the complete archive"
    verified = runner.command("verify", str(summary.id))
    assert verified.returncode == 0, verified.stdout + verified.stderr
