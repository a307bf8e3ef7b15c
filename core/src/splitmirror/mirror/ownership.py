"""A mirror holds one primary's copy, and serves one session at a time.

**Ownership.**  The session that first fills a mirror records whose copy it holds: the primary
(its resolved path, and its filesystem's UUID, which tells a rebuilt or unmounted filesystem from
the one that was mirrored) and, to name the owner, the configuration file and session name.  A
session whose primary is another one is refused in preflight, before anything is touched: its
sync would turn the other's mirror into a copy of its own primary.  Configurations of one primary
may share its mirror (a nightly FREEZE and an hourly HOT_BACKUP of one database).  Handing a
mirror to another primary is one explicit command, ``splitmirror backup CONFIG
--take-over-mirror``, which records the new owner before the first byte is written.  Every claim
carries a new random token that the synchronizers keep in the state that vouches for the
mirror's content (the block mirror's checksum map, the directory mirror's fingerprints), so a
mirror handed over and back is compared in full, never trusted.

**The mirror lock.**  An ``flock`` held from INIT until the session has ended, whatever the
configuration: two sessions never sync, split or read one mirror at once.  Like the session
lock, the kernel drops it when its holder dies.

**Where.**  Beside a mirror directory or image file (``.NAME.splitmirror-lock`` and
``.NAME.splitmirror-owner.json``), never inside it: the sync would delete them.  For a block
device, the lock lives under :data:`DEVICE_LOCK_DIR` and the record under
:data:`DEVICE_OWNER_DIR`, both named after the device's resolved path, so every name of one
device (``/dev/disk/by-id/...``, a symlink) finds them; the record also keeps the names that stay
with the device across reboots, so a record of a device that now has another name is ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import secrets
import socket
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import PreflightProblem
from ..errors import PreflightError, SessionBusyError, UserError
from ..lock import HolderLock
from ..paths import ensure_private_dir, replace_durably

if TYPE_CHECKING:
    from ..config import Config

#: Block-device mirrors' locks: a tmpfs, emptied at boot, when no lock can be held anyway.
DEVICE_LOCK_DIR = Path("/run/lock/splitmirror")
#: Block-device mirrors' ownership records.
DEVICE_OWNER_DIR = Path("/var/lib/splitmirror/mirrors")
RECORD_VERSION = 1


def _is_device(real: Path) -> bool:
    """A block device, or a name in /dev that is not there yet (a device to be attached); a
    directory mirror in /dev/shm is not one."""
    try:
        return stat.S_ISBLK(os.stat(real).st_mode)
    except OSError:
        return real.parent == Path("/dev")


def state_files(mirror: Path) -> tuple[Path, Path]:
    """The mirror's lock file and ownership record."""
    real = Path(os.path.realpath(mirror))
    if _is_device(real):
        name = "_".join(real.parts[1:])
        return DEVICE_LOCK_DIR / f"{name}.lock", DEVICE_OWNER_DIR / f"{name}.owner.json"
    return (
        real.parent / f".{real.name}.splitmirror-lock",
        real.parent / f".{real.name}.splitmirror-owner.json",
    )


def _lasting_names(mirror: Path) -> list[str]:
    """Names that stay with a device across reboots: its ``/dev/disk/by-id`` links, or a loop
    device's backing file; empty for an image file or a device without any."""
    real = Path(os.path.realpath(mirror))
    if not _is_device(real):
        return []
    by_id = Path("/dev/disk/by-id")
    links = by_id.iterdir() if by_id.is_dir() else iter(())
    names = sorted(str(link) for link in links if os.path.realpath(link) == str(real))
    with contextlib.suppress(OSError):
        backing = Path("/sys/class/block") / real.name / "loop" / "backing_file"
        names.append(f"loop:{backing.read_text().strip()}")
    return names


def _filesystem_uuid(path: Path) -> str | None:
    """The UUID of the filesystem holding ``path``; None where it has none (tmpfs, overlay)."""
    try:
        argv = ["findmnt", "-n", "-o", "UUID", "--target", str(path)]
        found = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:  # no findmnt: every record of this host says None alike
        return None
    return found.stdout.strip() or None


@dataclasses.dataclass(frozen=True)
class Owner:
    """Whose copy a mirror holds (one ownership record)."""

    primary: str
    filesystem: str | None
    config: str
    session: str
    #: The host that recorded it: one path on two hosts (a mirror image on shared storage, a
    #: filesystem without a UUID) is two primaries.
    host: str = ""
    #: New at every claim; what the synchronizers' saved state must name to be trusted.
    claim: str = ""
    claimed_at: str = ""
    #: For a device mirror: its lasting names when claimed (see :func:`_lasting_names`).
    device: list[str] = dataclasses.field(default_factory=list)

    def same_primary(self, other: Owner) -> bool:
        """One primary: the same resolved path on the same filesystem.  A filesystem that has a
        UUID no more (or had none) is another one: the primary's own, unmounted, leaves its
        mount point on the filesystem below, and a sync from there would empty the mirror."""
        return (self.primary, self.filesystem, self.host) == (other.primary, other.filesystem, other.host)

    def describe(self, other: Owner) -> str:
        """The primary, with its host or filesystem when that is all that tells it from ``other``'s."""
        if self.primary != other.primary:
            return self.primary
        if self.host != other.host:
            return f"{self.primary} on host {self.host or 'unknown'}"
        return f"{self.primary} (filesystem {self.filesystem or 'without a UUID'})"


class UnreadableRecord(Exception):
    """The ownership record exists but cannot be read or makes no sense: whose the mirror is
    is unknown, which is not the same as nobody's."""


def read_owner(mirror: Path) -> Owner | None:
    """The mirror's ownership record, or None: none yet, or left by a device that used to have
    this device's name.  :class:`UnreadableRecord` when it exists and cannot be read."""
    record = state_files(mirror)[1]
    try:
        data: Any = json.loads(record.read_text())
        owner = Owner(**{f.name: data[f.name] for f in dataclasses.fields(Owner) if f.name in data})
        if not isinstance(owner.primary, str) or not isinstance(owner.config, str):
            raise TypeError("no primary")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise UnreadableRecord(
            f"{error.strerror}" if isinstance(error, OSError) else "not a record"
        ) from None
    now = _lasting_names(mirror)
    if owner.device and now and not set(owner.device) & set(now):
        return None
    return owner


def claim_of(mirror: Path) -> str | None:
    """The token of the mirror's current claim, for the state that vouches for its content (an
    unreadable record vouches for nothing)."""
    try:
        owner = read_owner(mirror)
    except UnreadableRecord:
        return None
    return owner.claim if owner is not None else None


class MirrorLock(HolderLock):
    """The flock that keeps two sessions of any configurations off one mirror."""

    def __init__(self, mirror: Path, config: str) -> None:
        super().__init__(state_files(mirror)[0], config)
        self.mirror = mirror

    def _prepare(self) -> None:
        if self.path.parent == DEVICE_LOCK_DIR:
            ensure_private_dir(DEVICE_LOCK_DIR)

    def _cannot_create(self, error: OSError) -> UserError:
        return PreflightError(
            f"cannot create the mirror's lock {self.path} ({error.strerror}); make {self.path.parent} "
            "writable for this user, or run as the mirror's owner"
        )

    def _busy(self, holder: dict[str, Any]) -> UserError:
        config = holder.get("config", "another configuration")
        return SessionBusyError(
            f"another session ({config}, {self.describe(holder)}) is using the mirror {self.mirror}; "
            "wait for it to finish, or stop it if it hangs"
        )


class MirrorClaim:
    """What a session does about its mirror's ownership and lock (see the module's docstring)."""

    def __init__(self, config: Config, *, take_over: bool = False) -> None:
        self.mirror = Path(config.mirror.mirror)
        self.primary = Path(config.mirror.primary)
        self.config = str(config.source)
        self.name = config.session.name
        self.take_over = take_over
        self.record = state_files(self.mirror)[1]
        self._lock = MirrorLock(self.mirror, self.config)

    @functools.cached_property
    def _mine(self) -> Owner:
        primary = Path(os.path.realpath(self.primary))
        uuid = _filesystem_uuid(primary) if primary.exists() else None
        mine = Owner(str(primary), uuid, self.config, self.name, socket.gethostname())
        return dataclasses.replace(mine, device=_lasting_names(self.mirror))

    def lock(self) -> None:
        """INIT, before preflight: another session on this mirror is refused (exit 4).  Where
        the lock's directory or device does not exist there is nothing to lock: preflight
        refuses such a mirror, and :meth:`claim` takes the lock before the first write anyway."""
        directory = self._lock.path.parent
        if self.mirror.exists() if directory == DEVICE_LOCK_DIR else directory.is_dir():
            self._lock.acquire()

    def problems(self) -> list[PreflightProblem]:
        """Preflight: the mirror holds another primary's copy, or nobody can tell whose (unless
        taking it over)."""
        if self.take_over:
            return []
        try:
            owner = read_owner(self.mirror)
        except UnreadableRecord as why:
            return [
                PreflightProblem(
                    f"the mirror {self.mirror}'s ownership record {self.record} cannot be read ({why}), so "
                    "whose copy the mirror holds is unknown",
                    f"if it is this configuration's primary's, take it over with `splitmirror backup "
                    f"{self.config} --take-over-mirror`; otherwise give this primary a mirror of its own",
                )
            ]
        if owner is None or owner.same_primary(self._mine):
            return []
        mine = self._mine
        return [
            PreflightProblem(
                f"the mirror {self.mirror} holds the primary {owner.describe(mine)} of configuration "
                f"{owner.config} (session name {owner.session!r}), not this configuration's primary "
                f"{mine.describe(owner)}",
                f"give each primary a mirror of its own, or hand this one over with `splitmirror backup "
                f"{self.config} --take-over-mirror` (its record is {self.record})",
            )
        ]

    def claim(self) -> None:
        """SYNC, before the first byte is written: hold the lock, and record this primary as the
        owner of a mirror that has none (or that is being taken over)."""
        self._lock.acquire()
        refused = self.problems()
        if refused:  # only if INIT had nothing to lock and another session claimed it since
            raise PreflightError(refused[0].sentence())
        owner = None if self.take_over else read_owner(self.mirror)
        if owner is not None and owner.same_primary(self._mine):
            return
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        record = dataclasses.replace(self._mine, claim=secrets.token_hex(16), claimed_at=stamp)
        if self.record.parent == DEVICE_OWNER_DIR:
            ensure_private_dir(DEVICE_OWNER_DIR)
        replace_durably(self.record, json.dumps({"version": RECORD_VERSION, **dataclasses.asdict(record)}))

    def release(self) -> None:
        self._lock.release()
