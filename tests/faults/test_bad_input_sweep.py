"""Every kind of bad input in one table: configuration, command line, archives and devices.

Each case runs the real command line against a live SQLite ledger that has one good session
behind it, and must end with the expected exit code and one sentence (no traceback), leaving
the database, the mirror's last good image, the catalog and the archive exactly as they were.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.testing import SessionRunner, SqliteLedgerDatabase
from splitmirror.testing.loopfs import device_of


@dataclasses.dataclass
class Setup:
    """A ledger with one DONE session: its config's sections, and where everything is."""

    root: Path
    sections: dict[str, dict[str, object]]
    database: SqliteLedgerDatabase
    mirror: Path
    catalog: Path
    archive: Path
    session_id: int

    def config(self, name: str = "bad", **changes: dict[str, object] | None) -> str:
        """A config file like the good one, with whole sections replaced (None drops one)."""
        sections = {**self.sections, **changes}
        lines = []
        for section, keys in sections.items():
            if keys is None:
                continue
            lines.append(f"[{section}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
        path = self.root / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return str(path)

    def with_keys(self, section: str, **keys: object) -> str:
        return self.config(**{section: {**self.sections[section], **keys}})

    def archive_copy(self, damage: Callable[[bytearray], bytes | bytearray]) -> str:
        path = self.root / "damaged.tar"
        path.write_bytes(damage(bytearray(self.archive.read_bytes())))
        return str(path)


def _flip(data: bytearray) -> bytearray:
    data[3000] ^= 0xFF  # inside the first member's data
    return data


def _edit_manifest(data: bytearray) -> bytearray:
    at = data.rfind(b'"sha256": "') + len(b'"sha256": "')
    data[at : at + 4] = b"beef"  # the manifest's checksum of a file no longer matches
    return data


Case = tuple[str, Callable[[Setup], list[str]], int, str]

CASES: list[Case] = [
    # -- configuration ----------------------------------------------------------------------
    (
        "unknown key",
        lambda s: ["check", s.with_keys("session", max_windw="30s")],
        2,
        "did you mean 'max_window'",
    ),
    (
        "wrong type",
        lambda s: ["check", s.with_keys("session", name=12)],
        2,
        "name: input should be a valid string",
    ),
    (
        "window out of range",
        lambda s: ["check", s.with_keys("session", max_window="2h")],
        2,
        "less than or equal",
    ),
    (
        "block size not 512-aligned",
        lambda s: ["check", s.with_keys("target", block_size=1000)],
        2,
        "multiple of 512",
    ),
    ("unknown mode", lambda s: ["check", s.with_keys("database", mode="frozen")], 2, "mode is 'frozen'"),
    (
        "unknown provider",
        lambda s: ["check", s.with_keys("mirror", provider="mirrorz")],
        2,
        "unknown mirror provider",
    ),
    (
        "unknown URL scheme",
        lambda s: ["check", s.with_keys("database", url="nosql://x")],
        2,
        "no installed database",
    ),
    ("missing section", lambda s: ["check", s.config(target=None)], 2, "the [target] section is missing"),
    ("missing config file", lambda s: ["backup", str(s.root / "nowhere.toml")], 2, "does not exist"),
    ("config is a directory", lambda s: ["backup", str(s.root)], 2, "is a directory"),
    ("not TOML", lambda s: ["check", _write(s.root / "x.toml", "[session\nname=")], 2, "is not valid TOML"),
    ("world-writable config", lambda s: ["backup", _world_writable(s)], 2, "writable by every user"),
    (
        "database file missing",
        lambda s: ["backup", s.with_keys("database", url=f"sqlite://{s.root}/no.db")],
        3,
        "no.db",
    ),
    ("primary missing", lambda s: ["backup", s.with_keys("mirror", primary=str(s.root / "gone"))], 3, "gone"),
    (
        "target directory missing",
        lambda s: ["backup", s.with_keys("target", path=f"{s.root}/no/x.tar")],
        3,
        "does not exist",
    ),
    (
        "archive already there",
        lambda s: ["backup", s.with_keys("target", path=str(s.archive))],
        3,
        "already exists",
    ),
    (
        "unknown tracking choice",
        lambda s: ["check", s.with_keys("mirror", provider="block", tracking="maybe")],
        2,
        "[mirror] tracking: input should be 'auto', 'on' or 'off'",
    ),
    (
        "negative pre-copy passes",
        lambda s: ["check", s.with_keys("mirror", provider="block", precopy_passes=-1)],
        2,
        "[mirror] precopy_passes: input should be greater than or equal to 0",
    ),
    # -- placement: nothing of splitmirror's inside the primary or the mirror ----------------
    (
        "archives inside the mirror",
        lambda s: ["backup", s.with_keys("target", path=f"{s.mirror}/{{session}}.tar")],
        2,
        "[target] path: the archive directory",
    ),
    (
        "archives inside the primary",
        lambda s: ["backup", s.with_keys("target", path=f"{_primary(s)}/old/{{session}}.tar")],
        2,
        "is inside the primary",
    ),
    (
        "catalog inside the mirror",
        lambda s: ["backup", s.with_keys("session", catalog=f"{s.mirror}/catalog.db")],
        2,
        "[session] catalog: the catalog",
    ),
    (
        "catalog inside the primary",
        lambda s: ["backup", s.with_keys("session", catalog=f"{_primary(s)}/catalog.db")],
        2,
        "set [session] catalog to a place outside both the primary and the mirror",
    ),
    (
        "mirror inside the primary",
        lambda s: ["backup", s.with_keys("mirror", mirror=f"{_primary(s)}/mirror")],
        2,
        "[mirror] mirror: the mirror",
    ),
    (
        "primary inside the mirror",
        lambda s: ["backup", s.with_keys("mirror", mirror=str(s.mirror.parent))],
        2,
        "[mirror] mirror: the primary",
    ),
    (
        "mirror of another primary",
        lambda s: ["backup", _another_primary(s)],
        3,
        "--take-over-mirror",
    ),
    # -- command line -----------------------------------------------------------------------
    ("unknown session to show", lambda s: ["show", "999", "--catalog", str(s.catalog)], 5, "no session 999"),
    (
        "unknown session to verify",
        lambda s: ["verify", "999", "--catalog", str(s.catalog)],
        5,
        "no session 999",
    ),
    (
        "unknown session to restore",
        lambda s: ["restore", "999", "--to", str(s.root / "r"), "--catalog", str(s.catalog)],
        5,
        "no session 999",
    ),
    ("ID that is not a number", lambda s: ["show", "abc"], 2, "is not a valid integer"),
    ("restore without --to", lambda s: ["restore", str(s.session_id)], 2, "Missing option '--to'"),
    (
        "neither ID nor --archive",
        lambda s: ["verify", "--catalog", str(s.catalog)],
        2,
        "give a session ID, or",
    ),
    ("unknown command", lambda s: ["bakup"], 2, "No such command 'bakup'"),
    ("since that is not a date", lambda s: ["list", "--since", "yesterday"], 2, "is not a date"),
    (
        "restore into a non-empty directory",
        lambda s: ["restore", str(s.session_id), "--to", str(s.root), "--catalog", str(s.catalog)],
        7,
        "not empty",
    ),
    # -- archives ---------------------------------------------------------------------------
    ("archive missing", lambda s: ["verify", "--archive", str(s.root / "none.tar")], 5, "does not exist"),
    (
        "archive truncated",
        lambda s: ["verify", "--archive", s.archive_copy(lambda d: d[:6000])],
        6,
        "truncated",
    ),
    ("archive byte flipped", lambda s: ["verify", "--archive", s.archive_copy(_flip)], 6, "checksum"),
    (
        "not a tar",
        lambda s: ["verify", "--archive", s.archive_copy(lambda d: b"hello " * 200)],
        6,
        "not a tar archive",
    ),
    ("manifest edited", lambda s: ["verify", "--archive", s.archive_copy(_edit_manifest)], 6, "manifest"),
    (
        "restore of a damaged archive",
        lambda s: ["restore", "--archive", s.archive_copy(_flip), "--to", str(s.root / "r2")],
        6,
        "checksum",
    ),
]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def _primary(setup: Setup) -> str:
    return str(setup.sections["mirror"]["primary"])


def _another_primary(setup: Setup) -> str:
    """The good config on another database, in another primary, with the same mirror."""
    other = SqliteLedgerDatabase(setup.root / "other")
    other.primary.mkdir()
    other.create_ledger()
    return setup.config(
        database={**setup.sections["database"], "url": other.url},
        mirror={**setup.sections["mirror"], "primary": str(other.primary)},
    )


def _world_writable(setup: Setup) -> str:
    path = Path(setup.config("open"))
    path.chmod(0o666)
    return str(path)


@pytest.fixture
def setup(tmp_path: Path, splitmirror_session: SessionRunner) -> Setup:
    database = SqliteLedgerDatabase(splitmirror_session.workspace.primary)
    database.create_ledger()
    summary = splitmirror_session.run(database, "hot-backup")
    ws = splitmirror_session.workspace
    config = Path(ws.root / "session-1.toml")
    sections = _parse(config)
    return Setup(tmp_path, sections, database, ws.mirror, ws.catalog, Path(summary.archive or ""), summary.id)


def _parse(config: Path) -> dict[str, dict[str, object]]:
    import tomllib

    return dict(tomllib.loads(config.read_text()))


def _tree(path: Path) -> dict[str, str]:
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _state(setup: Setup) -> tuple[object, ...]:
    """What no bad input may change: the ledger's rows, the mirror, the catalog, the archive."""
    with closing(sqlite3.connect(setup.database.path)) as db:
        rows = db.execute("SELECT count(*), coalesce(sum(seq), 0) FROM ledger").fetchone()
    with closing(sqlite3.connect(setup.catalog)) as catalog:
        catalog_rows = catalog.execute("SELECT id, status FROM sessions ORDER BY id").fetchall()
    return rows, _tree(setup.mirror), catalog_rows, _tree(setup.archive)


def _check(result_output: str, exit_code: int, expected_code: int, expected: str) -> None:
    """One sentence; or, for a verification that ran and found problems, its report: a line
    per problem (each one sentence), the totals, and the verdict."""
    message = result_output.strip()
    assert exit_code == expected_code, message
    assert expected in message, message
    assert "Traceback" not in message, message
    lines = message.splitlines()
    if lines[-1].startswith("verification FAILED"):
        problems = [line for line in lines if line.startswith("✗ ")]
        assert len(lines) == len(problems) + 2 and f"{len(problems)} problem" in lines[-1], message
        return
    assert len(lines) == 1, message


@pytest.mark.parametrize(("case", "argv", "code", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_and_changes_nothing(
    case: str, argv: Callable[[Setup], list[str]], code: int, expected: str, setup: Setup
) -> None:
    before = _state(setup)
    result = CliRunner().invoke(main, argv(setup))
    _check(result.output, result.exit_code, code, expected)
    assert _state(setup) == before, "a bad input changed the database, mirror, catalog or archive"


# -- devices: the block mirror, as root ---------------------------------------------------------


@pytest.fixture
def disk(splitmirror_loop_filesystem: Path) -> Path:
    return splitmirror_loop_filesystem  # its image, primary.img, is beside it


DeviceCase = tuple[str, Callable[[Path, Path], dict[str, object]], str]

DEVICE_CASES: list[DeviceCase] = [
    (
        "mirror device missing",
        lambda disk, tmp: {"mirror": "/dev/splitmirror-no-such-disk"},
        "does not exist",
    ),
    ("mirror too small", lambda disk, tmp: {"mirror": _small_image(tmp)}, "is smaller than the primary"),
    ("mirror is the primary", lambda disk, tmp: {"mirror": str(device_of(disk))}, "is the primary itself"),
    (
        "mirror image in use",
        lambda disk, tmp: {"mirror": str(disk.parent / "primary.img")},
        "is in use (attached to",
    ),
    ("primary not a mount point", lambda disk, tmp: {"primary": str(disk / "sub")}, "not the mount point"),
    ("primary device named wrong", lambda disk, tmp: {"device": "/dev/null"}, "is not what is mounted"),
]


def _small_image(tmp: Path) -> str:
    path = tmp / "small.img"
    path.write_bytes(b"\0" * 4096)
    return str(path)


@pytest.mark.parametrize(("case", "keys", "expected"), DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
def test_bad_devices_are_one_sentence_and_touch_nothing(
    case: str, keys: Callable[[Path, Path], dict[str, object]], expected: str, disk: Path, tmp_path: Path
) -> None:
    (disk / "sub").mkdir()
    database = SqliteLedgerDatabase(disk)
    database.create_ledger()
    image = tmp_path / "mirror.img"
    image.write_bytes(b"last good image" * 100)
    (tmp_path / "archives").mkdir()
    mirror = {"provider": "block", "primary": str(disk), "mirror": str(image), **keys(disk, tmp_path)}
    config = tmp_path / "block.toml"
    config.write_text(
        f'[session]\nname = "blk"\ncatalog = "{tmp_path / "catalog.db"}"\n'
        f'[database]\nurl = "{database.url}"\nmode = "freeze"\n'
        "[mirror]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in mirror.items())
        + f'[target]\npath = "{tmp_path / "archives"}/blk-{{session}}.tar"\n'
    )  # fmt: skip
    config.chmod(0o600)
    rows = _ledger_rows(database.path)
    result = CliRunner().invoke(main, ["backup", str(config)])
    _check(result.output, result.exit_code, 3, expected)
    assert image.read_bytes() == b"last good image" * 100, "the mirror's last image was touched"
    assert _ledger_rows(database.path) == rows and not any((tmp_path / "archives").iterdir())
    subprocess.run(["sync"], check=True)
    assert os.path.ismount(disk)


def _ledger_rows(path: Path) -> tuple[int, int]:
    with closing(sqlite3.connect(path)) as db:
        count, total = db.execute("SELECT count(*), coalesce(sum(seq), 0) FROM ledger").fetchone()
    return int(count), int(total)
