"""The mirror as a backup host reads a split handed over to it: the block mirror's reads by
extent from the disk, with the maps, names and attributes the database host recorded
(:mod:`splitmirror.handover`), and the parcels it sent as the files it could not map.

Nothing here resolves a path: the paths are the database host's, which need not exist here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from ..handover import SplitToArchive
from .block import BlockMirror


class OffHostMirror(BlockMirror):
    """Never synchronised, split or re-established here: the database host does that."""

    name = "off-host"

    def __init__(
        self, split: SplitToArchive, device: Path, parcel: Callable[[int], bytes], spool: Path
    ) -> None:
        super().__init__(Path(split.record["primary"]), device)
        self.maps, self.fingerprints = split.maps(), split.fingerprints()
        self._names = split.names()
        self._spool = Path(tempfile.mkdtemp(prefix=".splitmirror-parcels-", dir=spool))
        for path, seq in split.parcels_of_files().items():
            copy = self._spool / str(seq)
            copy.write_bytes(parcel(seq))
            self.spooled[path] = copy

    def _key(self, primary_path: Path) -> Path:
        return Path(primary_path)

    def relative(self, primary_path: Path) -> Path:
        return Path(self._names[Path(primary_path)])

    def exists_in_split(self, primary_path: Path) -> bool:
        return Path(primary_path) in self.fingerprints
