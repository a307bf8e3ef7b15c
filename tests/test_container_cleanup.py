"""A failing container test leaves nothing behind: no container, no mount, no loop device.

The inner test runs in a real pytest subprocess: a container on a loop-disk bind mount, then a
failed assertion.  Afterwards this process looks for what it might have left."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from splitmirror.testing import containers, images
from splitmirror.testing.loopfs import loop_filesystem_unavailable

pytest_plugins = ["pytester"]

BASE = "splitmirror-offline/debian:bookworm"

INNER = f'''
from pathlib import Path

from splitmirror.testing.containers import ServerContainer


def test_fails_with_a_container_on_a_loop_disk(splitmirror_primary_disk: Path) -> None:
    (splitmirror_primary_disk / "data").mkdir()
    server = ServerContainer("{BASE}", port=5432, command=["sleep", "300"],
                             mounts={{splitmirror_primary_disk / "data": "/data"}})
    try:
        server.start()
        Path("disk.txt").write_text(str(splitmirror_primary_disk))
        assert server.exec(["touch", "/data/written-inside"])[0] == 0
        assert (splitmirror_primary_disk / "data" / "written-inside").exists()
        assert False, "the failure this test is about"
    finally:
        server.stop()
'''


def test_a_failing_test_cleans_up_its_container_mount_and_loop(pytester: pytest.Pytester) -> None:
    reason = loop_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        engine = containers.client()
    except containers.Unavailable as why:
        pytest.skip(str(why))
    images.require(BASE)
    pytester.makepyfile(INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the failure this test is about*"])

    disk = (pytester.path / "disk.txt").read_text()
    assert not engine.containers.list(all=True, filters={"label": containers.LABEL}), "a container was left"
    mounts = Path("/proc/self/mounts").read_text()
    assert disk not in mounts, "the loop filesystem is still mounted"
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    image = str(Path(disk).parent / "primary.img")
    assert image not in loops, "the loop device is still attached"
