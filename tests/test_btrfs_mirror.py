"""The btrfs mirror provider: the mirror-provider contract on a subvolume of a loop-device btrfs,
and what it refuses before anything happens."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror import btrfs
from splitmirror.mirror.btrfs_snapshot import SNAPSHOT_PREFIX
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase
from splitmirror.testing.mirror_contract import MirrorContract, MirrorSetup, leftovers_named


@pytest.fixture
def splitmirror_mirror(splitmirror_btrfs_subvolume: Path) -> MirrorSetup:
    return MirrorSetup(
        primary=splitmirror_btrfs_subvolume,
        options={"provider": "btrfs"},
        mirror=splitmirror_btrfs_subvolume.parent / "snapshots",
    )


class TestBtrfsContract(MirrorContract):
    def split_leftovers(self, setup: MirrorSetup) -> list[str]:
        assert setup.mirror is not None
        return leftovers_named(setup.mirror, lambda name: name.startswith(SNAPSHOT_PREFIX))


def _checked(runner: SessionRunner, ledger: SqliteLedgerDatabase, primary: Path) -> tuple[int, str]:
    """``splitmirror check`` on a configuration of ``primary``, as a DBA runs it."""
    config = runner.config_file(ledger.url, "freeze", primary=primary)
    done = runner.command("check", config)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, " ".join((done.stdout + done.stderr).split())


@pytest.fixture
def subvolume_runner(splitmirror_mirror: MirrorSetup, splitmirror_session: SessionRunner) -> SessionRunner:
    splitmirror_session.mirror_options = dict(splitmirror_mirror.options)
    splitmirror_session.mirror_path = splitmirror_mirror.mirror
    return splitmirror_session


def test_a_primary_not_on_btrfs_is_refused(
    subvolume_runner: SessionRunner, splitmirror_workspace: Path
) -> None:
    primary = subvolume_runner.workspace.primary  # on the machine's own filesystem
    ledger = SqliteLedgerDatabase(primary)
    ledger.create_ledger()
    code, said = _checked(subvolume_runner, ledger, primary)
    assert code != 0 and f"the primary {primary} is not on btrfs" in said, said


def test_a_directory_inside_a_subvolume_is_refused_naming_the_subvolume(
    splitmirror_mirror: MirrorSetup, subvolume_runner: SessionRunner
) -> None:
    inner = splitmirror_mirror.primary / "data"
    inner.mkdir()
    ledger = SqliteLedgerDatabase(inner)
    ledger.create_ledger()
    code, said = _checked(subvolume_runner, ledger, inner)
    assert code != 0, said
    assert f"the primary {inner} is a directory inside the subvolume {splitmirror_mirror.primary}" in said, (
        said
    )


def test_a_nested_subvolume_in_the_primary_is_refused_naming_it(
    splitmirror_mirror: MirrorSetup, subvolume_runner: SessionRunner
) -> None:
    ledger = SqliteLedgerDatabase(splitmirror_mirror.primary)
    ledger.create_ledger()
    btrfs.create_subvolume(splitmirror_mirror.primary / "tablespace")
    try:
        code, said = _checked(subvolume_runner, ledger, splitmirror_mirror.primary)
    finally:
        btrfs.delete_subvolume(splitmirror_mirror.primary / "tablespace")
    assert code != 0, said
    assert (
        f"holds {splitmirror_mirror.primary / 'tablespace'}, a subvolume or filesystem of its own" in said
    ), said


@pytest.mark.parametrize("where", ["another filesystem", "inside the primary"])
def test_a_snapshot_directory_that_cannot_hold_the_snapshot_is_refused(
    where: str, splitmirror_mirror: MirrorSetup, subvolume_runner: SessionRunner
) -> None:
    ledger = SqliteLedgerDatabase(splitmirror_mirror.primary)
    ledger.create_ledger()
    if where == "another filesystem":
        subvolume_runner.mirror_path = subvolume_runner.workspace.root / "snapshots"
        expected = "is not on the primary's btrfs"
    else:
        subvolume_runner.mirror_path = splitmirror_mirror.primary / "snapshots"
        expected = "inside"
    code, said = _checked(subvolume_runner, ledger, splitmirror_mirror.primary)
    assert code != 0 and expected in said and "[mirror] mirror" in said, said
    assert not subvolume_runner.mirror_path.exists(), "nothing was created"


def test_a_freeze_on_the_primarys_btrfs_outside_the_primary_is_refused(
    splitmirror_mirror: MirrorSetup,
) -> None:
    """A freeze the snapshot does not cover would hold the snapshot itself until the thaw."""
    from splitmirror.mirror.btrfs_snapshot import BtrfsMirror

    assert splitmirror_mirror.mirror is not None
    mirror = BtrfsMirror(splitmirror_mirror.primary, splitmirror_mirror.mirror)
    outside = splitmirror_mirror.primary.parent / "wal"
    outside.mkdir()
    inside = splitmirror_mirror.primary / "base"
    inside.mkdir()
    assert mirror.freezes_for([inside]) == [], "the snapshot is the instant for the primary"
    assert mirror.freeze_problems([inside]) == []
    [problem] = mirror.freeze_problems([inside, outside])
    assert f"needs {outside} frozen at the split" in problem.sentence(), problem.sentence()


def test_a_snapshot_that_cannot_be_deleted_keeps_the_archive_and_the_next_session_says_so(
    splitmirror_mirror: MirrorSetup, subvolume_runner: SessionRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """The fault matrix's row: CLEANUP cannot delete the snapshot (its directory is append-only:
    entries can be made, not removed).  The archive is good and kept; the next session fails in
    SYNC, before quiescing, naming the snapshot and the command; once it can be deleted, the
    next session deletes it."""
    import subprocess

    from splitmirror.errors import SessionFailed

    snapshots = splitmirror_mirror.mirror
    assert snapshots is not None
    ledger = SqliteLedgerDatabase(splitmirror_mirror.primary)
    ledger.create_ledger()
    subprocess.run(["chattr", "+a", str(snapshots)], check=True)
    try:
        summary = subvolume_runner.run(ledger, "freeze")
        assert summary.status == "DONE" and Path(summary.archive or "").is_file()
        [left] = leftovers_named(snapshots, lambda name: name.startswith(SNAPSHOT_PREFIX))
        assert f"could not delete the snapshot {snapshots / left}" in caplog.text
        with pytest.raises(
            SessionFailed, match=rf"cannot delete {snapshots / left}, a snapshot an earlier"
        ) as failed:
            subvolume_runner.run(ledger, "freeze")
        assert failed.value.phase == "SYNC", "refused before the database was quiesced"
        assert f"btrfs subvolume delete {snapshots / left}" in str(failed.value)
    finally:
        subprocess.run(["chattr", "-a", str(snapshots)], check=True)
    assert subvolume_runner.run(ledger, "freeze").status == "DONE"
    assert leftovers_named(snapshots, lambda name: name.startswith(SNAPSHOT_PREFIX)) == []


def test_subvolumes_of_one_btrfs_are_one_filesystem_to_freeze(splitmirror_btrfs_subvolume: Path) -> None:
    """Each subvolume has a device number of its own, but FIFREEZE on one freezes the whole
    btrfs: the freezer's mount point and the "never freeze our own files" check must see one
    filesystem (they once compared st_dev)."""
    from splitmirror.fsfreeze import mount_point, same_filesystem

    mount = splitmirror_btrfs_subvolume.parent
    other = mount / "catalog"
    btrfs.create_subvolume(other)
    (splitmirror_btrfs_subvolume / "db").write_bytes(b"x")
    assert mount_point(splitmirror_btrfs_subvolume / "db") == mount
    assert same_filesystem(splitmirror_btrfs_subvolume, other)
    assert not same_filesystem(splitmirror_btrfs_subvolume, Path("/proc"))


def test_a_snapshot_that_cannot_be_taken_fails_split_and_releases_the_database(
    splitmirror_mirror: MirrorSetup, subvolume_runner: SessionRunner
) -> None:
    """The fault matrix's row for the split itself failing: the snapshot directory made
    immutable after preflight.  SPLIT fails with one sentence naming both paths, the database
    takes writes at once, nothing is left, and the next session passes."""
    import subprocess

    from splitmirror import impl
    from splitmirror.errors import SessionFailed
    from splitmirror.phases import Phase

    snapshots = splitmirror_mirror.mirror
    assert snapshots is not None

    class Immutable:
        @impl
        def splitmirror_phase_started(self, session: object, phase: Phase) -> None:
            if phase is Phase.QUIESCE:
                subprocess.run(["chattr", "+i", str(snapshots)], check=True)

    ledger = SqliteLedgerDatabase(splitmirror_mirror.primary)
    ledger.create_ledger()
    try:
        with pytest.raises(SessionFailed) as failed:
            subvolume_runner.run(ledger, "freeze", Immutable())
    finally:
        subprocess.run(["chattr", "-i", str(snapshots)], check=True)
    assert failed.value.phase == "SPLIT"
    assert (
        f"could not snapshot {splitmirror_mirror.primary} into {snapshots} (Operation not permitted)"
        in str(failed.value)
    )
    assert ledger.accepts_writes()
    assert list(snapshots.iterdir()) == []
    assert subvolume_runner.run(ledger, "freeze").status == "DONE"


def test_a_primary_reached_through_a_link_is_the_subvolume_it_names(
    splitmirror_mirror: MirrorSetup, subvolume_runner: SessionRunner
) -> None:
    link = subvolume_runner.workspace.root / "db-link"
    link.symlink_to(splitmirror_mirror.primary)
    ledger = SqliteLedgerDatabase(splitmirror_mirror.primary)
    ledger.create_ledger()
    config = subvolume_runner.config_file(ledger.url, "freeze", primary=link)
    done = subvolume_runner.command("check", config)
    assert done.returncode == 0, done.stdout + done.stderr
    backup = subvolume_runner.command("backup", config)
    assert backup.returncode == 0, backup.stdout + backup.stderr
