"""``splitmirror restore``: real sessions restored and opened, hostile archives refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from splitmirror.archive.pax import CHECKSUM_KEY, MANIFEST_NAME, ArchiveWriter
from splitmirror.archive.reader import ArchiveDamaged, ChecksumMismatch
from splitmirror.catalog import SessionSummary, SqliteCatalog
from splitmirror.errors import UserError
from splitmirror.hooks import Hooks
from splitmirror.restore import RestoreRefused, UnsafeMember, from_catalog, restore_archive
from splitmirror.session import Session
from splitmirror.targets.builtin import FileTarget


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitmirror", *args], capture_output=True, text=True, timeout=120
    )


def one_sentence(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stderr.strip()
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(text.splitlines()) == 1, text
    return text


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(path: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Everything under ``path``: mode, mtime and content, to prove a directory untouched."""
    found: dict[str, tuple[int, int, bytes | None]] = {}
    for item in sorted(path.rglob("*")):
        info = item.lstat()
        content = item.read_bytes() if item.is_file() and not item.is_symlink() else None
        found[str(item.relative_to(path))] = (info.st_mode, info.st_mtime_ns, content)
    return found


Member = tuple[tarfile.TarInfo, bytes]


def file_member(name: str, data: bytes, **fields: Any) -> Member:
    info = tarfile.TarInfo(name)
    info.mode = 0o640
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info, b""


def craft(path: Path, members: list[Member], *, engine: str = "none") -> Path:
    """A pax archive written with tarfile directly: every file carries a valid checksum record
    and the manifest lists them, so only the path rules can refuse it."""
    listed: list[dict[str, Any]] = []
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [*members, (tarfile.TarInfo(MANIFEST_NAME), b"")]:
            if info.name == MANIFEST_NAME:
                data = json.dumps({"format": 1, "database": {"engine": engine}, "files": listed}).encode()
            if info.isreg():
                info.size = len(data)
                info.pax_headers = {**info.pax_headers, CHECKSUM_KEY: sha(data)}
                if info.name != MANIFEST_NAME:
                    listed.append(
                        {"member": info.name, "size": len(data), "sha256": sha(data), "role": "data"}
                    )
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


GOOD = file_member("good.txt", b"written first, so an early refusal is visible\n")


@pytest.mark.parametrize(
    ("member", "named"),
    [
        (file_member("{outside}/abs-evil", b"x"), "member {outside}/abs-evil has an absolute path"),
        (file_member("../dotdot-evil", b"x"), "member ../dotdot-evil has a '..' component"),
        (file_member("sub/../../dotdot-evil", b"x"), "member sub/../../dotdot-evil has a '..' component"),
        (special("link", tarfile.SYMTYPE, "../outside"), "symlink link points to ../outside, which leads"),
        (special("link", tarfile.SYMTYPE, "{outside}"), "symlink link points to the absolute path {outside}"),
        (special("hard", tarfile.LNKTYPE, "../outside/x"), "hard link hard (to ../outside/x) has a '..'"),
        (special("hard", tarfile.LNKTYPE, "{outside}/x"), "hard link hard (to {outside}/x) has an absolute"),
        (special("hard", tarfile.LNKTYPE, "later"), "hard link hard points to later, which is not an"),
        (special("null", tarfile.CHRTYPE), "member null is a device node"),
        (special("disk", tarfile.BLKTYPE), "member disk is a device node"),
        (special("pipe", tarfile.FIFOTYPE), "member pipe is a FIFO"),
    ],
    ids=["absolute", "dotdot", "inner-dotdot", "symlink", "abs-symlink", "hardlink", "abs-hardlink",
         "hardlink-later", "chardev", "blockdev", "fifo"],
)  # fmt: skip
def test_hostile_members_are_refused_by_name_and_nothing_is_written(
    tmp_path: Path, member: Member, named: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    info, data = member
    info.name = info.name.format(outside=outside)
    info.linkname = info.linkname.format(outside=outside)
    archive = craft(tmp_path / "evil.tar", [GOOD, (info, data), file_member("later", b"later")])
    with tarfile.open(archive) as tar:  # tarfile kept the hostile name as written
        assert info.name in tar.getnames()
    before = listing(tmp_path)
    target = tmp_path / "restore"
    with pytest.raises(UnsafeMember) as refused:
        restore_archive(archive, target)
    assert named.format(outside=outside) in str(refused.value)
    assert listing(tmp_path) == before  # nothing outside, and DIR not even created
    assert not target.exists() and not (tmp_path / "dotdot-evil").exists()


def test_chained_symlinks_and_paths_through_symlinks_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "restore"
    target.mkdir()
    cases = {
        # sub/up -> .. is DIR itself (harmless alone), but esc -> sub/up/.. climbs out through it.
        "symlink esc points to sub/up/..": [
            special("sub/up", tarfile.SYMTYPE, ".."),
            special("esc", tarfile.SYMTYPE, "sub/up/.."),
        ],
        "member link/evil goes through link, which the archive makes a symlink": [
            special("link", tarfile.SYMTYPE, "sub"),
            file_member("link/evil", b"x"),
        ],
        "symlink loop points to loop": [special("loop", tarfile.SYMTYPE, "loop")],
        "member twice appears twice": [file_member("twice", b"1"), file_member("twice", b"2")],
    }
    for index, (named, members) in enumerate(cases.items()):
        archive = craft(tmp_path / f"chain{index}.tar", [GOOD, *members])
        with pytest.raises(UnsafeMember, match=re.escape(named)):
            restore_archive(archive, target)
        assert list(target.iterdir()) == []  # an existing empty DIR stays empty


def test_the_cli_refuses_with_one_sentence_and_exit_7(tmp_path: Path) -> None:
    archive = craft(tmp_path / "evil.tar", [GOOD, file_member("../evil", b"x")])
    proc = cli("restore", "--archive", str(archive), "--to", str(tmp_path / "restore"))
    assert proc.returncode == 7
    assert "member ../evil has a '..' component" in one_sentence(proc)
    assert not (tmp_path / "restore").exists() and not (tmp_path / "evil").exists()


def test_a_symlink_left_in_dir_is_never_followed_even_with_force(tmp_path: Path) -> None:
    outside, target = tmp_path / "outside", tmp_path / "restore"
    outside.mkdir()
    target.mkdir()
    (target / "sub").symlink_to(outside)
    archive = craft(tmp_path / "a.tar", [file_member("sub/x", b"x")])
    with pytest.raises(RestoreRefused, match=re.escape(f"{target}/sub is a symlink in the way")):
        restore_archive(archive, target, force=True)
    assert list(outside.iterdir()) == []


def test_safe_links_directories_and_nested_files_are_restored(tmp_path: Path) -> None:
    target = tmp_path / "restore"
    directory = tarfile.TarInfo("data")
    directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o750, 1_500_000_000
    archive = craft(
        tmp_path / "a.tar",
        [
            (directory, b""),
            file_member("data/a", b"alpha", mtime=1_600_000_000.25),
            special("data/link", tarfile.SYMTYPE, "a"),
            special("data/up", tarfile.SYMTYPE, "../data/a"),
            special("data/hard", tarfile.LNKTYPE, "data/a"),
            file_member("deep/er/file", b"nested"),
            file_member("tool", b"#!/bin/sh\n", mode=0o4755),
        ],
    )
    result = restore_archive(archive, target)
    assert result.restored == [
        *("data", "data/a", "data/link", "data/up", "data/hard", "deep/er/file", "tool", MANIFEST_NAME)
    ]
    assert (target / "tool").stat().st_mode & 0o7777 == 0o755  # never a setuid file from an archive
    assert (target / "data/link").readlink() == Path("a") and (target / "data/up").read_bytes() == b"alpha"
    assert (target / "data/hard").stat().st_ino == (target / "data/a").stat().st_ino
    assert (target / "deep/er/file").read_bytes() == b"nested"
    assert (target / "deep").stat().st_mode & 0o777 == 0o700  # parents the archive does not describe
    info = (target / "data").stat()
    assert (info.st_mode & 0o7777, info.st_mtime) == (0o750, 1_500_000_000)
    info = (target / "data/a").stat()
    assert (info.st_mode & 0o7777, info.st_mtime_ns) == (0o640, 1_600_000_000_250_000_000)
    assert not [p for p in target.rglob("*.partial")]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
def test_owners_are_restored_as_root(tmp_path: Path) -> None:
    archive = craft(tmp_path / "a.tar", [file_member("owned", b"x", uid=1234, gid=2345)])
    restore_archive(archive, tmp_path / "restore")
    info = (tmp_path / "restore/owned").stat()
    assert (info.st_uid, info.st_gid) == (1234, 2345)


def test_sparse_files_are_restored_sparse(tmp_path: Path) -> None:
    size = 16 << 20
    data = bytearray(size)
    data[8192:12288] = b"\x01" * 4096  # one data block near the start
    data[10 << 20 : (10 << 20) + 100] = b"\x02" * 100  # a partial block in the middle; the tail is a hole
    path = tmp_path / "sparse.tar"
    target = FileTarget(str(path), 512)
    target.open()
    writer = ArchiveWriter(target)
    member = writer.add_file("sparse.bin", io.BytesIO(bytes(data)), size, mode=0o600)
    listed = [{"member": "sparse.bin", "size": size, "sha256": member.sha256, "role": "data"}]
    writer.add_manifest({"format": 1, "database": {"engine": "none"}, "files": listed})
    writer.close()
    restore_archive(path, tmp_path / "restore")
    restored = tmp_path / "restore/sparse.bin"
    assert restored.read_bytes() == bytes(data)
    assert restored.stat().st_size == size
    assert restored.stat().st_blocks * 512 <= 64 << 10  # two 4 KiB blocks, give or take the filesystem


@pytest.fixture
def session(ledger: Path, make_config: Any, hooks: Hooks) -> Callable[[str], SessionSummary]:
    def run(mode: str) -> SessionSummary:
        summary = Session(make_config(mode=mode), hooks).run()
        assert summary.archive
        return summary

    return run


def integrity(db: Path) -> tuple[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        return (
            conn.execute("PRAGMA integrity_check").fetchone()[0],
            conn.execute("SELECT count(*) FROM ledger").fetchone()[0],
        )


@pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
def test_a_restored_sqlite_database_opens_from_the_catalog_and_from_the_archive_alone(
    session: Callable[[str], SessionSummary], root: Path, tmp_path: Path, mode: str
) -> None:
    summary = session(mode)
    assert summary.archive
    by_id = cli(
        "restore", str(summary.id), "--catalog", str(root / "catalog.db"), "--to", str(tmp_path / "a")
    )
    assert by_id.returncode == 0, by_id.stderr
    assert "next steps (sqlite):" in by_id.stdout
    assert f"1. sqlite3 {tmp_path / 'a' / 'ledger.db'} 'PRAGMA integrity_check'" in by_id.stdout
    alone = cli("restore", "--archive", summary.archive, "--to", str(tmp_path / "b"), "--json")
    assert alone.returncode == 0, alone.stderr
    result = json.loads(alone.stdout)
    assert (
        result["restored"] == ["ledger.db", "ledger.db-wal", MANIFEST_NAME] and result["engine"] == "sqlite"
    )
    check = result["steps"][0]
    assert check["argv"] == ["sqlite3", str(tmp_path / "b" / "ledger.db"), "PRAGMA integrity_check"]
    assert check["text"].startswith(f"sqlite3 {tmp_path / 'b' / 'ledger.db'} 'PRAGMA integrity_check'")
    with tarfile.open(summary.archive) as tar:
        members = {info.name: info for info in tar.getmembers()}
    for directory in (tmp_path / "a", tmp_path / "b"):
        for name in ("ledger.db", "ledger.db-wal"):  # before SQLite opens (and checkpoints) them
            info = (directory / name).stat()
            assert info.st_mode & 0o7777 == members[name].mode
            assert int(info.st_mtime) == members[name].mtime
        assert integrity(directory / "ledger.db") == ("ok", 2000)
    assert subprocess.run(check["argv"], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_a_non_empty_directory_needs_force(session: Callable[[str], SessionSummary], tmp_path: Path) -> None:
    archive = session("freeze").archive
    assert archive
    target = tmp_path / "restore"
    target.mkdir()
    (target / "ledger.db").write_bytes(b"an older copy")
    (target / "notes.txt").write_text("keep me")
    before = listing(target)
    proc = cli("restore", "--archive", archive, "--to", str(target))
    assert proc.returncode == 7
    assert one_sentence(proc) == (
        f"error: {target} is not empty; restore into a new or empty directory, or pass --force to "
        f"write the archive's files over what is there"
    )
    assert listing(target) == before
    forced = cli("restore", "--archive", archive, "--to", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert integrity(target / "ledger.db") == ("ok", 2000)
    assert (target / "notes.txt").read_text() == "keep me"


def test_only_restores_the_matching_members(
    session: Callable[[str], SessionSummary], root: Path, tmp_path: Path
) -> None:
    summary = session("hot-backup")
    assert summary.archive
    catalog = str(root / "catalog.db")
    proc = cli(
        "restore", str(summary.id), "--catalog", catalog, "--to", str(tmp_path / "a"), "--only", "*.db"
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["ledger.db"]
    assert "skipped 2 member(s)" in proc.stdout and "not prepared to start" in proc.stdout
    both = restore_archive(summary.archive, tmp_path / "b", only=["ledger.db", "*-wal"])
    assert both.restored == ["ledger.db", "ledger.db-wal"] and both.skipped == [MANIFEST_NAME]
    assert both.steps and both.notes == []  # every database file is there: prepared despite --only
    nothing = cli("restore", "--archive", summary.archive, "--to", str(tmp_path / "c"), "--only", "*.xyz")
    assert nothing.returncode == 2 and "--only matches no member" in one_sentence(nothing)
    assert not (tmp_path / "c").exists()


def test_a_damaged_member_stops_the_restore_and_is_not_left_behind(
    session: Callable[[str], SessionSummary], tmp_path: Path
) -> None:
    archive = session("freeze").archive
    assert archive
    with tarfile.open(archive) as tar:
        info = tar.getmember("ledger.db")
    with open(archive, "r+b") as f:
        f.seek(info.offset_data + 5000)
        byte = f.read(1)
        f.seek(info.offset_data + 5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    target = tmp_path / "restore"
    proc = cli("restore", "--archive", archive, "--to", str(target))
    assert proc.returncode == 6
    assert "member ledger.db does not match its checksum" in one_sentence(proc)
    assert list(target.iterdir()) == []  # no ledger.db, no temporary file


def test_truncated_missing_and_unreadable_archives(
    session: Callable[[str], SessionSummary], root: Path, tmp_path: Path
) -> None:
    summary = session("freeze")
    assert summary.archive
    cut = tmp_path / "cut.tar"
    cut.write_bytes(Path(summary.archive).read_bytes()[:4000])
    with pytest.raises(ArchiveDamaged, match=r"truncated: it ends inside member ledger\.db"):
        restore_archive(cut, tmp_path / "restore")
    assert not (tmp_path / "restore").exists()  # the scan found it before anything was written
    missing = cli("restore", "--archive", str(tmp_path / "nowhere.tar"), "--to", str(tmp_path / "r"))
    assert missing.returncode == 5 and "does not exist" in one_sentence(missing)
    stdin = cli("restore", "--archive", "-", "--to", str(tmp_path / "r"))
    assert stdin.returncode == 7 and "needs a regular file" in one_sentence(stdin)
    # The catalog's checksums are checked too: an archive that is not the session's is refused.
    other = craft(tmp_path / "other.tar", [file_member("ledger.db", b"not the database")])
    files = from_catalog(SqliteCatalog(root / "catalog.db").files(summary.id))
    with pytest.raises(
        ChecksumMismatch, match=r"ledger\.db: its checksum record or size disagrees with the catalog"
    ):
        restore_archive(other, tmp_path / "restore", expected=files)
    assert not (tmp_path / "restore").exists()


def test_an_engine_that_is_not_installed_is_one_note(tmp_path: Path, hooks: Hooks) -> None:
    archive = craft(tmp_path / "a.tar", [file_member("data.ora", b"blocks")], engine="db2")
    result = restore_archive(archive, tmp_path / "restore", hooks=hooks)
    assert result.restored == ["data.ora", MANIFEST_NAME] and result.steps == []
    assert result.notes == [
        f"the db2 engine plugin is not installed, so {tmp_path / 'restore'} was not prepared to start "
        f"(the files are restored); install splitmirror-db2 or follow docs/restore.md"
    ]
    proc = cli("restore", "--archive", str(archive), "--to", str(tmp_path / "again"))
    assert proc.returncode == 0 and "note: the db2 engine plugin is not installed" in proc.stdout


def test_a_manifest_less_archive_is_not_restored(tmp_path: Path) -> None:
    path = tmp_path / "plain.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info, data = file_member("x", b"x")
        info.size, info.pax_headers = 1, {CHECKSUM_KEY: sha(data)}
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match="has no manifest"):
        restore_archive(path, tmp_path / "restore")
    assert not (tmp_path / "restore").exists()


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Any:
    """A 256 KiB tmpfs: a disk that fills up (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_sentence_and_leaves_no_partial_file(
    tmp_path: Path, tiny_filesystem: Path
) -> None:
    archive = craft(
        tmp_path / "big.tar", [file_member("small", b"s" * 1000), file_member("big", os.urandom(1 << 20))]
    )
    proc = cli("restore", "--archive", str(archive), "--to", str(tiny_filesystem / "restore"))
    assert proc.returncode == 1
    assert one_sentence(proc) == (
        f"error: writing member big into {tiny_filesystem / 'restore'} failed (No space left on device); "
        f"the restore stopped and {tiny_filesystem / 'restore'} is incomplete"
    )
    assert sorted(p.name for p in (tiny_filesystem / "restore").iterdir()) == ["small"]
