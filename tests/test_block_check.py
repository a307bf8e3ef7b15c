"""What CHECK is for, on the block mirror: a hostile workload changes the files between MAP and
SPLIT (append, truncate, rewrite, create, rename over, delete) and again right after the thaw.
With CHECK's remapping on, every archived file equals its content at the split; with it off
(the test-only ``FileMap.remap_at_check``), the archive is wrong.

The "database" is a directory of plain files behind a minimal engine: the subject here is the
mirror and its extent maps, which must be exact for any file whatever the engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from splitmirror import impl
from splitmirror.catalog import SqliteCatalog
from splitmirror.engine import (
    DatabaseEngine,
    DatabaseFile,
    NoOptions,
    PreflightProblem,
    ServerInfo,
    UnquiesceResult,
)
from splitmirror.errors import SessionFailed
from splitmirror.extents import map_file
from splitmirror.filemap import Fingerprint
from splitmirror.phases import Mode, Phase
from splitmirror.restore import restore_archive
from splitmirror.session import Session
from splitmirror.testing import SessionRunner
from splitmirror.testing.loopfs import device_of, loop_filesystem, loop_filesystem_unavailable

BLOCK = 4096


class FilesEngine(DatabaseEngine):
    """Every regular file under the URL's directory, in name order; nothing to quiesce."""

    name = "files"
    url_schemes = ("files",)
    options_model = NoOptions

    @property
    def root(self) -> Path:
        return Path(self.url.removeprefix("files://"))

    def connect(self) -> ServerInfo:
        return ServerInfo("files", "1", "")

    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        return []

    def layout(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_file())

    def quiesce(self, mode: Mode) -> None:
        pass

    def discover(self) -> list[DatabaseFile]:
        return [DatabaseFile(p, (0, p.name)) for p in self.layout()]

    def prepare(self) -> Mapping[str, Any]:
        return {}

    def freeze_paths(self, mode: Mode) -> list[Path]:
        return []

    def unquiesce(self) -> UnquiesceResult:
        return UnquiesceResult()

    def abort(self) -> None:
        pass

    @classmethod
    def prepare_restore(cls, directory: Path, manifest: Mapping[str, Any]) -> list[str]:
        return []


class Engines:
    @impl
    def splitmirror_register_engines(self, register: Callable[[type[DatabaseEngine]], None]) -> None:
        register(FilesEngine)


class Files:
    """What SessionRunner.config needs to know of the "database"."""

    def __init__(self, root: Path) -> None:
        self.url, self.primary, self.options = f"files://{root}", root, {}


def write(path: Path, data: bytes, offset: int = 0, mode: str = "r+b") -> None:
    with open(path, mode if path.exists() else "wb") as f:
        f.seek(offset)
        f.write(data)
        os.fsync(f.fileno())


class Hostile:
    """Changes the files after MAP (at QUIESCE: before DISCOVER, so the engine still sees what
    exists), records every file's content at the split (CHECK runs while the primary is frozen),
    and wrecks the primary again right after the thaw (UNQUIESCE)."""

    def __init__(self, root: Path, remap: bool) -> None:
        self.root, self.remap = root, remap
        self.at_split: dict[str, bytes] = {}

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        root = self.root
        if phase is Phase.MAP:
            session._filemap.remap_at_check = self.remap
        elif phase is Phase.QUIESCE:
            write(root / "append", os.urandom(300_000), offset=(root / "append").stat().st_size)
            os.truncate(root / "truncate", 5000)
            write(root / "rewrite", os.urandom(BLOCK * 40))  # in place: same blocks, new bytes
            write(root / "new", os.urandom(123_456), mode="wb")
            write(root / "renamed.tmp", os.urandom(200_000), mode="wb")
            os.rename(root / "renamed.tmp", root / "renamed")  # a new inode over the old name
            os.unlink(root / "deleted")
            write(root / "filler", os.urandom(2_000_000), mode="wb")  # reuses the freed blocks
        elif phase is Phase.CHECK:
            self.at_split = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
        elif phase is Phase.UNQUIESCE:
            for path in list(root.iterdir()):
                if path.is_file():
                    os.unlink(path)
            write(root / "after-thaw", os.urandom(6_000_000), mode="wb")
            os.sync()


def steady_tree(root: Path) -> None:
    """Files the workload leaves alone, of every shape extent reads must get right."""
    write(root / "tiny", b"x" * 17, mode="wb")
    write(root / "sparse", os.urandom(5000), mode="wb")
    write(root / "sparse", os.urandom(70_000), offset=3 << 20)
    with open(root / "prealloc", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 1 << 20)  # unwritten extents: read as zeros
        f.write(os.urandom(9000))
        os.fsync(f.fileno())
    with open(root / "holey", "wb") as f:  # every other block: hundreds of one-block extents
        for i in range(0, 600, 2):
            os.pwrite(f.fileno(), os.urandom(BLOCK), i * BLOCK)
        os.fsync(f.fileno())
    with open(root / "fragmented", "wb") as f:  # even blocks first, then the holes between
        for start in (0, 1):
            for i in range(start, 200, 2):
                os.pwrite(f.fileno(), os.urandom(BLOCK), i * BLOCK)
                os.fsync(f.fileno())


STEADY = {"tiny", "sparse", "prealloc", "fragmented", "holey"}


@pytest.fixture(params=["ext4", "xfs"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    reason = loop_filesystem_unavailable(request.param)
    if reason:
        pytest.skip(reason)
    (tmp_path / "disk").mkdir()
    with loop_filesystem(tmp_path / "disk", 320 << 20, request.param) as mount:
        for name, size in [("append", 100_000), ("truncate", 400_000), ("rewrite", BLOCK * 40),
                           ("renamed", 150_000), ("deleted", 250_000)]:  # fmt: skip
            write(mount / name, os.urandom(size), mode="wb")
        steady_tree(mount)
        yield mount


def archived(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile() and not m.name.startswith(".splitmirror")
        }


def sparse_members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {m.name for m in tar.getmembers() if m.issparse()}


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".splitmirror")}


def gnu_tar_extract(archive: Path, into: Path) -> dict[str, bytes]:
    into.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(into)], check=True)
    return contents(into)


@pytest.mark.parametrize("remap", [True, False], ids=["check-on", "check-off"])
def test_check_makes_extent_reads_exact_under_a_hostile_workload(
    remap: bool, files: Path, splitmirror_session: SessionRunner, tmp_path: Path
) -> None:
    splitmirror_session.mirror_options = {"provider": "block"}
    splitmirror_session.plugins.append(Engines())
    hostile = Hostile(files, remap)
    database: Any = Files(files)
    if not remap:
        # Stale maps: the archive writer notices a file shorter than its size and the session
        # fails, or the bytes come out wrong; either way no exact archive without CHECK.
        try:
            summary = splitmirror_session.run(database, "freeze", hostile)
        except SessionFailed as failure:
            assert failure.phase == "BACKUP" and "shorter on the split mirror" in failure.reason
            return
        got = archived(Path(summary.archive or ""))
        wrong = sorted(name for name in got if got[name] != hostile.at_split.get(name))
        assert wrong, "without CHECK's remapping the stale maps must show"
        return
    summary = splitmirror_session.run(database, "freeze", hostile)
    got = archived(Path(summary.archive or ""))
    assert set(got) == set(hostile.at_split)
    assert set(got) == {"append", "truncate", "rewrite", "new", "renamed", "filler"} | STEADY
    wrong = sorted(name for name in got if got[name] != hostile.at_split[name])
    assert not wrong, f"archived differently from the split: {wrong}"
    assert summary.stats["check"]["remapped"] >= 4 and summary.stats["check"]["new"] >= 2
    read = summary.stats["extents"]
    assert len(read["holey"]) >= 150 and len(read["fragmented"]) >= 5, "many extents were read"
    assert any(flags & 0x800 for *_rest, flags in read["prealloc"]), "unwritten extents were met"
    archive = Path(summary.archive or "")
    assert {"sparse", "prealloc", "holey"} <= sparse_members(archive), "holes were archived as data"
    assert gnu_tar_extract(archive, tmp_path / "gnu") == hostile.at_split
    restored = tmp_path / "restored"
    restore_archive(archive, restored)
    assert contents(restored) == hostile.at_split
    assert (restored / "sparse").stat().st_blocks * 512 < 1 << 20, "the restore filled the holes"


def test_inline_data_is_copied_through_the_frozen_filesystem(
    tmp_path: Path, splitmirror_session: SessionRunner
) -> None:
    """ext4's inline_data keeps tiny files inside the inode: no extent to read raw.  Such files
    are copied through the primary while it is still frozen, which is as exact."""
    reason = loop_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    (tmp_path / "disk").mkdir()
    with loop_filesystem(tmp_path / "disk", 64 << 20, "ext4", ["-O", "inline_data", "-I", "256"]) as mount:
        write(mount / "inline", b"kept in the inode", mode="wb")
        write(mount / "regular", os.urandom(100_000), mode="wb")
        assert not map_file(mount / "inline").readable_raw, "mkfs did not enable inline_data"
        splitmirror_session.mirror_options = {"provider": "block"}
        splitmirror_session.plugins.append(Engines())
        database: Any = Files(mount)
        summary = splitmirror_session.run(database, "freeze")
        got = archived(Path(summary.archive or ""))
        assert got == {"inline": b"kept in the inode", "regular": (mount / "regular").read_bytes()}
        methods = {
            f.member: f.read_method
            for f in SqliteCatalog(splitmirror_session.workspace.catalog).files(summary.id)
        }
        assert methods["inline"] == "frozen-copy" and methods["regular"] == "extent"


class Defragmenter:
    """After MAP: ``e4defrag`` moves a fragmented file's blocks (its fingerprint stays the same),
    then junk is written over the blocks it left, which are free now."""

    def __init__(self, root: Path, remap: bool) -> None:
        self.root, self.remap = root, remap
        self.at_split: dict[str, bytes] = {}

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        path = self.root / "fragmented"
        if phase is Phase.MAP:
            session._filemap.remap_at_check = self.remap
        elif phase is Phase.QUIESCE:
            before, fingerprint = map_file(path), Fingerprint.of(path)
            subprocess.run(["e4defrag", str(path)], capture_output=True, check=True)
            after = map_file(path)
            assert after != before and Fingerprint.of(path) == fingerprint, "e4defrag did not move it"
            kept = {(e.physical, e.length) for e in after.extents}
            with open(device_of(self.root), "r+b") as device:
                for extent in before.extents:
                    if (extent.physical, extent.length) not in kept:
                        os.pwrite(device.fileno(), b"\xee" * extent.length, extent.physical)
                os.fsync(device.fileno())
        elif phase is Phase.CHECK:
            self.at_split = {p.name: p.read_bytes() for p in self.root.iterdir() if p.is_file()}


@pytest.mark.parametrize("remap", [True, False], ids=["check-on", "check-off"])
def test_check_notices_blocks_moved_under_an_unchanged_fingerprint(
    remap: bool, tmp_path: Path, splitmirror_session: SessionRunner
) -> None:
    reason = loop_filesystem_unavailable() or (
        None if shutil.which("e4defrag") else "e4defrag is not installed"
    )
    if reason:
        pytest.skip(reason)
    (tmp_path / "disk").mkdir()
    with loop_filesystem(tmp_path / "disk", 64 << 20) as mount:
        steady_tree(mount)
        splitmirror_session.mirror_options = {"provider": "block"}
        splitmirror_session.plugins.append(Engines())
        defrag = Defragmenter(mount, remap)
        database: Any = Files(mount)
        summary = splitmirror_session.run(database, "freeze", defrag)
        got = archived(Path(summary.archive or ""))
        assert set(got) == STEADY
        if remap:
            assert got == defrag.at_split
            assert summary.stats["check"]["moved"] == 1 and summary.stats["check"]["remapped"] == 0
        else:
            assert got["fragmented"] != defrag.at_split["fragmented"], "the old blocks were read"
