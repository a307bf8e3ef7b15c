"""compose/build-images on definitions of its own (no download): an image is labelled with its
package's exact version, a package whose version is not the tag's is refused and its image
removed, a failing build names the package and suite in one line, and a name the list does not
have is refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitmirror.testing import images

SCRIPT = Path(__file__).resolve().parents[1] / "compose" / "build-images"
BASE = "splitmirror-offline/debian:bookworm"
TAGS = ["splitmirror-offline/sm-test-tiny:12", "splitmirror-offline/sm-test-tiny:99"]


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Path]:
    """A compose directory of build-images and two definitions: ``sm-test-tiny`` (nothing
    installed: the base already has its package) and ``sm-test-broken`` (a build that fails)."""
    try:
        present = images._present(BASE)
    except images.Unavailable as why:
        pytest.skip(str(why))
    if not present:
        pytest.skip(f"{BASE} is not built; run `make images`")
    root = tmp_path / "compose"
    (root / "images" / "sm-test-tiny").mkdir(parents=True)
    (root / "images" / "sm-test-broken").mkdir()
    shutil.copy(SCRIPT, root / "build-images")
    (root / "images" / "sm-test-tiny" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nARG PACKAGE\n")
    (root / "images" / "sm-test-broken" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nRUN false\n")
    (root / "images" / "list").write_text(
        "# test images\n"
        "sm-test-tiny 12 bookworm base-files\n"
        "sm-test-tiny 99 bookworm base-files\n"
        "sm-test-broken 1 bookworm no-such-package\n"
    )
    yield root
    subprocess.run(["docker", "image", "rm", "-f", *TAGS], capture_output=True, check=False)


def build(compose: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose / "build-images"), *names], capture_output=True, text=True, check=False
    )


def test_an_image_is_labelled_with_its_package_s_exact_version(compose: Path) -> None:
    result = build(compose, "sm-test-tiny-12")
    assert result.returncode == 0, result.stderr
    exact = subprocess.run(
        ["docker", "run", "--rm", BASE, "dpkg-query", "-W", "-f", "${Version}", "base-files"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"splitmirror-offline/sm-test-tiny:12 is base-files {exact}" in result.stdout
    template = '{{index .Config.Labels "org.opencontainers.image.version"}}'
    label = subprocess.run(
        ["docker", "image", "inspect", "-f", template, TAGS[0]], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert label == exact
    again = build(compose, "sm-test-tiny-12")
    assert again.returncode == 0 and f"{TAGS[0]} exists (base-files {exact})" in again.stdout


def test_a_package_of_another_version_is_refused_and_its_image_removed(compose: Path) -> None:
    result = build(compose, "sm-test-tiny-99")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        "build-images: Debian bookworm's base-files is "
    ) and result.stderr.strip().endswith(", not sm-test-tiny 99")
    assert subprocess.run(["docker", "image", "inspect", TAGS[1]], capture_output=True).returncode != 0


def test_a_failing_build_names_the_package_and_suite(compose: Path) -> None:
    result = build(compose, "sm-test-broken-1")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "build-images: building splitmirror-offline/sm-test-broken:1: installing no-such-package "
        "from Debian bookworm failed"
    )


def test_a_name_the_list_lacks_is_refused(compose: Path) -> None:
    result = build(compose, "sm-test-tiny-12", "nosuch-1")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "build-images: compose/images/list does not name every image asked for (sm-test-tiny-12 nosuch-1)"
    )
