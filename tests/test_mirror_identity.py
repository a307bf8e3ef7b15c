"""Which disk a mirror is: one spelling of a LUN's name whichever layer says it (a SCSI path's
sysfs, udev, a multipath map), so that a backup host finds the split's disk under its own name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.errors import PreflightError
from splitmirror.mirror import identity

WWN = "600a098038304331395d4a6f6c6f6e31"


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(identity, "SYS_BLOCK", tmp_path / "dev-block")
    monkeypatch.setattr(identity, "UDEV_DATA", tmp_path / "udev")
    (tmp_path / "udev").mkdir()
    return tmp_path


def _disk(sysfs: Path, number: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = sysfs / "dev-block" / number / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


@pytest.mark.parametrize(
    ("files", "udev"),
    [
        ({"device/wwid": f"naa.{WWN.upper()}"}, ""),  # a SCSI path: /dev/sdc
        ({"dm/uuid": f"mpath-3{WWN}"}, ""),  # its multipath map: /dev/mapper/mpathb
        ({}, f"E:ID_WWN_WITH_EXTENSION=0x{WWN}\nE:ID_SERIAL=3{WWN}"),  # what udev says of it
        ({}, f"E:ID_SERIAL=3{WWN}"),  # a SCSI serial as scsi_id writes it
    ],
    ids=["scsi-path", "multipath", "udev-wwn", "udev-serial"],
)
def test_every_name_of_one_lun_is_one_identity(sysfs: Path, files: dict[str, str], udev: str) -> None:
    _disk(sysfs, "8:32", files)
    if udev:
        (sysfs / "udev" / "b8:32").write_text(udev + "\n")
    assert identity._disk(8, 32) == f"wwn:{WWN}"


def test_an_eui_64_and_a_multipath_partition_are_named_as_on_a_scsi_path(sysfs: Path) -> None:
    eui = "0025385b71b07e2f"
    _disk(sysfs, "8:48", {"device/wwid": f"eui.{eui}"})
    _disk(sysfs, "253:4", {"dm/uuid": f"mpath-2{eui}"})
    assert identity._disk(8, 48) == identity._disk(253, 4) == f"wwn:{eui}"
    _disk(sysfs, "253:5", {"dm/uuid": f"part1-mpath-3{WWN}"})
    assert identity._disk(253, 5) == f"wwn:{WWN}:part1"


def test_what_is_not_a_wwn_keeps_its_kind(sysfs: Path) -> None:
    _disk(sysfs, "253:3", {"dm/uuid": "LVM-abcDEF"})
    _disk(sysfs, "7:1", {"loop/backing_file": "/images/mirror.img (deleted)"})
    _disk(sysfs, "252:0", {"serial": "BTWL12345"})
    _disk(sysfs, "252:1", {"serial": "30123456789abcdef"})  # a serial that looks designated stays a serial
    assert identity._disk(253, 3) == "dm:LVM-abcDEF"
    assert identity._disk(7, 1) == "loop:/images/mirror.img"
    assert identity._disk(252, 0) == "serial:BTWL12345"
    assert identity._disk(252, 1) == "serial:30123456789abcdef"
    assert identity._disk(9, 9) is None


def test_an_image_file_is_its_real_path_and_a_fifo_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "mirror.img"
    image.write_bytes(b"\0" * 4096)
    (tmp_path / "link").symlink_to(image)
    assert identity.identity(tmp_path / "link") == f"image:{image}"
    os.mkfifo(tmp_path / "fifo")
    fd = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(PreflightError, match="neither a block device nor an image file"):
            identity.identity_of(fd, "fifo")
    finally:
        os.close(fd)
    with pytest.raises(PreflightError, match=r"cannot open the mirror .*nothere"):
        identity.identity(tmp_path / "nothere")
