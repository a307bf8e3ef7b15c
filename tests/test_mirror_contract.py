"""The mirror-provider contract on the built-in block and directory mirrors (the btrfs mirror's
is in test_btrfs_mirror.py): the suite third parties run holds for ours too.

The directory mirror's final pass opens and closes every file of the primary inside the window,
in the session's process: with the SQLite engine's lock held in that process (POSIX locks go
with any close of the inode), the writers got in and its split was not the primary as quiesced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror.testing.mirror_contract import MirrorContract, MirrorSetup


class TestBlockMirrorContract(MirrorContract):
    split_leaves_behind = False  # the mirror is simply not synced until the next session

    @pytest.fixture
    def splitmirror_mirror(self, disk: Path) -> MirrorSetup:
        return MirrorSetup(primary=disk, options={"provider": "block"})


class TestDirectoryMirrorContract(MirrorContract):
    split_leaves_behind = False

    @pytest.fixture
    def splitmirror_mirror(self, disk: Path) -> MirrorSetup:
        """On a filesystem of its own: a mode may freeze it (never the machine's root)."""
        return MirrorSetup(primary=disk, options={"provider": "directory"})
