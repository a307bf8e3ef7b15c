"""``splitmirror verify``: real sessions, real archives, damaged on purpose."""

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
from splitmirror.archive.reader import ArchiveNotFound, NotATarArchive
from splitmirror.catalog import SessionSummary, SqliteCatalog
from splitmirror.hooks import Hooks
from splitmirror.restore import verify_archive
from splitmirror.session import Session
from splitmirror.targets.builtin import FileTarget


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "splitmirror", *args],
        capture_output=True,
        input=stdin,
        timeout=120,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def one_sentence(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stderr.strip()
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(text.splitlines()) == 1, text
    return text


@pytest.fixture
def session(ledger: Path, make_config: Any, hooks: Hooks) -> SessionSummary:
    summary = Session(make_config(mode="hot-backup"), hooks).run()
    assert summary.archive is not None
    return summary


@pytest.fixture
def catalog(root: Path) -> str:
    return str(root / "catalog.db")


def data_offset(archive: str | Path, member: str) -> tuple[int, int]:
    """Where a member's data starts in the archive, and its size."""
    with tarfile.open(archive) as tar:
        info = tar.getmember(member)
        return info.offset_data, info.size


def flip_byte(archive: str | Path, at: int) -> None:
    with open(archive, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x01]))


def test_a_good_archive_passes_against_the_catalog_its_manifest_and_from_stdin(
    session: SessionSummary, catalog: str
) -> None:
    assert session.archive
    by_id = cli("verify", str(session.id), "--catalog", catalog)
    assert by_id.returncode == 0, by_id.stderr
    assert "verification passed" in by_id.stdout and "catalog (session" in by_id.stdout
    alone = cli("verify", "--archive", session.archive)
    assert alone.returncode == 0 and "as does its manifest" in alone.stdout
    piped = cli("verify", "--archive", "-", "--json", stdin=Path(session.archive).read_bytes())
    report = json.loads(piped.stdout)
    assert piped.returncode == 0 and report["ok"] and report["problems"] == []
    assert [m["name"] for m in report["members"]] == ["ledger.db", "ledger.db-wal", MANIFEST_NAME]
    assert report["archive"] == "standard input" and report["against"] == "manifest"


def test_one_flipped_byte_names_the_file_and_exits_6(session: SessionSummary, catalog: str) -> None:
    assert session.archive
    start, size = data_offset(session.archive, "ledger.db")
    flip_byte(session.archive, start + size // 2)
    proc = cli("verify", str(session.id), "--catalog", catalog)
    assert proc.returncode == 6
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("✗ ledger.db: checksum mismatch") for line in lines), proc.stdout
    assert "checksum record says" in proc.stdout and "the catalog says" in proc.stdout
    assert "verification FAILED: 1 problem" in proc.stdout
    data = json.loads(cli("verify", "--archive", session.archive, "--json").stdout)
    assert not data["ok"]
    assert [(p["kind"], p["member"]) for p in data["problems"]] == [("checksum-mismatch", "ledger.db")]


def test_a_truncated_archive_is_reported_as_truncated_naming_the_member(
    session: SessionSummary, catalog: str, tmp_path: Path
) -> None:
    assert session.archive
    start, size = data_offset(session.archive, "ledger.db")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(Path(session.archive).read_bytes()[: start + size // 2])
    proc = cli("verify", str(session.id), "--catalog", catalog, "--archive", str(cut))
    assert proc.returncode == 6 and "Traceback" not in proc.stdout + proc.stderr
    assert f"the archive {cut} is truncated: it ends inside member ledger.db" in proc.stdout
    assert "ledger.db-wal is missing from the archive (the archive ends before it)" in proc.stdout
    piped = cli("verify", "--archive", "-", stdin=cut.read_bytes())  # tarfile's stream mode: the same
    assert piped.returncode == 6 and "is truncated: it ends inside member ledger.db" in piped.stdout
    # Cut exactly between two members: still truncated (tarfile alone would call it a short good archive).
    with tarfile.open(session.archive) as tar:
        manifest_header = tar.getmember(MANIFEST_NAME).offset
    cut.write_bytes(Path(session.archive).read_bytes()[:manifest_header])
    report = verify_archive(cut)
    kinds = {(p.kind, p.member) for p in report.problems}
    assert ("truncated", "ledger.db-wal") in kinds and ("manifest-missing", MANIFEST_NAME) in kinds
    assert "ends after member ledger.db-wal, before its end-of-archive marker" in report.problems[0].message


def test_missing_archive_and_non_tar_are_one_sentence(
    session: SessionSummary, catalog: str, tmp_path: Path
) -> None:
    assert session.archive
    missing = cli("verify", "--archive", str(tmp_path / "nowhere.tar"))
    assert missing.returncode == 5
    assert one_sentence(missing) == f"error: the archive {tmp_path / 'nowhere.tar'} does not exist"
    os.rename(session.archive, tmp_path / "moved.tar")
    moved = cli("verify", str(session.id), "--catalog", catalog)
    assert moved.returncode == 5 and "does not exist" in one_sentence(moved)
    text = tmp_path / "notes.txt"
    text.write_text("not an archive\n" * 100)
    proc = cli("verify", "--archive", str(text), "--json")
    assert proc.returncode == 6 and "Traceback" not in proc.stderr
    assert (
        json.loads(proc.stdout)["error"] == f"{text} is not a tar archive, so it is not a splitmirror archive"
    )
    with pytest.raises(NotATarArchive):
        verify_archive(text)
    with pytest.raises(ArchiveNotFound):
        verify_archive(tmp_path / "nowhere.tar")


def test_unknown_or_failed_session_and_no_arguments(root: Path, catalog: str) -> None:
    SqliteCatalog(Path(catalog)).close()
    unknown = cli("verify", "42", "--catalog", catalog)
    assert unknown.returncode == 5 and "there is no session 42" in one_sentence(unknown)
    nothing = cli("verify")
    assert nothing.returncode == 2 and "give a session ID" in one_sentence(nothing)
    db = SqliteCatalog(Path(catalog))
    failed = db.start_session(
        name="x", mode="freeze", database="sqlite", database_url="", config="", started_at="2026-01-01"
    )
    db.finish_session(failed, status="FAILED", finished_at="2026-01-01", failed_phase="SPLIT", error="boom")
    proc = cli("verify", str(failed), "--catalog", catalog)
    assert proc.returncode == 5 and "is FAILED (failed in SPLIT: boom)" in one_sentence(proc)


def rewrite(source: str | Path, target: Path, change: Any) -> None:
    """Copy an archive member by member through tarfile, letting ``change(info)`` edit headers."""
    with tarfile.open(source) as tin, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tout:
        for info in tin.getmembers():
            data = tin.extractfile(info).read()  # type: ignore[union-attr]
            change(info)
            tout.addfile(info, io.BytesIO(data))


def test_a_member_without_its_checksum_record_is_named(
    session: SessionSummary, catalog: str, tmp_path: Path
) -> None:
    assert session.archive
    bare = tmp_path / "bare.tar"

    def drop_record(info: tarfile.TarInfo) -> None:
        if info.name == "ledger.db-wal":
            info.pax_headers = {k: v for k, v in info.pax_headers.items() if k != CHECKSUM_KEY}

    rewrite(session.archive, bare, drop_record)
    for args in (["--archive", str(bare)], [str(session.id), "--catalog", catalog, "--archive", str(bare)]):
        proc = cli("verify", *args)
        assert proc.returncode == 6
        assert f"✗ ledger.db-wal has no checksum record ({CHECKSUM_KEY})" in proc.stdout, proc.stdout


def test_verify_against_the_catalog_catches_an_edited_catalog(session: SessionSummary, catalog: str) -> None:
    with closing(sqlite3.connect(catalog)) as db, db:
        db.execute(
            "UPDATE files SET sha256 = ? WHERE session_id = ? AND member = 'ledger.db-wal'",
            ("0" * 64, session.id),
        )
        db.execute("UPDATE files SET size = 7 WHERE session_id = ? AND member = 'ledger.db'", (session.id,))
    proc = cli("verify", str(session.id), "--catalog", catalog, "--json")
    assert proc.returncode == 6
    problems = {(p["kind"], p["member"]): p["message"] for p in json.loads(proc.stdout)["problems"]}
    assert set(problems) == {("checksum-mismatch", "ledger.db-wal"), ("size-differs", "ledger.db")}
    assert problems["checksum-mismatch", "ledger.db-wal"].endswith("but the catalog says 0000000000000000…")
    assert "the catalog says 7" in problems["size-differs", "ledger.db"]
    # The archive alone is fine: only the catalog was edited.
    assert cli("verify", "--archive", str(session.archive)).returncode == 0


def test_manifest_catalog_and_archive_lists_are_compared(session: SessionSummary, catalog: str) -> None:
    assert session.archive
    with closing(sqlite3.connect(catalog)) as db, db:
        db.execute("DELETE FROM files WHERE session_id = ? AND member = 'ledger.db-wal'", (session.id,))
        db.execute(
            "INSERT INTO files VALUES (?, 99, 'ghost.db', '', '[9]', 'data', 1, ?, 0, 'file', NULL)",
            (session.id, "1" * 64),
        )
    files = SqliteCatalog(Path(catalog)).files(session.id)
    report = verify_archive(session.archive, files, session_id=session.id)
    found = {(p.kind, p.member) for p in report.problems}
    assert found == {
        ("unexpected", "ledger.db-wal"),
        ("missing", "ghost.db"),
        ("manifest-differs", "ledger.db-wal"),
        ("manifest-differs", "ghost.db"),
    }
    with closing(sqlite3.connect(catalog)) as db, db:
        db.execute("UPDATE files SET seq = 98 WHERE session_id = ? AND member = 'ledger.db'", (session.id,))
    files = SqliteCatalog(Path(catalog)).files(session.id)
    order = [p for p in verify_archive(session.archive, files).problems if p.kind == "order-differs"]
    assert [p.message for p in order] == [
        f"ledger.db is out of order: the catalog puts {MANIFEST_NAME} at its place"
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_archive_without_its_manifest_or_with_an_extra_member(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    target = FileTarget(str(path), 512)
    target.open()
    writer = ArchiveWriter(target)
    writer.add_bytes("one", b"1" * 1000)
    writer.close()
    report = verify_archive(path)
    assert [(p.kind, p.member) for p in report.problems] == [("manifest-missing", MANIFEST_NAME)]

    path = tmp_path / "b.tar"
    target = FileTarget(str(path), 512)
    target.open()
    writer = ArchiveWriter(target)
    writer.add_bytes("one", b"1" * 1000)
    writer.add_bytes("extra", b"2")
    listed = [
        {"member": "one", "size": 1000, "sha256": sha(b"1" * 1000)},
        {"member": "two", "size": 1, "sha256": ""},
    ]
    writer.add_manifest({"format": 1, "files": listed})
    writer.close()
    report = verify_archive(path)
    assert [(p.kind, p.member) for p in report.problems] == [("missing", "two"), ("unexpected", "extra")]


def test_a_garbage_header_is_reported_as_damaged(session: SessionSummary, tmp_path: Path) -> None:
    assert session.archive
    with tarfile.open(session.archive) as tar:
        wal = tar.getmember("ledger.db-wal").offset
    data = bytearray(Path(session.archive).read_bytes())
    data[wal : wal + 1024] = b"garbage!" * 128
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    report = verify_archive(damaged)
    assert report.problems[0].kind == "damaged"
    assert report.problems[0].message == f"the archive {damaged} has a damaged header after member ledger.db"
    assert ("manifest-missing", MANIFEST_NAME) in {(p.kind, p.member) for p in report.problems}
