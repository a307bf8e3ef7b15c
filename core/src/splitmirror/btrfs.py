"""btrfs subvolumes and snapshots through the kernel's ioctls (no ``btrfs`` program needed).

A read-only snapshot is the btrfs mirror's split: one atomic image of a subvolume, taken in the
time it takes to commit a transaction, whatever the subvolume's size.  Never take one on a
frozen filesystem: the ioctl waits, unkillably, for the thaw.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

#: statfs(2) f_type of btrfs (linux/magic.h).
BTRFS_SUPER_MAGIC = 0x9123683E
#: The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
SUBVOLUME_ROOT_INODE = 256
#: _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2): create a snapshot (4096-byte argument).
SNAP_CREATE_V2 = 0x50009417
#: _IOW(0x94, 15, struct btrfs_ioctl_vol_args): delete a subvolume or snapshot.
SNAP_DESTROY = 0x5000940F
#: _IOW(0x94, 14, struct btrfs_ioctl_vol_args): create an empty subvolume.
SUBVOL_CREATE = 0x5000940E
#: btrfs_ioctl_vol_args_v2.flags: a read-only snapshot.
SUBVOL_RDONLY = 1 << 1
NAME_MAX = 4039  # BTRFS_SUBVOL_NAME_MAX: the name fields hold 4040 bytes with their NUL
VOL_ARGS_NAME = 4088  # BTRFS_PATH_NAME_MAX + 1 in struct btrfs_ioctl_vol_args


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


_libc = ctypes.CDLL(None, use_errno=True)


def filesystem_type(path: Path) -> int:
    """statfs(2)'s ``f_type`` for ``path`` (Python's ``os.statvfs`` does not give it)."""
    buffer = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buffer)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
    return int(buffer.f_type) & 0xFFFFFFFF


def is_btrfs(path: Path) -> bool:
    return filesystem_type(path) == BTRFS_SUPER_MAGIC


def is_subvolume(path: Path) -> bool:
    """Whether ``path`` is the root directory of a btrfs subvolume (or snapshot)."""
    info = os.lstat(path)
    return stat.S_ISDIR(info.st_mode) and info.st_ino == SUBVOLUME_ROOT_INODE and is_btrfs(path)


def containing_subvolume(path: Path) -> Path:
    """The root of the subvolume holding ``path``: up while the device number stays the same
    (each subvolume has one of its own)."""
    path = path.resolve()
    device = os.stat(path).st_dev
    while path != path.parent and os.stat(path.parent).st_dev == device:
        path = path.parent
    return path


def nested(root: Path) -> Iterator[Path]:
    """Directories under ``root`` that belong to another subvolume or filesystem: a snapshot
    of ``root`` would hold them as empty directories."""
    device = os.stat(root).st_dev
    for directory, subdirectories, _files in os.walk(root):
        keep = []
        for name in subdirectories:
            path = Path(directory, name)
            try:
                if os.lstat(path).st_dev != device:
                    yield path
                    continue
            except FileNotFoundError:
                continue
            keep.append(name)
        subdirectories[:] = keep


def snapshot(source: Path, destination: Path, *, readonly: bool = True) -> None:
    """Snapshot the subvolume ``source`` as ``destination`` (a new name in an existing
    directory of the same btrfs)."""
    name = os.fsencode(destination.name)
    if len(name) > NAME_MAX:
        raise OSError(36, "snapshot name too long", str(destination))
    arguments = bytearray(4096)
    source_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        arguments[0:8] = source_fd.to_bytes(8, "little", signed=True)
        arguments[16:24] = (SUBVOL_RDONLY if readonly else 0).to_bytes(8, "little")
        arguments[56 : 56 + len(name)] = name
        _directory_ioctl(destination.parent, SNAP_CREATE_V2, arguments)
    finally:
        os.close(source_fd)


def create_subvolume(path: Path) -> None:
    """An empty subvolume at ``path`` (``btrfs subvolume create``)."""
    _directory_ioctl(path.parent, SUBVOL_CREATE, _vol_args(path.name))


def delete_subvolume(path: Path) -> None:
    """Delete the subvolume or snapshot at ``path``, read-only or not (CAP_SYS_ADMIN: the
    btrfs mirror runs as root)."""
    _directory_ioctl(path.parent, SNAP_DESTROY, _vol_args(path.name))


def _vol_args(name: str) -> bytearray:
    encoded = os.fsencode(name)
    if len(encoded) >= VOL_ARGS_NAME:
        raise OSError(36, "subvolume name too long", name)
    arguments = bytearray(4096)
    arguments[8 : 8 + len(encoded)] = encoded
    return arguments


def _directory_ioctl(directory: Path, request: int, arguments: bytearray) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, arguments)
    finally:
        os.close(fd)
