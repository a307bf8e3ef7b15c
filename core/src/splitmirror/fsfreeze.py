"""FIFREEZE/FITHAW on the filesystems SPLIT must hold still, with thaw guaranteed.

A freeze outlives the process that set it, and a frozen filesystem blocks every writer on it,
so :class:`Freezer` remembers what it froze and :meth:`Freezer.thaw_all` thaws all of it, in
reverse order, even when one thaw fails.  It also keeps when each freeze held the filesystem
(:attr:`Freezer.spans`): in HOT_BACKUP that is the only time the database's writers wait for
the session (:mod:`.blocked`).  Never freeze the filesystem holding the catalog, the
target or our own temporary files: the session would block on itself (:func:`same_filesystem`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from .blocked import Span

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding ``path``.

    Found in the mount table, not by ``st_dev`` (``os.path.ismount``): every btrfs subvolume
    has a device number of its own, so a subvolume's directory looks like a mount point though
    FIFREEZE on it freezes the whole btrfs."""
    path = path.resolve()
    mounts = {mount for mount, _source, _kind in _mounts()}
    while path not in mounts and path != path.parent:
        path = path.parent
    return path


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are on one filesystem: freezing one freezes the other.  Two
    subvolumes of a btrfs differ in ``st_dev`` but share the device it is mounted from."""
    if os.stat(a).st_dev == os.stat(b).st_dev:
        return True
    sources = {mount: source for mount, source, _kind in _mounts()}
    source_a, source_b = sources.get(mount_point(a)), sources.get(mount_point(b))
    return source_a is not None and source_a.startswith("/dev/") and source_a == source_b


def filesystem_type_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (``ext4``, ``xfs``, ...), as mounted."""
    mount = mount_point(path)
    kinds = [kind for where, _source, kind in _mounts() if where == mount]
    return kinds[-1] if kinds else "unknown"


def mounted_from(path: Path) -> Path | None:
    """The block device the filesystem holding ``path`` is mounted from (the mount table's
    source, which a bind mount shares), or None when it is not a device."""
    sources = {mount: source for mount, source, _kind in _mounts()}
    source = sources.get(mount_point(path), "")
    return Path(source) if source.startswith("/dev/") else None


def path_in_filesystem(path: Path) -> str:
    """Where ``path`` is from its filesystem's own root, which is not its mount point's when a
    subdirectory is mounted (a bind mount, a btrfs ``subvol=``): mountinfo's fourth field."""
    resolved, mount = path.resolve(), mount_point(path)
    root = "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if Path(_unescape(fields[4])) == mount:
            root = _unescape(fields[3])  # the last one listed is the one visible
    return os.path.normpath(os.path.join(root, os.path.relpath(resolved, mount))).lstrip("/")


def _mounts() -> list[tuple[Path, str, str]]:
    """(mount point, source, type) of each mount, from ``/proc/self/mountinfo`` (octal
    escapes undone), in mount order: the last of a stacked mount point is the visible one."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, after = line.partition(" - ")
        mount = fields.split(" ")[4]
        kind, source = ([*after.split(" "), "", ""])[:2]
        found.append((Path(_unescape(mount)), _unescape(source), kind))
    return found


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal.group(1), 8)), field)


class Freezer:
    def __init__(self) -> None:
        self.frozen: list[Path] = []
        #: Told ("freezing", mount) before each FIFREEZE and ("thawed", mount) once a mount is
        #: no longer frozen by us: the watchdog keeps its own list from these.
        self.listener: Callable[[str, Path], None] | None = None
        #: From just before each successful FIFREEZE to just after its FITHAW (open while frozen).
        self.spans: list[Span] = []
        self._holding: dict[Path, Span] = {}

    def _tell(self, event: str, mount: Path) -> None:
        if self.listener is not None:
            self.listener(event, mount)

    def freeze(self, path: Path) -> None:
        """Freeze the filesystem holding ``path``.

        The mount is recorded *before* the ioctl: FIFREEZE first writes back every dirty page,
        which can take seconds, and a signal raised as it returns must still find the mount to
        thaw.  If the ioctl itself fails (EBUSY: someone else froze it), the record is dropped,
        so we never thaw a freeze that is not ours.  SPLIT writes each filesystem back
        (:meth:`write_back`) before it freezes any, so that the freeze holds the writers only
        while it writes what was dirtied since, not the page cache a write load leaves.
        """
        mount = mount_point(path)
        if mount in self.frozen:
            return
        if mount == Path("/"):
            raise OSError(errno.EPERM, "refusing to freeze the root filesystem")
        self.frozen.append(mount)
        self._tell("freezing", mount)
        # Writers wait from the ioctl's start (it blocks them before writing back), and the
        # span is kept, like the mount, before the ioctl: a signal as it returns must not lose it.
        self._holding[mount] = span = Span(time.monotonic())
        self.spans.append(span)
        try:
            _ioctl(mount, FIFREEZE)
        except OSError:
            self.frozen.remove(mount)
            self.spans.remove(self._holding.pop(mount))  # not ours: nothing was held by us
            self._tell("thawed", mount)
            raise

    def write_back(self, path: Path) -> None:
        """Write back every dirty page of the filesystem holding ``path`` and wait for it
        (syncfs(2)), holding no writer (FIFREEZE blocks the writers first, then writes back).
        Unlike a freeze, it leaves ext4's journaled data in the journal until a checkpoint: a
        caller that reads files' own sectors must not count on those (:mod:`.mirror.filetrack`
        compares such files whole).  Nothing to do on a filesystem this freezer froze: the
        freeze wrote it back."""
        if mount_point(path) not in self.frozen:
            syncfs(path)

    def thaw_all(self) -> list[BaseException]:
        """Thaw everything frozen, last first; return the errors instead of stopping at one.

        A mount leaves the list only once FITHAW succeeded (or said it was not frozen), so an
        interrupted thaw is retried by whoever calls this next.
        """
        errors: list[BaseException] = []
        for mount in reversed(list(self.frozen)):
            try:
                _ioctl(mount, FITHAW)
            except OSError as error:
                if error.errno != errno.EINVAL:  # EINVAL: already thawed
                    errors.append(error)
                    continue
            self.frozen.remove(mount)
            if mount in self._holding:
                self._holding.pop(mount).end = time.monotonic()
            self._tell("thawed", mount)
        return errors


def syncfs(path: Path) -> None:
    """syncfs(2) on the filesystem holding ``path`` (Python's ``os`` has no wrapper; sync(2)
    would write back every filesystem on the machine, the archives' among them)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)


def _ioctl(mount: Path, request: int) -> None:
    fd = os.open(mount, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, 0)
    finally:
        os.close(fd)
