"""The pytest plugin (entry point ``pytest11``): fixtures for splitmirror's own tests and for
database plugins running the contract suite.

Fixtures: ``splitmirror_workspace`` (primary, mirror, archives, catalog folders),
``splitmirror_catalog`` (a private catalog, also set as ``$SPLITMIRROR_CATALOG``),
``splitmirror_loop_filesystem`` (a mounted loop-device ext4 when running as root; skips with the
reason otherwise; ``splitmirror_loop_size`` sets its size), ``splitmirror_primary_disk`` (that
loop filesystem when it can be made, a plain directory otherwise: where a containerized server's
data directory is bind-mounted from), ``splitmirror_session`` (a
:class:`~splitmirror.testing.SessionRunner`),
``splitmirror_writers`` (how many ledger writers a drill starts; 4) and ``splitmirror_drill``
(runs a restore drill against the ``splitmirror_database`` your plugin provides).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..fsfreeze import FITHAW
from .database import LedgerDatabase
from .drill import DrillReport, SessionRunner, Workspace, run_drill


@pytest.fixture
def splitmirror_workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "splitmirror").create()


@pytest.fixture
def splitmirror_catalog(splitmirror_workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPLITMIRROR_CATALOG", str(splitmirror_workspace.catalog))
    return splitmirror_workspace.catalog


@pytest.fixture
def splitmirror_session(splitmirror_workspace: Workspace, splitmirror_catalog: Path) -> SessionRunner:
    return SessionRunner(splitmirror_workspace)


@pytest.fixture
def splitmirror_writers() -> int:
    """Concurrent ledger writers in a drill; override this fixture to change it."""
    return 4


@pytest.fixture
def splitmirror_drill(
    splitmirror_database: LedgerDatabase, splitmirror_session: SessionRunner, splitmirror_writers: int
) -> Callable[[str], DrillReport]:
    def drill(mode: str) -> DrillReport:
        return run_drill(splitmirror_database, splitmirror_session, mode, writers=splitmirror_writers)

    return drill


def loop_filesystem_unavailable() -> str | None:
    """Why a loop-device filesystem cannot be made here, or None."""
    if os.geteuid() != 0:
        return "loop-device filesystems need root"
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _thaw(mount: Path) -> None:
    fd = os.open(mount, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: it was not frozen
            raise
    finally:
        os.close(fd)


@pytest.fixture
def splitmirror_loop_size() -> int:
    """Bytes of the loop-device filesystem (a sparse image); override for bigger databases."""
    return 64 << 20


@pytest.fixture
def splitmirror_loop_filesystem(tmp_path: Path, splitmirror_loop_size: int) -> Iterator[Path]:
    """An ext4 on a loop device (``splitmirror_loop_size`` bytes), mounted; thawed, unmounted and
    detached afterwards, pass or fail."""
    reason = loop_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    image, mount = tmp_path / "primary.img", tmp_path / "primary-fs"
    with open(image, "wb") as f:
        f.truncate(splitmirror_loop_size)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = subprocess.run(
        ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    mount.mkdir()
    try:
        subprocess.run(["mount", device, str(mount)], check=True)
        try:
            yield mount
        finally:
            _thaw(mount)
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


@pytest.fixture
def splitmirror_primary_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The host filesystem that plays the primary disk for a server in a container: a loop-device
    ext4 of its own when running as root (so FREEZE can freeze it and nothing of splitmirror's
    is on it), a plain directory otherwise."""
    if loop_filesystem_unavailable() is None:
        return Path(request.getfixturevalue("splitmirror_loop_filesystem"))
    disk = tmp_path / "primary-disk"
    disk.mkdir()
    return disk
