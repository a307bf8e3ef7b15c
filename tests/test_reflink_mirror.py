"""The reflink mirror provider: the mirror-provider contract on a loop-device xfs made with
reflink, and what it refuses before anything happens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.mirror.reflink import SPLIT_PREFIX, ReflinkMirror
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase
from splitmirror.testing.mirror_contract import MirrorContract, MirrorSetup, leftovers_named


@pytest.fixture
def splitmirror_mirror(splitmirror_reflink_filesystem: Path) -> MirrorSetup:
    primary = splitmirror_reflink_filesystem / "primary"
    primary.mkdir()
    return MirrorSetup(primary=primary, options={"provider": "reflink"}, mirror=primary.parent / "splits")


class TestReflinkContract(MirrorContract):
    def split_leftovers(self, setup: MirrorSetup) -> list[str]:
        assert setup.mirror is not None
        return leftovers_named(setup.mirror, lambda name: name.startswith(SPLIT_PREFIX))


@pytest.fixture
def reflink_runner(splitmirror_mirror: MirrorSetup, splitmirror_session: SessionRunner) -> SessionRunner:
    splitmirror_session.mirror_options = dict(splitmirror_mirror.options)
    splitmirror_session.mirror_path = splitmirror_mirror.mirror
    return splitmirror_session


def _checked(runner: SessionRunner, primary: Path) -> tuple[int, str]:
    """``splitmirror check`` of a SQLite ledger in ``primary``, as a DBA runs it."""
    ledger = SqliteLedgerDatabase(primary)
    ledger.create_ledger()
    done = runner.command("check", runner.config_file(ledger.url, "freeze", primary=primary))
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_the_clones_share_the_primarys_extents_and_keep_its_metadata(
    splitmirror_mirror: MirrorSetup, reflink_runner: SessionRunner
) -> None:
    """The window costs metadata, not data: each archived file was a clone (FIEMAP: SHARED),
    and its member keeps the primary file's mode, owner and mtime, not the clone's."""
    from splitmirror import impl
    from splitmirror.catalog import SqliteCatalog
    from splitmirror.extents import ExtentFlag, map_file
    from splitmirror.phases import Phase

    ledger = SqliteLedgerDatabase(splitmirror_mirror.primary)
    ledger.create_ledger()
    os.chmod(ledger.path, 0o640)
    os.utime(ledger.path, (1_600_000_000, 1_600_000_000))
    shared: list[bool] = []

    class Look:
        @impl
        def splitmirror_phase_started(self, session: object, phase: Phase) -> None:
            if phase is Phase.BACKUP:
                [split] = leftovers_named(
                    reflink_runner.mirror_path or Path(), lambda n: n.startswith(SPLIT_PREFIX)
                )
                clone = (reflink_runner.mirror_path or Path()) / split / ledger.path.name
                extents = map_file(clone).extents
                shared.append(bool(extents) and all(e.flags & ExtentFlag.SHARED for e in extents))

    summary = reflink_runner.run(ledger, "freeze", Look())
    assert shared == [True], "the split copy is a clone"
    [member] = [
        f
        for f in SqliteCatalog(reflink_runner.workspace.catalog).files(summary.id)
        if f.path == str(ledger.path)
    ]
    restored = reflink_runner.workspace.root / "restored"
    reflink_runner.restore(summary, restored)
    info = os.stat(restored / member.member)
    assert (info.st_mode & 0o777, int(info.st_mtime)) == (0o640, 1_600_000_000)


def test_a_filesystem_that_cannot_clone_is_refused_naming_it(
    splitmirror_loop_filesystem: Path, splitmirror_session: SessionRunner
) -> None:
    primary = splitmirror_loop_filesystem / "primary"
    primary.mkdir()
    splitmirror_session.mirror_options = {"provider": "reflink"}
    splitmirror_session.mirror_path = splitmirror_loop_filesystem / "splits"
    code, said = _checked(splitmirror_session, primary)
    assert code != 0 and "the primary's filesystem (ext4, holding" in said and "cannot clone files" in said, (
        said
    )


def test_a_mirror_on_another_filesystem_is_refused_before_the_session(
    splitmirror_mirror: MirrorSetup, reflink_runner: SessionRunner
) -> None:
    reflink_runner.mirror_path = reflink_runner.workspace.root / "splits"
    code, said = _checked(reflink_runner, splitmirror_mirror.primary)
    assert code != 0 and "is on another filesystem than the primary" in said, said
    assert not reflink_runner.mirror_path.exists(), "nothing was created"


def test_a_mode_that_needs_a_freeze_on_the_primary_is_refused(splitmirror_mirror: MirrorSetup) -> None:
    """PostgreSQL FREEZE, MariaDB and MySQL ask SPLIT to freeze the data directory: clones cannot
    be taken on a frozen filesystem, and without it they are not one instant."""
    assert splitmirror_mirror.mirror is not None
    mirror = ReflinkMirror(splitmirror_mirror.primary, splitmirror_mirror.mirror)
    [problem] = mirror.freeze_problems([splitmirror_mirror.primary])
    said = problem.sentence()
    assert "splits by clones, one file at a time" in said and "the btrfs provider" in said, said
    assert mirror.freeze_problems([]) == []
