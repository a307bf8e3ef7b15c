"""One mirror, one primary, one session at a time (issue 13).

Two configurations with different primaries and one ``[mirror] mirror``: the second is refused,
naming the owner, until it takes the mirror over with ``backup --take-over-mirror``.  While a
session uses a mirror, a session of any configuration on it is refused at INIT (exit 4) without
touching the mirror, the database or the catalog, and the first finishes ``DONE`` and verifies.
Both providers: the directory mirror, and the block mirror on an image file and on a device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from splitmirror import impl
from splitmirror.catalog import SqliteCatalog
from splitmirror.catalog.base import SessionSummary
from splitmirror.cli import main
from splitmirror.config import load_config
from splitmirror.hooks import Hooks
from splitmirror.mirror.ownership import Owner, read_owner, state_files
from splitmirror.phases import Phase
from splitmirror.plugins import load_plugins
from splitmirror.session import Session
from splitmirror.testing.loopfs import loop_device, loop_filesystem, loop_filesystem_unavailable
from splitmirror.workload import create_ledger
from test_placement import refusal, write_toml


class Setup:
    """Two primaries, ``a`` and ``b``, each with its ledger (``a.db``, ``b.db``), one mirror
    and one catalog; configurations for them."""

    def __init__(self, root: Path, provider: str, mirror: Path, a: Path, b: Path) -> None:
        self.root, self.provider, self.mirror = root, provider, mirror
        self.primaries = {"a": a, "b": b}
        self.catalog = root / "catalog.db"

    def config(self, name: str, primary: str | None = None) -> Path:
        """Configuration ``name`` for primary ``primary`` (default: the one of the same name)."""
        disk = self.primaries[primary or name]
        mirror = {"provider": self.provider, "primary": str(disk), "mirror": str(self.mirror)}
        if self.provider == "block":  # each its own: nothing else tells a device's map is stale
            mirror["map_dir"] = str(self.root / f"maps-{name}")
        return write_toml(
            self.root / f"{name}.toml",
            session={"name": name, "catalog": str(self.catalog)},
            database={"url": f"sqlite://{disk}/{primary or name}.db", "mode": "hot-backup"},
            mirror=mirror,
            target={"path": f"{self.root}/archives/{name}-{{session}}.tar"},
        )

    def mirror_digest(self) -> str:
        if not self.mirror.exists():
            return "absent"
        if self.mirror.is_dir():
            files = sorted(p for p in self.mirror.rglob("*") if p.is_file())
            return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
        with open(self.mirror, "rb") as device:
            return hashlib.sha256(device.read()).hexdigest()

    def rows(self) -> list[tuple[int, str, str]]:
        if not self.catalog.exists():
            return []
        return [(s.id, s.name, s.status) for s in SqliteCatalog(self.catalog).sessions()]


@pytest.fixture(params=["directory", "block image", "block device"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """Primaries ``a`` and ``b``, each with its ledger, one mirror, one catalog."""
    provider = str(request.param)
    (tmp_path / "archives").mkdir()
    if provider == "directory":
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            create_ledger(tmp_path / name / f"{name}.db", rows=500)
        yield Setup(tmp_path, provider, tmp_path / "mirror", tmp_path / "a", tmp_path / "b")
        return
    reason = loop_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        disks = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            disks.append(stack.enter_context(loop_filesystem(tmp_path / name, 48 << 20)))
            create_ledger(disks[-1] / f"{name}.db", rows=500)
        mirror = tmp_path / "mirror.img"
        if provider == "block device":
            with open(mirror, "wb") as image:
                image.truncate(64 << 20)
            mirror = stack.enter_context(loop_device(mirror))
            # A device's lock and record live under /run/lock and /var/lib: this test's must go.
            for state in state_files(mirror):
                stack.callback(state.unlink, missing_ok=True)
        yield Setup(tmp_path, "block", mirror, *disks)


def backup(config: Path, *flags: str) -> Result:
    return CliRunner().invoke(main, ["backup", "--json", "--quiet", *flags, str(config)])


def verified(setup: Setup, session_id: int) -> bool:
    result = CliRunner().invoke(main, ["verify", str(session_id), "--catalog", str(setup.catalog)])
    return result.exit_code == 0


def test_a_second_primary_on_the_mirror_is_refused_naming_the_owner_until_handed_over(setup: Setup) -> None:
    a, b = setup.config("a"), setup.config("b")
    first = backup(a)
    assert first.exit_code == 0, first.output
    first_id = json.loads(first.output)["id"]
    before = (setup.mirror_digest(), setup.rows())

    owner = f"holds the primary {setup.primaries['a']} of configuration {a} (session name 'a')"
    handover = f"hand this one over with `splitmirror backup {b} --take-over-mirror`"
    for command in ("check", "backup"):
        result = CliRunner().invoke(main, [command, str(b)])
        assert result.exit_code == 3, result.output
        message = refusal(command, result.output)
        assert f"the mirror {setup.mirror} {owner}, not this configuration's primary" in message
        assert f"{setup.primaries['b']}; give each primary a mirror of its own, or {handover}" in message
    assert (setup.mirror_digest(), setup.rows()) == before, (
        "the refused session touched the mirror or catalog"
    )
    assert verified(setup, first_id), "the owner's archive is intact"

    taken = backup(b, "--take-over-mirror")
    assert taken.exit_code == 0, taken.output
    recorded = read_owner(setup.mirror)
    assert recorded is not None and (recorded.config, recorded.session) == (str(b), "b")
    refused = backup(a)
    assert refused.exit_code == 3
    assert f"of configuration {b} (session name 'b')" in json.loads(refused.output)["error"]
    assert verified(setup, first_id) and verified(setup, json.loads(taken.output)["id"])


def test_configurations_of_one_primary_share_its_mirror(setup: Setup) -> None:
    """A nightly FREEZE and an hourly HOT_BACKUP of one database: one primary, one mirror."""
    for config in (setup.config("a"), setup.config("hourly", primary="a")):
        result = backup(config)
        assert result.exit_code == 0, result.output


class Hold:
    """Holds a session at the start of ``phase`` until :attr:`release` is set."""

    def __init__(self, phase: Phase) -> None:
        self.phase = phase
        self.reached, self.release = threading.Event(), threading.Event()

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is self.phase:
            self.reached.set()
            assert self.release.wait(120), "never released"


@contextlib.contextmanager
def held(config: Path, phase: Phase) -> Iterator[Future[SessionSummary]]:
    """A session of ``config`` running in a thread, held at the start of ``phase``."""
    hold = Hold(phase)
    hooks = Hooks(load_plugins(entry_points_enabled=False))
    hooks.register(hold, "hold")
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(Session(load_config(config), hooks).run)
        try:
            while not hold.reached.wait(0.05):
                assert not future.done(), future.result()
            yield future
        finally:
            hold.release.set()


@pytest.mark.parametrize("phase", [Phase.SYNC, Phase.BACKUP])
def test_a_session_on_a_mirror_in_use_is_refused_and_the_first_finishes(
    phase: Phase, setup: Setup, tmp_path: Path
) -> None:
    """SYNC: the first is writing the mirror; BACKUP: it is archiving the split image."""
    a = setup.config("a")
    others: list[Callable[[], Path]] = [
        lambda: setup.config("b"),  # another primary
        lambda: setup.config("hourly", primary="a"),  # the same primary, another configuration
    ]
    with held(a, phase) as first:
        database = setup.primaries["b"] / "b.db"
        before = (setup.rows(), database.read_bytes(), setup.mirror_digest())
        for other in others:
            config = other()
            result = backup(config)
            assert result.exit_code == 4, result.output
            assert "Traceback" not in result.output
            message = json.loads(result.output)["error"]
            assert message.startswith(f"another session ({a}, pid ") and "started 20" in message, message
            assert message.endswith(
                f"is using the mirror {setup.mirror}; wait for it to finish, or stop it if it hangs"
            )
        after = (setup.rows(), database.read_bytes(), setup.mirror_digest())
        assert after == before, "the refused session touched the catalog, its database or the mirror"
    summary = first.result(timeout=120)
    assert summary.status == "DONE" and verified(setup, summary.id)
    assert backup(setup.config("hourly", primary="a")).exit_code == 0, "the lock went with the session"


@pytest.mark.parametrize("setup", ["block device"], indirect=True)
def test_a_mirror_handed_over_and_back_is_compared_in_full(setup: Setup) -> None:
    """``a``'s checksum map of the device, kept in its own ``map_dir``, still describes ``a``'s
    image after ``b`` took the mirror over and wrote its own: trusted, ``a``'s next pass would
    skip the chunks ``a`` did not change, and archive ``b``'s bytes under checksums computed
    from them (verify passes).  The claim token in the map's identity makes it compare all."""
    a, b = setup.config("a"), setup.config("b")
    for config, flags in ((a, ()), (b, ("--take-over-mirror",)), (a, ("--take-over-mirror",))):
        result = backup(config, *flags)
        assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    database = setup.primaries["a"] / "a.db"
    archived = {f.member: f.sha256 for f in SqliteCatalog(setup.catalog).files(summary["id"])}
    assert archived["a.db"] == hashlib.sha256(database.read_bytes()).hexdigest(), "archived b's bytes"


def test_a_directory_mirror_handed_over_and_back_is_compared_in_full(tmp_path: Path) -> None:
    """The directory mirror's fingerprints sit beside the mirror as each configuration spells
    it: ``a`` names it through a link, so its fingerprints outlive ``b``'s turn.  Trusted, they
    would skip ``a``'s unchanged ``ledger.db`` while the mirror holds ``b``'s of the same size."""
    (tmp_path / "mirror").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "mirror")
    (tmp_path / "archives").mkdir()
    configs = {}
    for name, spelled in (("a", "link"), ("b", "mirror")):
        (tmp_path / name).mkdir()
        create_ledger(tmp_path / name / "ledger.db", rows=500)
        configs[name] = write_toml(
            tmp_path / f"{name}.toml",
            session={"name": name, "catalog": str(tmp_path / "catalog.db")},
            database={"url": f"sqlite://{tmp_path / name}/ledger.db", "mode": "hot-backup"},
            mirror={"primary": str(tmp_path / name), "mirror": str(tmp_path / spelled)},
            target={"path": f"{tmp_path}/archives/{name}-{{session}}.tar"},
        )
    time.sleep(2.1)  # files changed in the last 2 s get no fingerprint (DirectorySync's racy_seconds)
    for name, flags in (("a", ()), ("b", ("--take-over-mirror",)), ("a", ("--take-over-mirror",))):
        result = backup(configs[name], *flags)
        assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    archived = {f.member: f.sha256 for f in SqliteCatalog(tmp_path / "catalog.db").files(summary["id"])}
    database = (tmp_path / "a" / "ledger.db").read_bytes()
    assert archived["ledger.db"] == hashlib.sha256(database).hexdigest(), "archived b's ledger"


def test_another_filesystem_at_the_primarys_path_is_another_primary(tmp_path: Path) -> None:
    """The primary's filesystem unmounted and another mounted there (or none: its mount point
    on the filesystem below): the sync would make the mirror a copy of that instead."""
    reason = loop_filesystem_unavailable()
    if reason:
        pytest.skip(reason)
    (tmp_path / "archives").mkdir()
    for disk in ("one", "two"):
        (tmp_path / disk).mkdir()
    with loop_filesystem(tmp_path / "one", 32 << 20) as primary:
        create_ledger(primary / "ledger.db", rows=100)
        config = write_toml(
            tmp_path / "orders.toml",
            session={"name": "orders", "catalog": str(tmp_path / "catalog.db")},
            database={"url": f"sqlite://{primary}/ledger.db", "mode": "hot-backup"},
            mirror={"primary": str(primary), "mirror": str(tmp_path / "mirror")},
            target={"path": f"{tmp_path}/archives/{{session}}.tar"},
        )
        assert backup(config).exit_code == 0
        before = read_owner(tmp_path / "mirror")
    assert before is not None and before.filesystem, "the primary's filesystem has a UUID"
    with loop_filesystem(tmp_path / "two", 32 << 20) as other:
        subprocess.run(["mount", "--move", str(other), str(primary)], check=True)
        try:
            create_ledger(primary / "ledger.db", rows=100)
            refused = backup(config)
            assert refused.exit_code == 3, refused.output
            message = json.loads(refused.output)["error"]
            assert f"holds the primary {primary} (filesystem {before.filesystem}) of configuration" in message
            assert f"not this configuration's primary {primary} (filesystem " in message
        finally:
            subprocess.run(["mount", "--move", str(primary), str(other)], check=True)


@pytest.mark.parametrize("setup", ["directory"], indirect=True)
@pytest.mark.parametrize("record", ['{"primary": ', "[]", '{"primary": 7, "config": "x"}'])
def test_an_unreadable_record_is_not_nobodys(record: str, setup: Setup) -> None:
    """A corrupt record says nothing about whose the mirror is: refused, not claimed anew, until
    the take-over; ``check --take-over-mirror`` previews that."""
    a, b = setup.config("a"), setup.config("b")
    assert backup(a).exit_code == 0
    state_files(setup.mirror)[1].write_text(record)
    before = setup.mirror_digest()
    result = CliRunner().invoke(main, ["backup", str(b)])
    assert result.exit_code == 3, result.output
    assert "ownership record" in result.output and "cannot be read" in result.output
    assert "--take-over-mirror" in result.output and setup.mirror_digest() == before
    assert CliRunner().invoke(main, ["check", "--take-over-mirror", str(b)]).exit_code == 0
    assert backup(b, "--take-over-mirror").exit_code == 0
    recorded = read_owner(setup.mirror)
    assert recorded is not None and recorded.config == str(b)


def test_the_record_names_its_host(tmp_path: Path) -> None:
    """One path on two hosts (shared storage) is two primaries."""
    here = Owner("/srv/db", None, "a.toml", "a", socket.gethostname())
    there = dataclasses.replace(here, host="db2")
    assert here.same_primary(dataclasses.replace(here, config="b.toml"))
    assert not here.same_primary(there)
    assert there.describe(here) == "/srv/db on host db2"
