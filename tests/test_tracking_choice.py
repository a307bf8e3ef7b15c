"""One change-tracking decision per session, for both mirrors (`mirror/trackchoice.py`): the
primary's device is looked up once however often the session asks; ``tracking = "on"`` that
cannot be honoured is refused in the same words by both; and ``splitmirror check``, which
promises to change nothing, leaves no tracefs mount behind where there was none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from splitmirror import tracking
from splitmirror.mirror.base import MirrorProvider
from splitmirror.mirror.block import BlockMirror, BlockOptions
from splitmirror.mirror.directory import DirectoryMirror, DirectoryOptions
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase
from splitmirror.workload import create_ledger


def ignore(done: int, total: int | None) -> None:
    pass


def provider(kind: str, primary: Path, scratch: Path, tracking: str) -> MirrorProvider:
    if kind == "block":
        return BlockMirror(primary, scratch / "mirror.img", BlockOptions(tracking=tracking))
    return DirectoryMirror(primary, scratch / "mirror", DirectoryOptions(tracking=tracking))


@pytest.fixture
def findmnt_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every ``findmnt`` the process runs from now on, one line of arguments each, in the
    returned file (a ``findmnt`` first on the PATH that records and runs the real one)."""
    real = shutil.which("findmnt")
    if real is None:
        pytest.skip("findmnt is not installed")
    calls, bin_dir = tmp_path / "findmnt-calls", tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "findmnt"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o700)
    calls.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


@pytest.mark.parametrize("kind", ["block", "directory"])
def test_the_primary_device_is_looked_up_once_per_session(
    kind: str, tracked_disk: Path, tmp_path: Path, findmnt_calls: Path
) -> None:
    """Every call the session makes that depends on tracking, in its order; one ``findmnt``
    for the device.  The block mirror ran one per ``.device`` access before, half a dozen
    per session, and decided again in its notes, preflight and bulk pass."""
    mirror = provider(kind, tracked_disk, tmp_path, "auto")
    try:
        assert mirror.preflight() == []
        said = mirror.notes()
        # Tracked, the block mirror freezes its primary; the directory mirror writes it back.
        frozen, written_back = ([tracked_disk], []) if kind == "block" else ([], [tracked_disk])
        assert (mirror.freeze_paths(), mirror.write_back_paths()) == (frozen, written_back)
        assert mirror.bulk_sync(ignore).tracking == "tracked"
        assert mirror.final_sync([], ignore).tracking == "tracked"
        mirror.split()
    finally:
        mirror.close()
    mirror.reestablish()
    assert mirror.notes() == said and said[0].startswith("change tracking: on"), said
    lookups = [line for line in findmnt_calls.read_text().splitlines() if "--mountpoint" in line]
    assert len(lookups) == 1, lookups


JOURNALED = "the primary's ext4 journals file data (data=journal), out of the tracker's sight"


@pytest.mark.parametrize("how", ["mount-option", "superblock-default"])
def test_an_ext4_that_journals_file_data_is_not_tracked(how: str, tmp_path: Path) -> None:
    """Journaled data reaches a file's own sectors at a journal checkpoint, after the write-back
    SPLIT waits for: the tracker would see only the journal written.  ``tune2fs -o
    journal_data`` makes it the superblock's default, which the mount's options do not list."""
    from splitmirror.testing.loopfs import loop_device, loop_filesystem_unavailable

    reason = loop_filesystem_unavailable() or tracking.unavailable()
    if reason:
        pytest.skip(reason)
    image, mount = tmp_path / "journal.img", tmp_path / "journal-fs"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    options = []
    if how == "superblock-default":
        subprocess.run(["tune2fs", "-o", "journal_data", str(image)], check=True, capture_output=True)
    else:
        options = ["-o", "data=journal"]
    mount.mkdir()
    with loop_device(image) as device:
        subprocess.run(["mount", *options, str(device), str(mount)], check=True)
        try:
            auto = provider("directory", mount, tmp_path, "auto")
            assert auto.notes() == [
                f"change tracking: off ({JOURNALED}); the final pass compares every changed file"
            ]
            refused = [p.sentence() for p in provider("directory", mount, tmp_path, "on").preflight()]
            assert any(f"change tracking is unavailable: {JOURNALED}" in said for said in refused), refused
        finally:
            subprocess.run(["umount", str(mount)], check=True)


NO_TRACEPOINT = "this kernel has no block:block_bio_queue tracepoint"


def test_tracking_on_where_it_cannot_run_is_refused_in_one_wording_by_both_mirrors(
    tracked_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is wrong, then what to do: the two mirrors suggested different fixes before
    ("auto" for the block mirror, "off" for the directory mirror)."""
    monkeypatch.setattr(tracking, "EVENT", Path("events/block/splitmirror_no_such_event"))
    refusals = {}
    for kind in ("block", "directory"):
        problems = provider(kind, tracked_disk, tmp_path, "on").preflight()
        refusals[kind] = [p.sentence() for p in problems if "change tracking" in p.sentence()]
    expected = (
        f"change tracking is unavailable: {NO_TRACEPOINT}; "
        'remove the cause, or set [mirror] tracking = "auto" or "off" to run without it'
    )
    assert refusals == {"block": [expected], "directory": [expected]}


#: Run in a mount namespace of its own: unmount tracefs there (the host keeps its mounts), then
#: ``splitmirror check``; prints the namespace's mounts before and after it, as JSON.
CHECK_WITHOUT_TRACEFS = r"""
import json, subprocess, sys
from pathlib import Path

subprocess.run(["umount", "--all", "--types", "tracefs"], check=True)
before = Path("/proc/self/mountinfo").read_text()
check = subprocess.run([sys.executable, "-m", "splitmirror", "check", sys.argv[1]], capture_output=True)
after = Path("/proc/self/mountinfo").read_text()
said = (check.stdout + check.stderr).decode()
print(json.dumps({"before": before, "after": after, "code": check.returncode, "said": said}))
"""

#: The same for the probe itself: with the tracepoint there, without it (as tests name it), and
#: where tracefs cannot be mounted (a mount point that does not exist).
PROBE_WITHOUT_TRACEFS = r"""
import json, subprocess
from pathlib import Path
from splitmirror import tracking

subprocess.run(["umount", "--all", "--types", "tracefs"], check=True)
before = Path("/proc/self/mountinfo").read_text()
answers = [tracking.unavailable()]
tracking.EVENT = Path("events/block/splitmirror_no_such_event")
answers.append(tracking.unavailable())
tracking.TRACEFS = Path("/proc/splitmirror-no-such-directory")
answers.append(tracking.unavailable())
# A sandbox that refuses namespaces (unshare exits 1) but allows mounts: asked by mounting.
tracking.EVENT, tracking.TRACEFS = Path("events/block/block_bio_queue"), Path("/sys/kernel/tracing")
tracking._NAMESPACE = ["sh", "-c", "exit 1", "refused"]
answers.append(tracking.unavailable())
after = Path("/proc/self/mountinfo").read_text()
print(json.dumps({"before": before, "after": after, "answers": answers}))
"""


def tracefs_mounts(mountinfo: str) -> list[str]:
    """The mount points of tracefs in a ``/proc/PID/mountinfo``."""
    return [line.split()[4] for line in mountinfo.splitlines() if " - tracefs " in line]


def without_tracefs(script: str, *args: str) -> dict[str, Any]:
    """``script``'s JSON, run where tracefs is not mounted: in a private mount namespace, so
    that this machine's own tracefs mount, which other processes may be using, is never
    touched.  Checks that tracefs was unmounted there, and that the host's mounts are as
    they were."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    host = tracefs_mounts(Path("/proc/self/mountinfo").read_text())
    ran = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    seen: dict[str, Any] = json.loads(ran.stdout)
    assert tracefs_mounts(seen["before"]) == [], "tracefs is still mounted in the test's namespace"
    assert tracefs_mounts(Path("/proc/self/mountinfo").read_text()) == host, "the host's mounts changed"
    return seen


def test_check_leaves_no_tracefs_mount_behind(tracked_disk: Path, splitmirror_session: SessionRunner) -> None:
    """Where tracefs is not mounted, ``check`` still finds out whether tracking can run, and
    leaves it unmounted; before the fix it mounted tracefs to look and left it mounted."""
    database = SqliteLedgerDatabase(tracked_disk)
    database.create_ledger()
    splitmirror_session.mirror_options = {"provider": "block", "tracking": "auto"}
    config = splitmirror_session.config(database, "freeze")
    seen = without_tracefs(CHECK_WITHOUT_TRACEFS, str(config.source))
    assert seen["code"] == 0 and "change tracking: on (/dev/loop" in seen["said"], seen["said"]
    assert tracefs_mounts(seen["after"]) == [], "check left tracefs mounted"


def test_the_probe_without_tracefs_mounted_answers_and_leaves_nothing() -> None:
    """The probe looks in a mount namespace of its own: each of its answers, and no mount."""
    reason = tracking.unavailable()
    if reason:
        pytest.skip(reason)
    seen = without_tracefs(PROBE_WITHOUT_TRACEFS)
    there, missing, unmountable, sandboxed = seen["answers"]
    assert (there, missing) == (None, NO_TRACEPOINT)
    cannot = "the tracing filesystem cannot be mounted at /proc/splitmirror-no-such-directory ("
    assert unmountable.startswith(cannot), unmountable
    assert sandboxed is None, "without namespaces, tracking is asked about by mounting, not refused"
    assert tracefs_mounts(seen["after"]) == ["/sys/kernel/tracing"], "mounted as a tracker would"


def test_auto_goes_untracked_where_splitmirror_writes_on_the_primarys_filesystem(
    tracked_disk: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The directory mirror's default (``auto``) on a primary whose filesystem also holds the
    catalog and the archives: tracking would freeze them in SPLIT, so it is off, saying why,
    and the configuration that ran before tracking became the default still runs."""
    from click.testing import CliRunner

    from splitmirror.cli import main

    primary, own = tracked_disk / "primary", tracked_disk / "own"
    primary.mkdir()
    own.mkdir()
    create_ledger(primary / "ledger.db", rows=100)
    mirror = tmp_path_factory.mktemp("elsewhere") / "mirror"
    config = own / "ledger.toml"
    config.write_text(
        f'[session]\nname = "ledger"\ncatalog = "{own}/catalog.db"\n'
        f'[database]\nurl = "sqlite:///{primary}/ledger.db"\nmode = "hot-backup"\n'
        f'[mirror]\nprovider = "directory"\nprimary = "{primary}"\nmirror = "{mirror}"\n'
        f'[target]\npath = "{own}/archives/ledger-{{session}}.tar"\n'
    )
    (own / "archives").mkdir()
    said = CliRunner().invoke(main, ["check", str(config)])
    assert said.exit_code == 0, said.output
    assert "change tracking: off (" in said.output and "is on the primary's filesystem" in said.output
    done = subprocess.run(
        [sys.executable, "-m", "splitmirror", "backup", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
