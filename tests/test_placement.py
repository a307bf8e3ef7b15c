"""Where the archives, the catalog and the mirror may lie (issue 13): never inside the primary or
the mirror, and neither of those inside the other.  Each bad placement is refused through the
real command line with one sentence naming both paths, before anything is created: no catalog,
no lock, no archive, the mirror as it was."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.testing.loopfs import device_of, loop_filesystem
from splitmirror.workload import create_ledger


def write_toml(path: Path, **sections: dict[str, str]) -> Path:
    """A config file from sections of string keys (the values are written quoted)."""
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f'{key} = "{value}"' for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def tree(path: Path) -> dict[str, str]:
    """Everything under ``path`` (or ``path`` itself): each file's checksum, each directory."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in path.rglob("*")
    }


def one_sentence(output: str) -> str:
    message = output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    return message


def refusal(command: str, output: str) -> str:
    """``backup``'s one sentence, or the one problem ``check`` lists after its notes."""
    if command == "backup":
        return one_sentence(output)
    problems = [line for line in output.splitlines() if line.startswith("✗ ")]
    assert len(problems) == 1 and "Traceback" not in output, output
    return problems[0]


# -- the directory mirror: rules on paths, at config load ------------------------------------------


@pytest.fixture
def place(root: Path, ledger: Path) -> Callable[..., Path]:
    """A config for the ledger on ``root/primary`` with the given paths changed."""

    def config(
        *,
        mirror: str = "{root}/mirror",
        target: str = "{root}/archives/ledger-{{session}}.tar",
        **session: str,
    ) -> Path:
        return write_toml(
            root / "placed.toml",
            session={"name": "ledger", "catalog": f"{root}/catalog.db", **session},
            database={"url": f"sqlite://{ledger}", "mode": "hot-backup"},
            mirror={"primary": f"{root}/primary", "mirror": mirror.format(root=root)},
            target={"path": target.format(root=root)},
        )

    return config


MISPLACED = [
    (
        "archives in the mirror (the issue's example)",
        {"target": "{root}/mirror/{{session}}.tar"},
        "[target] path: the archive directory {root}/mirror is the mirror {root}/mirror, which every sync",
    ),
    (
        "archives inside the primary",
        {"target": "{root}/primary/old/{{session}}.tar"},
        "[target] path: the archive directory {root}/primary/old is inside the primary {root}/primary,",
    ),
    (
        "archives reached through '..'",
        {"target": "{root}/archives/../mirror/x/{{name}}-{{session}}.tar"},
        "the archive directory {root}/mirror/x is inside the mirror {root}/mirror",
    ),
    (
        "archives in a directory named by the session, inside the mirror",
        {"target": "{root}/mirror/{{session}}/a.tar"},
        "the archive directory {root}/mirror is the mirror",
    ),
    (
        "catalog inside the mirror",
        {"catalog": "{root}/mirror/catalog.db"},
        "[session] catalog: the catalog {root}/mirror/catalog.db is inside the mirror {root}/mirror",
    ),
    (
        "catalog inside the primary",
        {"catalog": "{root}/primary/catalog.db"},
        "[session] catalog: the catalog {root}/primary/catalog.db is inside the primary {root}/primary",
    ),
    (
        "catalog reached through '..'",
        {"catalog": "{root}/archives/../primary/locks/../catalog.db"},
        "[session] catalog: the catalog {root}/primary/catalog.db is inside the primary",
    ),
    (
        "mirror inside the primary",
        {"mirror": "{root}/primary/mirror"},
        "[mirror] mirror: the mirror {root}/primary/mirror is inside the primary {root}/primary; set",
    ),
    (
        "primary inside the mirror",
        {"mirror": "{root}"},
        "[mirror] mirror: the primary {root}/primary is inside the mirror {root}; set [mirror] mirror",
    ),
    (
        "mirror is the primary, with a trailing slash",
        {"mirror": "{root}/primary/"},
        "[mirror] mirror: the mirror {root}/primary is the primary itself",
    ),
]


@pytest.mark.parametrize(
    ("case", "paths", "expected"), MISPLACED, ids=[case for case, _paths, _expected in MISPLACED]
)
@pytest.mark.parametrize("command", ["check", "backup"])
def test_a_misplaced_path_is_refused_at_load_and_nothing_is_created(
    case: str, paths: dict[str, str], expected: str, command: str, place: Callable[..., Path], root: Path
) -> None:
    config = place(
        **{key: value.format(root=root) if key == "catalog" else value for key, value in paths.items()}
    )
    (root / "mirror" / "last-image").write_bytes(b"the mirror's last good image")
    before = tree(root)
    result = CliRunner().invoke(main, [command, str(config)])
    assert result.exit_code == 2, result.output
    message = one_sentence(result.output)
    assert f"{config}: " in message and expected.format(root=root) in message, message
    assert "outside both the primary and the mirror" in message or "[mirror] mirror to a place" in message
    assert tree(root) == before, "a refused configuration created or changed something"


def test_the_session_lock_directory_is_judged_too(root: Path) -> None:
    """The locks live in ``<catalog dir>/locks``: here that is the primary itself."""
    (root / "locks").mkdir()
    create_ledger(root / "locks" / "ledger.db", rows=10)
    config = write_toml(
        root / "locks.toml",
        session={"name": "ledger", "catalog": f"{root}/catalog.db"},
        database={"url": f"sqlite://{root}/locks/ledger.db", "mode": "hot-backup"},
        mirror={"primary": f"{root}/locks", "mirror": f"{root}/mirror"},
        target={"path": f"{root}/archives/{{session}}.tar"},
    )
    result = CliRunner().invoke(main, ["backup", str(config)])
    assert result.exit_code == 2
    expected = f"[session] catalog: the session lock directory {root}/locks is the primary {root}/locks"
    assert expected in one_sentence(result.output)


def test_a_symlink_into_the_mirror_is_followed(place: Callable[..., Path], root: Path) -> None:
    (root / "shortcut").symlink_to(root / "mirror")
    config = place(target="{root}/shortcut/ledger-{{session}}.tar")
    result = CliRunner().invoke(main, ["check", str(config)])
    assert result.exit_code == 2
    assert f"the archive directory {root}/mirror is the mirror {root}/mirror" in one_sentence(result.output)


def test_siblings_that_share_a_prefix_are_not_nested(place: Callable[..., Path], root: Path) -> None:
    """``primary-mirror`` and ``primary-archives`` begin like ``primary``: components count."""
    (root / "primary-archives").mkdir()
    config = place(
        mirror="{root}/primary-mirror",
        target="{root}/primary-archives/{{session}}.tar",
        catalog=f"{root}/primary-c/c.db",
    )
    result = CliRunner().invoke(main, ["backup", "--quiet", str(config)])
    assert result.exit_code == 0, result.output
    assert (root / "primary-archives" / "1.tar").is_file() and (
        root / "primary-mirror" / "ledger.db"
    ).is_file()


@pytest.mark.parametrize("target", ["-", "/dev/null"])
def test_standard_output_and_devices_are_not_places(
    target: str, place: Callable[..., Path], root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-`` would resolve to the working directory, a device to /dev: neither is a directory
    archives are written in, wherever the command runs."""
    monkeypatch.chdir(root / "mirror")
    result = CliRunner().invoke(main, ["check", str(place(target=target))])
    assert result.exit_code == 0, result.output


# -- a catalog the file does not name: in preflight -------------------------------------------------


def test_a_catalog_from_the_environment_inside_the_primary_is_refused_before_any_lock(
    root: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLITMIRROR_CATALOG", str(root / "primary" / "catalog.db"))
    config = write_toml(
        root / "env.toml",
        session={"name": "ledger"},
        database={"url": f"sqlite://{ledger}", "mode": "hot-backup"},
        mirror={"primary": f"{root}/primary", "mirror": f"{root}/mirror"},
        target={"path": f"{root}/archives/{{session}}.tar"},
    )
    before = tree(root)
    for command in ("check", "backup"):
        result = CliRunner().invoke(main, [command, str(config)])
        assert result.exit_code == 3, result.output
        message = refusal(command, result.output)
        assert f"the catalog {root}/primary/catalog.db is inside the primary {root}/primary" in message
        assert "set [session] catalog to a place outside both" in message
        assert "(the catalog now comes from $SPLITMIRROR_CATALOG or the default location)" in message
    assert tree(root) == before and not (root / "primary" / "locks").exists(), "the primary was written"


# -- the block mirror: the primary's filesystem and the mirror image or device ---------------------


@pytest.fixture
def disk(splitmirror_loop_filesystem: Path) -> Path:
    """The block mirror's primary: a loop-device ext4 with the ledger (skips where not root)."""
    create_ledger(splitmirror_loop_filesystem / "ledger.db", rows=500)
    return splitmirror_loop_filesystem


def block_config(tmp_path: Path, disk: Path, *, mirror: Path, catalog: Path, target: str) -> Path:
    return write_toml(
        tmp_path / "block.toml",
        session={"name": "blk", "catalog": str(catalog)},
        database={"url": f"sqlite://{disk}/ledger.db", "mode": "freeze"},
        mirror={"provider": "block", "primary": str(disk), "mirror": str(mirror)},
        target={"path": target},
    )


LAST_IMAGE = b"last good image" * 100


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A mirror image larger than the primary, holding a last good image."""
    path = tmp_path / "mirror.img"
    with open(path, "wb") as out:
        out.write(LAST_IMAGE)
        out.truncate(96 << 20)
    (tmp_path / "archives").mkdir()
    return path


def last_image(image: Path) -> bytes:
    with open(image, "rb") as f:
        return f.read(len(LAST_IMAGE))


def test_block_catalog_that_is_the_mirror_image_is_refused(disk: Path, image: Path, tmp_path: Path) -> None:
    config = block_config(
        tmp_path, disk, mirror=image, catalog=image, target=f"{tmp_path}/archives/{{session}}.tar"
    )
    result = CliRunner().invoke(main, ["backup", str(config)])
    assert result.exit_code == 2
    assert f"[session] catalog: the catalog {image} is the mirror {image}" in one_sentence(result.output)
    assert last_image(image) == LAST_IMAGE


@pytest.mark.parametrize("target", ["{image}", "{tmp}/mirror{{session}}.img"])
def test_block_target_that_can_name_the_mirror_image_is_refused(
    target: str, disk: Path, tmp_path: Path
) -> None:
    image = tmp_path / "mirror1.img" if "session" in target else tmp_path / "mirror.img"
    image.write_bytes(b"last good image")
    path = target.format(image=image, tmp=tmp_path)
    config = block_config(tmp_path, disk, mirror=image, catalog=tmp_path / "c.db", target=path)
    result = CliRunner().invoke(main, ["backup", str(config)])
    assert result.exit_code == 2
    assert f"[target] path {path!r} can name the mirror {image} itself" in one_sentence(result.output)
    assert image.read_bytes() == b"last good image" and not (tmp_path / "c.db").exists()


@pytest.mark.parametrize("where", ["archives", "catalog"])
def test_block_archives_or_catalog_on_the_primary_filesystem_are_refused(
    where: str, disk: Path, image: Path, tmp_path: Path
) -> None:
    """Outside the primary's path, but on its filesystem (a bind mount): the block mirror copies
    that filesystem whole, and splitmirror never writes it.  The catalog's directory does not
    exist yet: it is judged by its nearest existing ancestor."""
    (disk / "spare").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", "--bind", str(disk / "spare"), str(elsewhere)], check=True)
    try:
        if where == "archives":
            catalog, target = tmp_path / "c.db", f"{elsewhere}/{{session}}.tar"
            expected = f"the archive directory {elsewhere} is on the primary's filesystem ({disk}),"
        else:
            catalog, target = elsewhere / "new" / "c.db", f"{tmp_path}/archives/{{session}}.tar"
            expected = f"the catalog's directory {elsewhere}/new is on the primary's filesystem ({disk}),"
        config = block_config(tmp_path, disk, mirror=image, catalog=catalog, target=target)
        for command in ("check", "backup"):
            result = CliRunner().invoke(main, [command, str(config)])
            assert result.exit_code == 3, result.output
            message = refusal(command, result.output)
            assert f"{expected} which the block mirror copies whole" in message, message
        assert not any(elsewhere.iterdir()) and last_image(image) == LAST_IMAGE
        assert not catalog.exists() and not any((tmp_path / "archives").iterdir())
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)


def test_block_catalog_on_the_mirror_devices_filesystem_is_refused(disk: Path, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "archives").mkdir()
    with loop_filesystem(tmp_path / "other", 80 << 20) as other:
        device = device_of(other)
        (other / "keep").write_bytes(b"someone else's data")
        config = block_config(
            tmp_path,
            disk,
            mirror=device,
            catalog=other / "c.db",
            target=f"{tmp_path}/archives/{{session}}.tar",
        )
        result = CliRunner().invoke(main, ["backup", str(config)])
        assert result.exit_code == 3, result.output
        message = one_sentence(result.output)
        assert (
            f"the catalog's directory {other} is on the filesystem of the mirror device {device}" in message
        )
        assert (other / "keep").read_bytes() == b"someone else's data" and not (other / "c.db").exists()


# -- from a review: paths that reach the primary or the mirror another way -------------------------


def test_dotdot_after_a_symlink_goes_where_the_kernel_goes(place: Callable[..., Path], root: Path) -> None:
    """``deep/..`` with ``deep`` a link to ``primary/sub`` is ``primary``, not ``root``."""
    (root / "primary" / "sub").mkdir()
    (root / "deep").symlink_to(root / "primary" / "sub")
    config = place(target="{root}/deep/../w-{{session}}.tar")
    result = CliRunner().invoke(main, ["check", str(config)])
    assert result.exit_code == 2, result.output
    assert f"the archive directory {root}/primary is the primary {root}/primary" in one_sentence(
        result.output
    )


@pytest.fixture
def bind_mounted_mirror(root: Path) -> Iterator[Path]:
    """``root/elsewhere`` showing the mirror directory (a bind mount); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    (root / "mirror").mkdir(exist_ok=True)
    (root / "elsewhere").mkdir()
    subprocess.run(["mount", "--bind", str(root / "mirror"), str(root / "elsewhere")], check=True)
    try:
        yield root / "elsewhere"
    finally:
        # A session's watchdog may still hold a file there for a moment: never leave the mount.
        if subprocess.run(["umount", str(root / "elsewhere")], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(root / "elsewhere")], check=True)


@pytest.mark.parametrize("what", ["target", "catalog"])
def test_the_mirror_reached_through_a_bind_mount_is_refused(
    what: str, bind_mounted_mirror: Path, place: Callable[..., Path], root: Path
) -> None:
    paths = (
        {"target": f"{bind_mounted_mirror}/a-{{{{session}}}}.tar"}
        if what == "target"
        else {"catalog": f"{bind_mounted_mirror}/catalog.db"}
    )
    config = place(**paths)
    before = tree(root / "mirror")
    result = CliRunner().invoke(main, ["backup", str(config)])
    assert result.exit_code == 3, result.output
    message = one_sentence(result.output)
    assert (
        f"{bind_mounted_mirror}" in message
        and f"inside the mirror {root}/mirror, reached another way" in message
    )
    assert tree(root / "mirror") == before and not (root / "catalog.db").exists()


def test_a_directory_named_by_the_session_that_is_the_mirror_is_refused(
    place: Callable[..., Path], root: Path
) -> None:
    """``{root}/{session}/x.tar`` with the mirror at ``{root}/1``: only the first session's id
    tells; it fails before writing a byte of the archive, and the mirror is as it was."""
    config = place(mirror="{root}/1", target="{root}/{{session}}/x.tar")
    (root / "0").mkdir()  # where check's probe (session 0) writes
    (root / "1").mkdir()
    (root / "1" / "last-image").write_bytes(b"the mirror's last good image")
    result = CliRunner().invoke(main, ["backup", "--json", str(config)])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.output.split("\n}\n")[0] + "\n}")
    assert (summary["status"], summary["failed_phase"]) == ("FAILED", "INIT")
    assert f"this session's archive {root}/1/x.tar is inside the mirror {root}/1" in summary["error"]
    assert not (root / "1" / "x.tar").exists() and (root / "1" / "last-image").read_bytes().startswith(b"the")
