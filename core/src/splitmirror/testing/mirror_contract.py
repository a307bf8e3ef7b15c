"""The mirror-provider contract: what every mirror provider must pass, ours and third parties'.

Subclass :class:`MirrorContract` in your provider's tests and provide a ``splitmirror_mirror``
fixture returning a :class:`MirrorSetup`: a primary the provider can split (a directory, a
subvolume, a mount point: the suite puts a SQLite ledger in it) and the ``[mirror]`` keys that
name your provider.  Override :meth:`MirrorContract.split_leftovers` to say what a split leaves
behind until CLEANUP (snapshots, clones), so the suite can check nothing is left after a failure
or a killed session (``split_leaves_behind = False`` for a split that leaves nothing).  The suite
runs real sessions with ledger writers committing throughout:

- the session calls the provider in the phases' order (sync, then the split inside the
  window, reads only after it, the mirror re-established in CLEANUP);
- the split image is the primary as it was quiesced: every archived file equals the primary's
  bytes at UNQUIESCE, though the writers changed the primary before BACKUP read a byte;
- a mode that asks SPLIT to freeze the primary gets one instant (a test engine's two files,
  written in turn with no lock, agree in the image), or a ``"per-file"`` provider refuses it;
- a failure after the split re-establishes the mirror and leaves nothing behind, and the next
  session passes a restore drill;
- a session SIGKILLed after the split leaves what :meth:`~MirrorContract.split_leftovers`
  names, and the next session cleans it up;
- restore drills in both modes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from .. import impl
from ..catalog import SqliteCatalog
from ..config import load_config
from ..engine import DatabaseEngine, DatabaseFile, PreflightProblem, ServerInfo, UnquiesceResult
from ..errors import PreflightError, SessionFailed
from ..mirror.base import MirrorProvider
from ..phases import Mode, Phase
from ..session import Session
from .contract import Fault
from .database import SqliteLedgerDatabase
from .drill import SessionRunner, Workspace, _start_writers, _stop, _wait_for_acks, run_drill
from .faults import run_killed, thaw

#: The provider methods whose order the contract checks.
WATCHED = ("bulk_sync", "final_sync", "split", "open_split_copy", "split_reader", "reestablish")


@dataclasses.dataclass(frozen=True)
class MirrorSetup:
    """What a provider's tests give the contract."""

    #: Where the ledger database is created; ``[mirror] primary``.
    primary: Path
    #: ``[mirror]`` keys: ``provider`` and the provider's own.
    options: Mapping[str, Any]
    #: ``[mirror] mirror``; the workspace's ``mirror`` when None.
    mirror: Path | None = None


class _Calls:
    """Which provider method ran in which phase, in order."""

    def __init__(self) -> None:
        self.phase: Phase | None = None
        self.calls: list[tuple[str, Phase | None]] = []

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        self.phase = phase

    def wrap(self, monkeypatch: pytest.MonkeyPatch, provider: type[MirrorProvider]) -> None:
        for name in WATCHED:
            original = getattr(provider, name)

            def recorded(
                self_: MirrorProvider, *args: Any, __name: str = name, __original: Any = original
            ) -> Any:
                self.calls.append((__name, self.phase))
                return __original(self_, *args)

            monkeypatch.setattr(provider, name, recorded)

    def first(self, name: str) -> int:
        return next(i for i, (called, _phase) in enumerate(self.calls) if called == name)

    def phases_of(self, name: str) -> set[Phase | None]:
        return {phase for called, phase in self.calls if called == name}


class _PrimaryAtUnquiesce:
    """Hashes each database file on the primary when UNQUIESCE starts (the split is taken, the
    database still quiesced), then holds BACKUP back until the writers have changed one."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {}
        self.changed_before_backup = False

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        if phase is Phase.UNQUIESCE:
            self.digests = {str(f.path): _digest(f.path) for f in session.files}
        elif phase is Phase.BACKUP:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not self.changed_before_backup:
                self.changed_before_backup = any(_digest(Path(p)) != d for p, d in self.digests.items())
                time.sleep(0.01)


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return "gone"


#: Writes n to file ``a``, then n to file ``b``, n = 1, 2, ..., each write durable before the
#: next starts (O_DIRECT | O_DSYNC: on btrfs, O_DIRECT alone returns before the file's tree
#: knows; fdatasync where the filesystem refuses O_DIRECT), with no lock of its own: only one
#: instant of the disk (a frozen filesystem, an atomic snapshot: a crash image) holds a == b or
#: a == b + 1.  Between them in archive order, a file of 16 MiB that never changes: a copy made
#: file by file takes long enough over it for the writer to move on.
_PAIR_WRITER = """
import errno, mmap, os, sys
a, middle, b = sys.argv[1:4]
with open(middle, "wb") as f:
    f.write(os.urandom(16 << 20))
block = mmap.mmap(-1, 4096)
def direct(path):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT | os.O_DSYNC, 0o644)
        os.pwrite(fd, block, 0)
        return fd, False
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return os.open(path, os.O_WRONLY | os.O_CREAT, 0o644), True
files = [direct(a), direct(b)]
n = 0
while True:
    n += 1
    block[:] = n.to_bytes(8, "little") * 512
    for fd, sync in files:
        os.pwrite(fd, block, 0)
        if sync:
            os.fdatasync(fd)
"""


class _PairEngine(DatabaseEngine):
    """A database of two files kept in step by one writer and no lock: FREEZE asks SPLIT to
    freeze the filesystem, which is what makes its image one instant.  For the contract only."""

    name = "contract-pairs"
    url_schemes = ("contract-pairs",)
    modes = (Mode.FREEZE,)

    @property
    def directory(self) -> Path:
        return Path(urlsplit(self.url).path)

    def connect(self) -> ServerInfo:
        return ServerInfo("contract-pairs", "1")

    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        return []

    def layout(self) -> list[Path]:
        return [self.directory / name for name in ("a", "middle", "b")]

    def freeze_paths(self, mode: Mode) -> list[Path]:
        return [self.directory]

    def quiesce(self, mode: Mode) -> None:
        """Nothing: the freeze is the quiesce."""

    def discover(self) -> list[DatabaseFile]:
        return [DatabaseFile(path, (i,), "data") for i, path in enumerate(self.layout())]

    def unquiesce(self) -> UnquiesceResult:
        return UnquiesceResult(label="contract pairs")

    def abort(self) -> None:
        """Nothing to release."""

    @staticmethod
    @impl
    def splitmirror_register_engines(register: Callable[[type[DatabaseEngine]], None]) -> None:
        register(_PairEngine)


class MirrorContract:
    """Subclass with a ``splitmirror_mirror`` fixture (:class:`MirrorSetup`)."""

    #: Whether a split leaves something behind until CLEANUP (a snapshot, clones, a mount):
    #: then :meth:`split_leftovers` must name it, and a killed session's must be found there.
    #: None where it depends on the setup: the check is skipped.
    split_leaves_behind: ClassVar[bool | None] = True

    def split_leftovers(self, setup: MirrorSetup) -> list[str]:
        """What a split of ``setup`` leaves until CLEANUP (snapshot names, mounts)."""
        return []

    @pytest.fixture
    def mirror_runner(
        self, splitmirror_mirror: MirrorSetup, splitmirror_session: SessionRunner
    ) -> SessionRunner:
        splitmirror_session.mirror_options = dict(splitmirror_mirror.options)
        splitmirror_session.mirror_path = splitmirror_mirror.mirror
        return splitmirror_session

    @pytest.fixture
    def ledger(self, splitmirror_mirror: MirrorSetup) -> SqliteLedgerDatabase:
        return SqliteLedgerDatabase(splitmirror_mirror.primary)

    @pytest.fixture
    def writing(self, ledger: SqliteLedgerDatabase, mirror_runner: SessionRunner) -> Iterator[None]:
        """Ledger writers committing from before the session to after it."""
        ledger.create_ledger()
        acks = {w: mirror_runner.workspace.root / f"contract-acks-{w}.txt" for w in (1, 2)}
        procs = _start_writers(ledger, acks)
        try:
            _wait_for_acks(procs, acks, 10)
            yield
        finally:
            _stop(procs)

    def _provider(self, runner: SessionRunner, setup: MirrorSetup) -> type[MirrorProvider]:
        return runner.hooks().mirrors.get(str(setup.options["provider"]))

    def test_the_session_calls_the_provider_in_the_phases_order(
        self,
        splitmirror_mirror: MirrorSetup,
        mirror_runner: SessionRunner,
        ledger: SqliteLedgerDatabase,
        writing: None,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        calls = _Calls()
        calls.wrap(monkeypatch, self._provider(mirror_runner, splitmirror_mirror))
        mirror_runner.run(ledger, "freeze", calls)
        assert calls.phases_of("bulk_sync") == {Phase.SYNC}, calls.calls
        assert calls.phases_of("final_sync") == {Phase.SPLIT} == calls.phases_of("split"), calls.calls
        assert calls.first("bulk_sync") < calls.first("final_sync") < calls.first("split"), calls.calls
        reads = [i for i, (name, _p) in enumerate(calls.calls) if name in ("open_split_copy", "split_reader")]
        assert reads and min(reads) > calls.first("split"), "the split image is read only after the split"
        assert Phase.CLEANUP in calls.phases_of("reestablish"), calls.calls
        assert max(reads) < calls.first("reestablish"), "nothing is read once the mirror is re-established"
        assert self.split_leftovers(splitmirror_mirror) == []

    def test_the_split_image_is_the_primary_as_it_was_quiesced(
        self, mirror_runner: SessionRunner, ledger: SqliteLedgerDatabase, writing: None
    ) -> None:
        at_unquiesce = _PrimaryAtUnquiesce()
        summary = mirror_runner.run(ledger, "freeze", at_unquiesce)
        assert at_unquiesce.changed_before_backup, "the writers did not change the primary before BACKUP"
        archived = {
            f.path: f.sha256 for f in SqliteCatalog(mirror_runner.workspace.catalog).files(summary.id)
        }
        assert at_unquiesce.digests, "no database file was discovered"
        for path, digest in at_unquiesce.digests.items():
            assert archived[path] == digest, f"{path} in the archive is not the primary as it was quiesced"

    @pytest.mark.parametrize("phase", [Phase.CHECK, Phase.BACKUP])
    def test_a_failure_after_the_split_leaves_nothing_and_the_next_session_passes(
        self,
        phase: Phase,
        splitmirror_mirror: MirrorSetup,
        mirror_runner: SessionRunner,
        ledger: SqliteLedgerDatabase,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        ledger.create_ledger()
        calls = _Calls()
        calls.wrap(monkeypatch, self._provider(mirror_runner, splitmirror_mirror))
        with pytest.raises(SessionFailed, match=f"injected fault in {phase.name}"):
            mirror_runner.run(ledger, "freeze", calls, Fault(phase))
        assert calls.first("split") < calls.first("reestablish"), calls.calls
        assert self.split_leftovers(splitmirror_mirror) == [], "the failed session's split is left behind"
        report = run_drill(ledger, mirror_runner, "freeze", writers=2)
        assert report.passed, str(report)

    def test_a_session_killed_after_the_split_is_cleaned_up_by_the_next(
        self, splitmirror_mirror: MirrorSetup, mirror_runner: SessionRunner, ledger: SqliteLedgerDatabase
    ) -> None:
        ledger.create_ledger()
        config = mirror_runner.config_file(ledger.url, "freeze", ledger.options, ledger.primary)
        killed = run_killed(config, "SPLIT", mirror_runner.workspace.root)
        assert SqliteCatalog(mirror_runner.workspace.catalog).get(killed.session_id).status == "FAILED"
        left = self.split_leftovers(splitmirror_mirror)
        assert self.split_leaves_behind is None or bool(left) == self.split_leaves_behind, (
            f"after a split, split_leftovers() names {left}: name what the split leaves until CLEANUP "
            "(override split_leftovers), or set split_leaves_behind = False"
        )
        summary = mirror_runner.run(ledger, "freeze")
        assert summary.status == "DONE"
        assert self.split_leftovers(splitmirror_mirror) == [], "the killed session's split is still there"

    def test_a_mode_that_freezes_the_primary_gets_one_instant_or_is_refused(
        self, splitmirror_mirror: MirrorSetup, mirror_runner: SessionRunner
    ) -> None:
        """Two files written one after the other, with no lock but the freeze SPLIT sets: in the
        image, ``a`` is ``b`` or one ahead.  A copy made file by file while they are written
        breaks that; a provider whose split cannot run under a freeze must refuse in preflight."""
        primary = splitmirror_mirror.primary
        pairs, url = [primary / "a", primary / "b"], f"contract-pairs://{primary}"
        mirror_runner.plugins.append(_PairEngine)
        writer = subprocess.Popen(
            [sys.executable, "-c", _PAIR_WRITER, str(pairs[0]), str(primary / "middle"), str(pairs[1])]
        )
        try:
            deadline = time.monotonic() + 60
            while not all(p.exists() and _head(p) for p in pairs):
                assert writer.poll() is None, f"the pair writer exited with {writer.returncode}"
                assert time.monotonic() < deadline, "the pair writer wrote nothing in 60 s"
                time.sleep(0.01)
            config = load_config(mirror_runner.config_file(url, "freeze", primary=primary))
            provider = mirror_runner.hooks().mirrors.get(str(splitmirror_mirror.options["provider"]))
            if provider.split_instant == "per-file":
                with pytest.raises(PreflightError, match="frozen at the split"):
                    Session(config, mirror_runner.hooks()).run()
                return
            before = _head(pairs[0])
            summary = Session(config, mirror_runner.hooks()).run()
            assert writer.poll() is None and _head(pairs[0]) > before, "the writer wrote through the session"
        finally:
            writer.kill()
            try:
                writer.wait(10)
            except subprocess.TimeoutExpired:  # held by a filesystem the provider left frozen
                thaw(primary)
                writer.wait(10)
        members = {f.path: f.member for f in SqliteCatalog(mirror_runner.workspace.catalog).files(summary.id)}
        with tarfile.open(summary.archive or "") as archive:
            a, b = (_counter(archive, members[str(path)]) for path in pairs)
        assert a - b in (0, 1), f"a = {a}, b = {b}: the split is not one instant"

    @pytest.mark.parametrize("mode", ["freeze", "hot-backup"])
    def test_a_restore_drill(
        self, mode: str, mirror_runner: SessionRunner, ledger: SqliteLedgerDatabase
    ) -> None:
        report = run_drill(ledger, mirror_runner, mode)
        assert report.acknowledged > 0 and report.passed, str(report)


def leftovers_named(directory: Path, match: Callable[[str], bool]) -> list[str]:
    """Names in ``directory`` that ``match``: a helper for :meth:`MirrorContract.split_leftovers`."""
    return sorted(p.name for p in directory.iterdir() if match(p.name)) if directory.is_dir() else []


def command_recipe(scripts: Path, workspace: Workspace, variant: str) -> dict[str, Any]:
    """``[mirror]`` keys of the command mirror's loop-device recipe (docs/mirrors.md) with its
    scripts in ``scripts``: the split image read by extent from the mirror image file
    (``variant`` "device") or mounted read-only at ``<workspace>/split-image`` ("mountpoint")."""
    image = str(workspace.root / "mirror.img")
    keys: dict[str, Any] = {
        "provider": "command",
        **{f"{step}_command": [str(scripts / f"loop-{step}"), image] for step in ("sync", "split", "resync")},
    }
    if variant == "mountpoint":
        (workspace.root / "split-image").mkdir(exist_ok=True)
        keys["image_mountpoint"] = str(workspace.root / "split-image")
    else:
        keys["image_device"] = image
    return keys


def _head(path: Path) -> int:
    """The pair writer's counter as the primary's file holds it now (0 before its first write)."""
    with open(path, "rb") as f:
        return int.from_bytes(f.read(8).ljust(8, b"\0"), "little")


def _counter(archive: tarfile.TarFile, member: str) -> int:
    """The pair writer's counter in ``member``: every 8 bytes of its 4 KiB must agree."""
    extracted = archive.extractfile(member)
    assert extracted is not None, member
    data = extracted.read()
    values = {data[i : i + 8] for i in range(0, len(data), 8)}
    assert len(values) == 1, f"{member} is torn within one write"
    return int.from_bytes(values.pop(), "little")
