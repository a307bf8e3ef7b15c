"""compose/build-images on definitions of its own (no download): an image is labelled with its
package's exact version (an epoch is no part of the version compared); a package of another
version, or one the image lacks, is refused in one line and the image that worked before keeps
its tag; an image without the label is rebuilt; a failing build names the package and suite; a
name the list does not have is refused before anything is built."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.testing import images

SCRIPT = Path(__file__).resolve().parents[1] / "compose" / "build-images"
BASE = "splitmirror-offline/debian:bookworm"
REPOSITORY = "splitmirror-offline/sm-test-tiny"
TAGS = [f"{REPOSITORY}:{v}" for v in ("12", "4", "1")] + ["splitmirror-offline/sm-test-missing:1"]
LABEL = "org.opencontainers.image.version"


def docker(*argv: str) -> str:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=True).stdout.strip()


def installed(package: str) -> str:
    return docker("run", "--rm", BASE, "dpkg-query", "-W", "-f", "${Version}", package)


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Path]:
    """A compose directory of build-images and definitions that download nothing: ``sm-test-tiny``
    (the base already has its package), ``sm-test-missing`` (the package is not there) and
    ``sm-test-broken`` (a build that fails)."""
    images.require(BASE)
    root = tmp_path / "compose"
    for name in ("sm-test-tiny", "sm-test-missing", "sm-test-broken"):
        (root / "images" / name).mkdir(parents=True)
    shutil.copy(SCRIPT, root / "build-images")
    for name in ("sm-test-tiny", "sm-test-missing"):
        (root / "images" / name / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nARG PACKAGE\n")
    (root / "images" / "sm-test-broken" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nRUN false\n")
    (root / "images" / "list").write_text(
        "# test images\n"
        "sm-test-tiny 12 bookworm base-files\n"
        "sm-test-tiny 4 bookworm passwd\n"  # an epoch: 1:4.13+dfsg1-...
        "sm-test-tiny 1 bookworm base-files\n"  # 12.4+deb12u..: not 1, though it starts with 1
        "sm-test-missing 1 bookworm no-such-package\n"
        "sm-test-broken 1 bookworm no-such-package"  # no newline after the last line
    )
    yield root
    subprocess.run(["docker", "image", "rm", "-f", *TAGS], capture_output=True, check=False)


def build(compose: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose / "build-images"), *names], capture_output=True, text=True, check=False
    )


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    return result.stderr.strip().splitlines()[-1]


def test_an_image_is_labelled_with_its_package_s_exact_version(compose: Path) -> None:
    result = build(compose, "sm-test-tiny-12", "sm-test-tiny-4")
    assert result.returncode == 0, result.stderr
    for tag, package in ((TAGS[0], "base-files"), (TAGS[1], "passwd")):
        exact = installed(package)
        assert f"{tag} is {package} {exact}" in result.stdout
        assert docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', tag) == exact
    assert installed("passwd").startswith("1:4.")  # the epoch was no obstacle
    again = build(compose, "sm-test-tiny-12")
    assert (
        again.returncode == 0 and f"{TAGS[0]} exists (base-files {installed('base-files')})" in again.stdout
    )


def test_an_image_without_the_label_is_rebuilt(compose: Path) -> None:
    docker("tag", BASE, TAGS[0])
    result = build(compose, "sm-test-tiny-12")
    assert result.returncode == 0 and f"{TAGS[0]} is base-files" in result.stdout, result.stdout


def test_a_package_of_another_version_is_refused_and_the_old_image_kept(compose: Path) -> None:
    docker("tag", BASE, TAGS[2])  # the image that "worked before", without a label: rebuilt
    before = docker("image", "inspect", "-f", "{{.Id}}", TAGS[2])
    result = build(compose, "sm-test-tiny-1")
    assert last_line(result) == (
        f"build-images: building {TAGS[2]}: Debian bookworm's base-files is {installed('base-files')}, "
        "not sm-test-tiny 1"
    )
    assert docker("image", "inspect", "-f", "{{.Id}}", TAGS[2]) == before
    assert subprocess.run(
        ["docker", "image", "inspect", f"{TAGS[2]}-candidate"], capture_output=True
    ).returncode


def test_a_package_the_image_lacks_is_refused(compose: Path) -> None:
    assert last_line(build(compose, "sm-test-missing-1")) == (
        "build-images: building splitmirror-offline/sm-test-missing:1: Debian bookworm's no-such-package "
        "is not installed in the image"
    )
    assert subprocess.run(["docker", "image", "inspect", TAGS[3]], capture_output=True).returncode


def test_a_failing_build_names_the_package_and_suite(compose: Path) -> None:
    assert last_line(build(compose, "sm-test-broken-1")) == (
        "build-images: building splitmirror-offline/sm-test-broken:1: installing no-such-package "
        "from Debian bookworm failed"
    )


def test_a_name_the_list_lacks_is_refused_before_anything_is_built(compose: Path) -> None:
    result = build(compose, "sm-test-tiny-12", "nosuch-1")
    assert last_line(result).startswith(
        "build-images: compose/images/list does not name nosuch-1 (it names: "
    )
    assert "sm-test-broken-1)" in last_line(result)  # the last line, without its newline, counts
    assert "building" not in result.stdout


def test_the_list_and_the_image_table_agree() -> None:
    """Every offline image the tests may choose is one the list builds, and the reverse."""
    listed = {
        (line.split()[0], line.split()[1])
        for line in (SCRIPT.parent / "images" / "list").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    offline = {key for key, choice in images.IMAGES.items() if choice.offline}
    assert listed == offline
    assert all(images.IMAGES[key].offline == f"splitmirror-offline/{key[0]}:{key[1]}" for key in listed)
