"""The block mirror end to end with the SQLite engine: the primary is a loop-device ext4, the
mirror an image file that is never mounted; every database file is read from the mirror by its
extents; restore drills in both modes with concurrent writers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.catalog import SqliteCatalog
from splitmirror.errors import PreflightError
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase, Workspace, run_drill
from splitmirror.testing.loopfs import device_of, loop_device, loop_filesystem


@pytest.fixture
def block_runner(splitmirror_session: SessionRunner) -> SessionRunner:
    splitmirror_session.mirror_options = {"provider": "block"}
    return splitmirror_session


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_drill_reads_every_file_by_extent_from_the_unmounted_mirror(
    mode: str, disk: Path, block_runner: SessionRunner
) -> None:
    database = SqliteLedgerDatabase(disk)
    report = run_drill(database, block_runner, mode)
    assert report.acknowledged > 0 and report.passed, str(report)
    catalog = SqliteCatalog(block_runner.workspace.catalog)
    session = max(catalog.sessions(), key=lambda s: s.id)
    files = [f for f in catalog.files(session.id) if f.read_method != "generated"]
    assert files and {f.read_method for f in files} == {"extent"}, [(f.member, f.read_method) for f in files]
    assert session.stats["extents"][database.path.name], "the extents BACKUP read are recorded"
    mirror = block_runner.workspace.mirror
    assert mirror.is_file() and str(mirror) not in Path("/proc/self/mounts").read_text()
    assert mirror.stat().st_mode & 0o077 == 0, "the image holds the database: private, like an archive"


def test_a_mirror_smaller_than_the_primary_is_refused_before_anything_happens(
    disk: Path, block_runner: SessionRunner, splitmirror_workspace: Workspace
) -> None:
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    splitmirror_workspace.mirror.write_bytes(b"small" * 100)
    with pytest.raises(
        PreflightError, match=r"the mirror .* \(500 bytes\) is smaller than the primary /dev/loop"
    ):
        block_runner.run(database, "freeze")
    assert splitmirror_workspace.mirror.read_bytes() == b"small" * 100
    assert database.accepts_writes()


def test_a_primary_that_is_not_a_mount_point_is_refused(disk: Path, block_runner: SessionRunner) -> None:
    (disk / "sub").mkdir()
    database = SqliteLedgerDatabase(disk / "sub")
    database.create_ledger()
    with pytest.raises(PreflightError, match="is not the mount point of a block device"):
        block_runner.run(database, "freeze")
    assert os.path.exists(database.path)


def test_a_device_that_is_not_the_one_mounted_is_refused(disk: Path, block_runner: SessionRunner) -> None:
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    block_runner.mirror_options = {"provider": "block", "device": "/dev/null"}
    with pytest.raises(PreflightError, match=r"\[mirror\] device /dev/null is not what is mounted at"):
        block_runner.run(database, "freeze")
    assert not block_runner.workspace.mirror.exists(), "nothing was created"


def test_a_mirror_device_that_is_mounted_is_refused_untouched(
    disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    (tmp_path / "other").mkdir()
    with loop_filesystem(tmp_path / "other", 128 << 20) as other:
        (other / "keep").write_bytes(b"someone else's data")
        device = device_of(other)
        block_runner.mirror_options = {"provider": "block"}
        block_runner.workspace.mirror.symlink_to(device)
        with pytest.raises(PreflightError, match=rf"the mirror .* is in use \(mounted at {other}\)"):
            block_runner.run(database, "freeze")
        assert (other / "keep").read_bytes() == b"someone else's data"
    assert database.accepts_writes()


def test_a_mirror_device_held_exclusively_is_refused(
    disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    """Not mounted, but claimed (as LVM or RAID would): the kernel's O_EXCL answer is used."""
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    image = tmp_path / "held.img"
    with open(image, "wb") as f:
        f.truncate(128 << 20)
    with loop_device(image) as held:
        fd = os.open(held, os.O_RDONLY | os.O_EXCL)
        try:
            block_runner.workspace.mirror.symlink_to(held)
            with pytest.raises(PreflightError, match=r"is in use \(held by the kernel"):
                block_runner.run(database, "freeze")
        finally:
            os.close(fd)


def test_an_image_attached_to_a_loop_device_is_refused(
    disk: Path, block_runner: SessionRunner, tmp_path: Path
) -> None:
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    mirror = block_runner.workspace.mirror
    with open(mirror, "wb") as f:
        f.truncate(128 << 20)
    with (
        loop_device(mirror) as device,
        pytest.raises(PreflightError, match=rf"is in use \(attached to {device}\)"),
    ):
        block_runner.run(database, "freeze")


def test_a_missing_mirror_device_is_refused_and_not_created(disk: Path, block_runner: SessionRunner) -> None:
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    missing = Path("/dev/splitmirror-no-such-device")
    block_runner.mirror_options = {"provider": "block"}
    block_runner.workspace.mirror.symlink_to(missing)
    with pytest.raises(PreflightError, match=r"the mirror .* does not exist"):
        block_runner.run(database, "freeze")
    assert not missing.exists()
