"""The restore side: verify an archive, restore it safely, hand it to the database engine.

* :mod:`.verify`: ``splitmirror verify``, every member against its checksum record, the manifest
  and the catalog;
* :mod:`.plan`: the safety scan that judges every member before anything is written;
* :mod:`.tree`: writing inside DIR without following symlinks, sparse, checked, then renamed;
* :mod:`.run`: ``splitmirror restore``, and the engine's restore preparation.

Reading the archive itself is :mod:`splitmirror.archive.reader`.
"""

from __future__ import annotations

from .plan import RestoreRefused, UnsafeMember
from .run import RestoreFailed, RestoreResult, locate_archive, restore_archive
from .verify import Expectation, Problem, VerifyReport, from_catalog, verify_archive

__all__ = [
    "Expectation",
    "Problem",
    "RestoreFailed",
    "RestoreRefused",
    "RestoreResult",
    "UnsafeMember",
    "VerifyReport",
    "from_catalog",
    "locate_archive",
    "restore_archive",
    "verify_archive",
]
