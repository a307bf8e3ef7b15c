"""Stream archives (standard output, tape): every file read and hashed once, its checksum in the
manifest, since a stream cannot patch a header it has sent (docs/archive.md, "One read per file").
Real sessions through the CLI, as a DBA runs them; verify and restore as the docs say."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from splitmirror.archive.pax import CHECKSUM_KEY, MANIFEST_NAME, ArchiveWriter
from splitmirror.targets.builtin import FileTarget

FORMAT_1 = Path(__file__).parent / "data" / "format1-stream.tar"


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "splitmirror", *args], capture_output=True, input=stdin, timeout=120
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def stream(ledger: Path, write_config: Any, root: Path) -> tuple[Path, int]:
    """A HOT_BACKUP session archived to standard output, as `splitmirror backup` writes it to a
    pipe; returns the archive (saved from the pipe) and the session id."""
    config = write_config(mode="hot-backup")
    config.write_text(
        config.read_text().replace(f'path = "{root}/archives/ledger-{{session}}.tar"', 'path = "-"')
    )
    archive = root / "stream.tar"
    with open(archive, "wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "splitmirror", "backup", str(config), "--json"],
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    return archive, int(json.loads(err[err.index("{") :])["id"])


def headers(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {info.name: info for info in tar.getmembers()}


def manifest_of(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        data = tar.extractfile(MANIFEST_NAME).read()  # type: ignore[union-attr]
    return dict(json.loads(data))


def test_a_stream_archive_keeps_checksums_in_its_manifest_and_extracts_silently(
    stream: tuple[Path, int], root: Path, tmp_path: Path
) -> None:
    archive, session = stream
    members = headers(archive)
    assert list(members) == ["ledger.db", "ledger.db-wal", MANIFEST_NAME]
    assert CHECKSUM_KEY not in members["ledger.db"].pax_headers, "a stream cannot patch its headers"
    assert CHECKSUM_KEY in members[MANIFEST_NAME].pax_headers, "the manifest still carries its own"
    manifest = manifest_of(archive)
    assert manifest["format"] == 2 and manifest["member_checksums"] == "manifest"
    out = tmp_path / "x"
    out.mkdir()
    tar = subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], capture_output=True, text=True)
    assert tar.returncode == 0 and tar.stderr == "", "GNU tar extracts it without a word"
    for entry in manifest["files"]:
        assert sha((out / entry["member"]).read_bytes()) == entry["sha256"], entry["member"]
    catalog = str(root / "catalog.db")
    for args in (
        ["--archive", str(archive)],
        [str(session), "--catalog", catalog, "--archive", str(archive)],
    ):
        proc = cli("verify", *args)
        assert proc.returncode == 0 and "verification passed" in proc.stdout, proc.stdout + proc.stderr
    piped = cli("verify", "--archive", "-", "--json", stdin=archive.read_bytes())
    assert piped.returncode == 0 and json.loads(piped.stdout)["problems"] == []


def test_a_flipped_byte_in_a_stream_archive_is_caught_by_verify_and_restore(
    stream: tuple[Path, int], root: Path, tmp_path: Path
) -> None:
    archive, session = stream
    info = headers(archive)["ledger.db"]
    with open(archive, "r+b") as f:
        f.seek(info.offset_data + info.size // 2)
        byte = f.read(1)
        f.seek(info.offset_data + info.size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    alone = cli("verify", "--archive", str(archive))
    assert alone.returncode == 6
    assert "✗ ledger.db: checksum mismatch" in alone.stdout and "the manifest says" in alone.stdout
    by_id = cli("verify", str(session), "--catalog", str(root / "catalog.db"), "--archive", str(archive))
    assert by_id.returncode == 6 and "the catalog says" in by_id.stdout
    restored = cli("restore", "--archive", str(archive), "--to", str(tmp_path / "r"))
    assert restored.returncode == 6 and "Traceback" not in restored.stderr
    assert not (tmp_path / "r" / "ledger.db").exists()


def test_a_stream_archive_restores_the_database(stream: tuple[Path, int], tmp_path: Path) -> None:
    archive, _session = stream
    proc = cli("restore", "--archive", str(archive), "--to", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    with closing(sqlite3.connect(tmp_path / "r" / "ledger.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM ledger").fetchone()[0] == 2000


def without_manifest_entry(archive: Path, out: Path, member: str) -> None:
    """``archive`` with ``member`` left out of its manifest, the manifest's own record redone:
    a consistent archive whose member has no checksum anywhere."""
    with tarfile.open(archive) as tin, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tout:
        for info in tin.getmembers():
            data = tin.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == MANIFEST_NAME:
                manifest = json.loads(data)
                manifest["files"] = [f for f in manifest["files"] if f["member"] != member]
                data = json.dumps(manifest).encode()
                info.size = len(data)
                info.pax_headers = {**info.pax_headers, CHECKSUM_KEY: sha(data)}
            tout.addfile(info, io.BytesIO(data))


def test_a_member_neither_its_header_nor_the_manifest_vouches_for_is_refused(
    stream: tuple[Path, int], tmp_path: Path
) -> None:
    archive, _session = stream
    bare = tmp_path / "bare.tar"
    without_manifest_entry(archive, bare, "ledger.db-wal")
    proc = cli("verify", "--archive", str(bare))
    assert proc.returncode == 6
    assert f"✗ ledger.db-wal has no checksum record ({CHECKSUM_KEY})" in proc.stdout, proc.stdout
    restored = cli("restore", "--archive", str(bare), "--to", str(tmp_path / "r"))
    assert restored.returncode == 6, restored.stderr
    assert "ledger.db-wal has no checksum record" in restored.stderr
    assert "the manifest does not list it" in restored.stderr
    assert not (tmp_path / "r").exists(), "refused before anything was written"


def test_an_archive_written_before_format_2_still_verifies_and_restores(tmp_path: Path) -> None:
    """tests/data/format1-stream.tar: a stream archive written by splitmirror 0.1.0 before this
    change (a62b60e), every member with its header record."""
    assert manifest_of(FORMAT_1)["format"] == 1
    assert all(CHECKSUM_KEY in info.pax_headers for info in headers(FORMAT_1).values())
    assert cli("verify", "--archive", str(FORMAT_1)).returncode == 0
    proc = cli("restore", "--archive", str(FORMAT_1), "--to", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    with closing(sqlite3.connect(tmp_path / "r" / "orders.db")) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 300


class CountingSource(io.BytesIO):
    """Counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


@pytest.mark.parametrize("seekable", [True, False])
def test_each_byte_is_read_once_whatever_the_target(tmp_path: Path, seekable: bool) -> None:
    target = FileTarget(str(tmp_path / "a.tar"), 10240)
    if not seekable:
        target.seekable = False  # type: ignore[misc]
    target.open()
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source = CountingSource(payload)
    writer = ArchiveWriter(target)
    member = writer.add_file("big.bin", source, len(payload))
    writer.add_manifest({"member_checksums": writer.member_checksums})
    writer.close()
    assert source.bytes_read == len(payload)
    assert member.sha256 == sha(payload)
    assert writer.member_checksums == ("header" if seekable else "manifest")
