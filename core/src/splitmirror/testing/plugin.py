"""The pytest plugin (entry point ``pytest11``): fixtures for splitmirror's own tests and for
database plugins running the contract suite.

Fixtures: ``splitmirror_workspace`` (primary, mirror, archives, catalog folders),
``splitmirror_catalog`` (a private catalog, also set as ``$SPLITMIRROR_CATALOG``),
``splitmirror_loop_filesystem`` (a mounted loop-device ext4 when running as root; skips with the
reason otherwise; ``splitmirror_loop_size`` sets its size), ``splitmirror_btrfs_subvolume`` (a
subvolume on a loop-device btrfs, with a ``snapshots`` directory beside it),
``splitmirror_reflink_filesystem`` (a loop-device xfs that clones),
``splitmirror_primary_disk`` (that loop filesystem when it can be made, a plain directory
otherwise: where a containerized server's data directory is bind-mounted from), ``splitmirror_session`` (a
:class:`~splitmirror.testing.SessionRunner`),
``splitmirror_writers`` (how many ledger writers a drill starts; 4) and ``splitmirror_drill``
(runs a restore drill against the ``splitmirror_database`` your plugin provides).

Fixtures only: nothing here is autouse, and the session engine is imported by the fixtures that
use it, not when pytest loads this plugin in every project where splitmirror is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .database import LedgerDatabase
    from .drill import DrillReport, SessionRunner, Workspace


@pytest.fixture
def splitmirror_workspace(tmp_path: Path) -> Workspace:
    from .drill import Workspace

    return Workspace(tmp_path / "splitmirror").create()


@pytest.fixture
def splitmirror_catalog(splitmirror_workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPLITMIRROR_CATALOG", str(splitmirror_workspace.catalog))
    return splitmirror_workspace.catalog


@pytest.fixture
def splitmirror_session(splitmirror_workspace: Workspace, splitmirror_catalog: Path) -> SessionRunner:
    from .drill import SessionRunner

    return SessionRunner(splitmirror_workspace)


@pytest.fixture
def splitmirror_writers() -> int:
    """Concurrent ledger writers in a drill; override this fixture to change it."""
    return 4


@pytest.fixture
def splitmirror_drill(
    splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, splitmirror_writers: int
) -> Callable[[str], DrillReport]:
    from .drill import run_drill

    def drill(mode: str) -> DrillReport:
        return run_drill(splitmirror_database, splitmirror_session, mode, writers=splitmirror_writers)

    return drill


@pytest.fixture
def splitmirror_loop_size() -> int:
    """Bytes of the loop-device filesystem (a sparse image); override for bigger databases."""
    return 64 << 20


@pytest.fixture
def splitmirror_loop_filesystem(tmp_path: Path, splitmirror_loop_size: int) -> Iterator[Path]:
    """An ext4 on a loop device (``splitmirror_loop_size`` bytes), mounted; thawed, unmounted and
    detached afterwards, pass or fail."""
    from .loopfs import loop_filesystem, loop_filesystem_unavailable

    reason = loop_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path, splitmirror_loop_size) as mount:
        yield mount


@pytest.fixture
def splitmirror_btrfs_subvolume(tmp_path: Path, splitmirror_loop_size: int) -> Iterator[Path]:
    """A subvolume ``primary`` on a btrfs on a loop device (at least 256 MiB), beside an empty
    directory ``snapshots``; unmounted and detached afterwards, pass or fail."""
    from .. import btrfs
    from .loopfs import loop_filesystem, loop_filesystem_unavailable

    reason = loop_filesystem_unavailable("btrfs")
    if reason:
        pytest.skip(reason)
    with loop_filesystem(tmp_path, max(splitmirror_loop_size, 256 << 20), "btrfs") as mount:
        btrfs.create_subvolume(mount / "primary")
        (mount / "snapshots").mkdir()
        yield mount / "primary"


@pytest.fixture
def splitmirror_reflink_filesystem(tmp_path: Path, splitmirror_loop_size: int) -> Iterator[Path]:
    """A loop-device xfs made with reflink (at least 320 MiB: xfs's own minimum), mounted;
    thawed, unmounted and detached afterwards, pass or fail."""
    from .loopfs import loop_filesystem, loop_filesystem_unavailable

    reason = loop_filesystem_unavailable("xfs")
    if reason:
        pytest.skip(reason)
    size = max(splitmirror_loop_size, 320 << 20)
    with loop_filesystem(tmp_path, size, "xfs", ["-m", "reflink=1"]) as mount:
        yield mount


@pytest.fixture
def splitmirror_primary_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The host filesystem that plays the primary disk for a server in a container: a loop-device
    ext4 of its own when running as root (so FREEZE can freeze it and nothing of splitmirror's
    is on it), a plain directory otherwise."""
    from .loopfs import loop_filesystem_unavailable

    if loop_filesystem_unavailable() is None:
        return Path(request.getfixturevalue("splitmirror_loop_filesystem"))
    disk = tmp_path / "primary-disk"
    disk.mkdir()
    return disk
