"""Which disk a mirror is, in words every host that sees it agrees on.

A database host hands its split over to a backup host that reaches the same disk under another
name (``/dev/sdc`` here, ``/dev/mapper/mpathb`` there, a LUN zoned to both).  The kernel's name
says nothing across hosts; what the disk says of itself does: its WWN or serial (SCSI, NVMe,
virtio), spelt one way (:func:`canonical`: the WWN a SCSI path, a multipath map and udev each
write differently), a device-mapper UUID (LVM), and for a loop device its backing file.  An
image file used directly is named by its real path; a loop device or an image is the same disk
on two hosts only when both see the same file at the same path (shared storage, or one
machine, as the tests run it).  The identity is taken from the open device (``fstat``).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import PreflightError

SYS_BLOCK = Path("/sys/dev/block")
UDEV_DATA = Path("/run/udev/data")

#: What sysfs files name a disk, most specific first, with the prefix its identity gets.
_SYSFS = (("wwid", "wwn"), ("device/wwid", "wwn"), ("serial", "serial"), ("device/serial", "serial"))
_UDEV = (("ID_WWN_WITH_EXTENSION", "wwn"), ("ID_WWN", "wwn"), ("ID_SERIAL", "scsi"))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _udev(major: int, minor: int) -> dict[str, str]:
    found = {}
    for line in _read(UDEV_DATA / f"b{major}:{minor}").splitlines():
        if line.startswith("E:") and "=" in line:
            key, _, value = line[2:].partition("=")
            found[key] = value
    return found


#: A SCSI name as scsi_id (udev's ID_SERIAL) and multipath write it: the designator type, 2
#: (EUI-64) or 3 (NAA), then the world-wide name.
_DESIGNATED = re.compile(r"^[23]([0-9a-f]{16}|[0-9a-f]{32})$")


def canonical(kind: str, value: str) -> str:
    """One spelling of a disk's world-wide name, whichever layer said it: sysfs ``naa.600a...``
    (or ``eui.``), udev's ``0x600a...`` (``kind`` ``"wwn"``), and scsi_id's and multipath's
    ``3600a...`` (``kind`` ``"scsi"``) all become ``wwn:600a...``, so ``/dev/sdc`` on one host
    and ``/dev/mapper/mpathb`` on another are one disk.  A serial stays as it is."""
    text = value.strip()
    low = text.lower()
    if kind == "wwn":
        for scheme in ("naa.", "eui.", "0x"):
            if low.startswith(scheme):
                return "wwn:" + low.removeprefix(scheme)
        return f"wwn:{low}"
    if kind == "scsi":
        designated = _DESIGNATED.match(low)
        return f"wwn:{designated.group(1)}" if designated else f"serial:{text}"
    return f"{kind}:{text}"


def _disk(major: int, minor: int) -> str | None:
    """What the whole disk (not a partition) ``major:minor`` says it is."""
    sys = SYS_BLOCK / f"{major}:{minor}"
    for name, prefix in _SYSFS:
        value = _read(sys / name)
        if value:
            return canonical(prefix, value)
    udev = _udev(major, minor)
    for key, prefix in _UDEV:
        if udev.get(key):
            return canonical(prefix, udev[key])
    uuid = _read(sys / "dm" / "uuid")
    partition = re.match(r"^part(\d+)-mpath-(.*)$", uuid)  # kpartx's partition of a multipath map
    if partition:
        return canonical("scsi", partition.group(2)) + f":part{partition.group(1)}"
    if uuid.startswith("mpath-"):  # a multipath map: the LUN's own name
        return canonical("scsi", uuid.removeprefix("mpath-"))
    if uuid:
        return f"dm:{uuid}"
    backing = _read(sys / "loop" / "backing_file").removesuffix(" (deleted)")
    if backing:
        return f"loop:{backing}"
    return None


def identity_of(fd: int, shown: str) -> str:
    """The identity of the open device or image ``fd`` (``shown`` names it in the sentence)."""
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode):
        return f"image:{os.path.realpath(f'/proc/self/fd/{fd}')}"
    if not stat.S_ISBLK(info.st_mode):
        raise PreflightError(
            f"{shown} is neither a block device nor an image file; an off-host backup reads the mirror's disk"
        )
    major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
    sys = SYS_BLOCK / f"{major}:{minor}"
    partition = _read(sys / "partition")
    if partition:  # the disk's identity, and which of its partitions
        parent = sys.resolve().parent
        whole = _read(parent / "dev")
        if ":" in whole:
            disk_major, disk_minor = (int(n) for n in whole.split(":"))
            named = _disk(disk_major, disk_minor)
            if named:
                return f"{named}:part{partition}"
    named = _disk(major, minor)
    if named is None:
        raise PreflightError(
            f"cannot tell which disk {shown} is: it has no WWN or serial, no device-mapper UUID and is no "
            "loop device; give the mirror a disk that names itself (a LUN, an LVM volume, a loop device)"
        )
    return named


def identity(path: Path) -> str:
    """The identity of the device or image at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise PreflightError(f"cannot open the mirror {path} ({error.strerror})") from None
    try:
        return identity_of(fd, str(path))
    finally:
        os.close(fd)
