"""The mirror-provider contract on the built-in block mirror (the btrfs mirror's is in
test_btrfs_mirror.py): the suite third parties run holds for ours too."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror.testing.mirror_contract import MirrorContract, MirrorSetup


class TestBlockMirrorContract(MirrorContract):
    @pytest.fixture
    def splitmirror_mirror(self, disk: Path) -> MirrorSetup:
        return MirrorSetup(primary=disk, options={"provider": "block"})
