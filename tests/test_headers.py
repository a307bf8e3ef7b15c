"""The archive's own tar headers (``archive/headers.py``) against ``tarfile``'s, byte for byte:
every shape the fast path takes, at each field's edge, and the shapes it must leave to
``tarfile`` (which then writes the member, as the archive tests show)."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest

from splitmirror.archive.headers import member_header
from splitmirror.archive.pax import CHECKSUM_KEY, ArchiveWriter
from splitmirror.targets.builtin import FileTarget

DIGEST = {CHECKSUM_KEY: "0123456789abcdef" * 4}


def by_tarfile(
    name: str, size: int, mode: int, mtime: int, uid: int, gid: int, records: dict[str, str]
) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = size, mode & 0o7777, mtime, uid, gid
    info.pax_headers = records
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


EDGES = [
    ("ledger.db", 16384, 0o600, 1_700_000_000, 0, 0, DIGEST),
    ("base/16384/2619_fsm", 0, 0o640, 0, 26, 26, DIGEST),
    ("x" * 100, 8**11 - 1, 0o7777, 8**11 - 1, 8**7 - 1, 8**7 - 1, DIGEST),
    ("pg_wal/000000010000000000000001", 16 << 20, 0o100600, 1, 65534, 65534, {}),
    ("a", 1, 0o4755, 2, 3, 4, {"k": "v" * 200}),  # a record whose length field has 3 digits
    ("b", 1, 0o644, 2, 3, 4, {"k": "v" * 3}),  # ... and one that needs 2
]


@pytest.mark.parametrize("member", EDGES, ids=lambda m: f"{m[0][:20]}-{m[1]}")
def test_the_everyday_member_is_what_tarfile_writes(member: tuple) -> None:  # type: ignore[type-arg]
    assert member_header(*member) == by_tarfile(*member)


def test_random_members_are_what_tarfile_writes() -> None:
    rng = random.Random(19)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_-./ "
    for _ in range(2000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 100)))
        member = (
            name,
            rng.choice([0, rng.randrange(8**11)]),
            rng.randrange(0o10000),
            rng.randrange(8**11),
            rng.randrange(8**7),
            rng.randrange(8**7),
            rng.choice([{}, DIGEST, {CHECKSUM_KEY: f"{rng.getrandbits(256):064x}"}]),
        )
        assert member_header(*member) == by_tarfile(*member), member


@pytest.mark.parametrize(
    "member",
    [
        ("x" * 101, 1, 0o600, 0, 0, 0, DIGEST),  # a long name: a "path" record
        ("données", 1, 0o600, 0, 0, 0, DIGEST),  # not ASCII
        ("a", 8**11, 0o600, 0, 0, 0, DIGEST),  # 8 GiB: a "size" record
        ("a", 1, 0o600, 8**11, 0, 0, DIGEST),
        ("a", 1, 0o600, -1, 0, 0, DIGEST),  # before 1970
        ("a", 1, 0o600, 0, 8**7, 0, DIGEST),  # a uid beyond the 8-byte field
        ("a", 1, 0o600, 0, 0, 8**7, DIGEST),
        ("a", 1, 0o600, 0, 0, 0, {CHECKSUM_KEY: "é"}),
    ],
    ids=["long-name", "non-ascii", "size", "mtime", "negative-mtime", "uid", "gid", "record"],
)
def test_other_shapes_are_left_to_tarfile(member: tuple) -> None:  # type: ignore[type-arg]
    assert member_header(*member) is None


def test_the_writer_still_writes_what_the_fast_path_leaves(tmp_path: Path) -> None:
    """A member of each shape the fast path declines reads back under its name and size."""
    path = tmp_path / "a.tar"
    target = FileTarget(str(path), 512)
    target.open()
    writer = ArchiveWriter(target, uid=8**7)
    names = ["x" * 150, "données/ß.db", "plain.db"]
    for name in names:
        writer.add_file(name, io.BytesIO(b"abc"), 3, mtime=-5)
    writer.close()
    with tarfile.open(path) as tar:
        assert [(m.name, m.size, m.uid, m.pax_headers.get(CHECKSUM_KEY) is not None) for m in tar] == [
            (name, 3, 8**7, True) for name in names
        ]
