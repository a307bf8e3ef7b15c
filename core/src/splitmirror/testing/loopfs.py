"""A loop-device filesystem that plays a primary disk: for tests, benchmarks and drills.

It is what FREEZE needs (a filesystem of its own that SPLIT can freeze, with nothing of
splitmirror's on it) on a machine without spare disks.  Always thawed, unmounted and detached
on leaving, pass or fail.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..fsfreeze import FITHAW


def loop_filesystem_unavailable(fstype: str = "ext4") -> str | None:
    """Why a loop-device filesystem of ``fstype`` cannot be made here, or None."""
    if os.geteuid() != 0:
        return "loop-device filesystems need root"
    for tool in ("losetup", f"mkfs.{fstype}", "mount", "umount"):
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


def device_of(mount: Path) -> Path:
    """The block device mounted at ``mount`` (``findmnt``)."""
    found = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", "--target", str(mount)], capture_output=True, text=True, check=True
    )
    return Path(found.stdout.strip())


@contextlib.contextmanager
def loop_filesystem(
    directory: Path, size: int, fstype: str = "ext4", mkfs_options: Sequence[str] = ()
) -> Iterator[Path]:
    """``directory/primary.img`` (``size`` bytes, sparse) as an ``fstype`` (ext4, xfs or btrfs,
    made with ``mkfs_options``) mounted at ``directory/primary-fs``.  xfs needs 300 MiB at the
    least, btrfs about 110 MiB."""
    image, mount = directory / "primary.img", directory / "primary-fs"
    with open(image, "wb") as f:
        f.truncate(size)
    force = "-F" if fstype.startswith("ext") else "-f"
    subprocess.run([f"mkfs.{fstype}", "-q", force, *mkfs_options, str(image)], check=True)
    with loop_device(image) as device:
        mount.mkdir()
        subprocess.run(["mount", str(device), str(mount)], check=True)
        try:
            yield mount
        finally:
            _thaw(mount)
            subprocess.run(["umount", str(mount)], check=True)


@contextlib.contextmanager
def loop_device(image: Path, *options: str) -> Iterator[Path]:
    """``image`` attached to a free loop device (``losetup`` ``options``), detached on leaving."""
    device = subprocess.run(
        ["losetup", "-f", "--show", *options, str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield Path(device)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


def device_digest(path: Path, size: int) -> str:
    """SHA-256 of the first ``size`` bytes of a device or image, read with ``O_DIRECT`` where
    possible: a cached read of a device under a mounted filesystem could be stale."""
    from ..mirror.blocksync import DirectReader

    reader, sha = DirectReader(path, 1 << 20), hashlib.sha256()
    try:
        for offset in range(0, size, 1 << 20):
            sha.update(reader.read(offset, min(1 << 20, size - offset)))
    finally:
        reader.close()
    return sha.hexdigest()
