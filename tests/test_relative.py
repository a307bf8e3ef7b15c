"""``MirrorProvider.relative``: where a database file lies in the primary, links followed, each
directory resolved once a session (DISCOVER asks for every file inside the window).  It must
say exactly what ``path.resolve().relative_to(primary.resolve())`` says, a ValueError included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.mirror.directory import DirectoryMirror, DirectoryOptions


def resolved(path: Path, primary: Path) -> Path | None:
    try:
        return path.resolve().relative_to(primary.resolve())
    except ValueError:
        return None


def answer(mirror: DirectoryMirror, path: Path) -> Path | None:
    try:
        return mirror.relative(path)
    except ValueError:
        return None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A primary reached through a link, with file and directory links in and out of it."""
    real = tmp_path / "disks" / "data"
    (real / "base" / "1").mkdir(parents=True)
    (real / "global").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "stray").write_bytes(b"x")
    (real / "base" / "1" / "100").write_bytes(b"x")
    (real / "global" / "pg_control").write_bytes(b"x")
    os.symlink(tmp_path / "outside" / "stray", real / "base" / "1" / "out-link")
    os.symlink(real / "global" / "pg_control", real / "base" / "1" / "in-link")
    os.symlink(tmp_path / "outside", real / "tblspc")
    os.symlink(real / "global", real / "base" / "glob")
    os.symlink(real, tmp_path / "data")
    return tmp_path / "data"


CASES = [
    "base/1/100",
    "base/1/out-link",
    "base/1/in-link",
    "tblspc/stray",
    "base/glob/pg_control",
    "base/1/../../global/pg_control",
    "base/1/..",
    "base/1/not-yet",
    "global/pg_control",
]


@pytest.mark.parametrize("name", CASES)
def test_relative_says_what_resolving_says(name: str, tree: Path, tmp_path: Path) -> None:
    mirror = DirectoryMirror(tree, tmp_path / "mirror", DirectoryOptions(tracking="off"))
    for _ in range(2):  # the second time from the remembered directories
        assert answer(mirror, tree / name) == resolved(tree / name, tree)


def test_the_same_files_asked_in_any_order(tree: Path, tmp_path: Path) -> None:
    mirror = DirectoryMirror(tree, tmp_path / "mirror", DirectoryOptions(tracking="off"))
    for name in [*CASES, *reversed(CASES)]:
        assert answer(mirror, tree / name) == resolved(tree / name, tree), name
    assert answer(mirror, tree / "base/1/out-link") is None
    assert answer(mirror, tree / "base/1/in-link") == Path("global/pg_control")


def test_a_link_re_pointed_since_is_followed_once_forgotten(tree: Path, tmp_path: Path) -> None:
    """The session forgets its resolutions as DISCOVER starts: INIT's preflight asked long before."""
    mirror = DirectoryMirror(tree, tmp_path / "mirror", DirectoryOptions(tracking="off"))
    assert answer(mirror, tree / "base/glob/pg_control") == Path("global/pg_control")
    os.remove(tree / "base" / "glob")
    os.symlink(tmp_path / "outside", tree / "base" / "glob")
    (tmp_path / "outside" / "pg_control").write_bytes(b"x")
    mirror.forget_resolutions()
    assert answer(mirror, tree / "base/glob/pg_control") is None  # now outside the primary
