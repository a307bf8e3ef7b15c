"""FIFREEZE on a real loop-device ext4 holding the database: frozen for the final pass, thawed at
CHECK, and thawed on every failure path.  Needs root; skips with the reason otherwise."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from splitmirror import impl
from splitmirror.config import load_config
from splitmirror.engines.sqlite import SqliteEngine
from splitmirror.errors import SessionFailed
from splitmirror.fsfreeze import FITHAW, Freezer
from splitmirror.hooks import Hooks
from splitmirror.phases import Mode, Phase
from splitmirror.session import Session
from splitmirror.testing.loopfs import loop_filesystem_unavailable
from splitmirror.workload import create_ledger

pytestmark = pytest.mark.skipif(
    loop_filesystem_unavailable() is not None, reason=loop_filesystem_unavailable() or ""
)


@pytest.fixture
def loop_fs(splitmirror_loop_filesystem: Path) -> Path:
    """The primary: a loop-device ext4 from splitmirror's own pytest plugin."""
    return splitmirror_loop_filesystem


def thaw(mount: Path) -> bool:
    """Thaw ``mount``; True if it was frozen (FITHAW on a thawed filesystem is EINVAL)."""
    fd = os.open(mount, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
        return True
    except OSError as error:
        assert error.errno == errno.EINVAL
        return False
    finally:
        os.close(fd)


class FreezingSqlite(SqliteEngine):
    """The SQLite engine asking SPLIT to freeze the filesystem its database lives on."""

    name = "sqlite-freezing"
    url_schemes = ("sqlitefreeze",)

    def freeze_paths(self, mode: Mode) -> list[Path]:
        return [self.path.parent]


class Probe:
    def __init__(self, mount: Path, fail_in: Phase | None = None) -> None:
        self.mount, self.fail_in = mount, fail_in
        self.frozen_in: dict[Phase, bool] = {}

    @impl
    def splitmirror_register_engines(self, register: Any) -> None:
        register(FreezingSqlite)

    @impl(wrapper=True)
    def splitmirror_phase(self, session: Session, phase: Phase) -> Generator[None, Any, Any]:
        result = yield
        if phase in (Phase.SPLIT, Phase.CHECK):
            # A write into the frozen filesystem from another process would block; ask the
            # kernel instead: a freeze attempt on a frozen filesystem fails with EBUSY.
            self.frozen_in[phase] = is_frozen(self.mount)
        if phase is self.fail_in:
            raise RuntimeError(f"injected fault in {phase.name}")
        return result


def is_frozen(mount: Path) -> bool:
    freezer = Freezer()
    try:
        freezer.freeze(mount)
    except OSError as error:
        assert error.errno == errno.EBUSY
        return True
    freezer.thaw_all()
    return False


def config_for(mount: Path, tmp_path: Path, write_config: Any) -> Any:
    create_ledger(mount / "ledger.db", rows=500)
    path = write_config(mode="freeze")
    text = path.read_text()
    text = text.replace(
        f'url = "sqlite://{tmp_path}/primary/ledger.db"', f'url = "sqlitefreeze://{mount}/ledger.db"'
    )
    text = text.replace(f'primary = "{tmp_path}/primary"', f'primary = "{mount}"')
    path.write_text(text)
    return load_config(path)


def test_split_freezes_and_check_thaws(
    loop_fs: Path, tmp_path: Path, write_config: Any, hooks: Hooks
) -> None:
    probe = Probe(loop_fs)
    hooks.register(probe, "probe")
    summary = Session(config_for(loop_fs, tmp_path, write_config), hooks).run()
    assert summary.status == "DONE"
    assert probe.frozen_in == {Phase.SPLIT: True, Phase.CHECK: False}
    assert not thaw(loop_fs), "nothing left frozen"


@pytest.mark.parametrize("phase", [Phase.SPLIT, Phase.CHECK])
def test_failure_while_frozen_thaws(
    phase: Phase, loop_fs: Path, tmp_path: Path, write_config: Any, hooks: Hooks
) -> None:
    hooks.register(Probe(loop_fs, fail_in=phase), "probe")
    with pytest.raises(SessionFailed, match=f"failed in {phase.name}"):
        Session(config_for(loop_fs, tmp_path, write_config), hooks).run()
    assert not thaw(loop_fs), "the failure path thawed the primary"
    started = time.monotonic()
    (loop_fs / "after").write_bytes(b"x")  # would hang on a frozen filesystem
    os.sync()
    assert time.monotonic() - started < 5


def test_freezing_our_own_filesystem_is_refused_before_quiescing(
    loop_fs: Path, tmp_path: Path, write_config: Any, hooks: Hooks
) -> None:
    """The catalog beside the primary on the filesystem SPLIT freezes (inside it, the file is
    refused at load: tests/test_placement.py)."""
    hooks.register(Probe(loop_fs), "probe")
    data = loop_fs / "data"
    data.mkdir()
    config = config_for(data, tmp_path, write_config)
    path = Path(config.source)
    path.write_text(
        path.read_text().replace(f'catalog = "{tmp_path}/catalog.db"', f'catalog = "{loop_fs}/catalog.db"')
    )
    with pytest.raises(Exception, match="shares a filesystem with splitmirror's own"):
        Session(load_config(path), hooks).run()
    assert not thaw(loop_fs)


def test_a_freeze_that_is_not_ours_is_never_thawed_by_us(loop_fs: Path) -> None:
    subprocess.run(["fsfreeze", "-f", str(loop_fs)], check=True)
    try:
        freezer = Freezer()
        with pytest.raises(OSError) as busy:
            freezer.freeze(loop_fs)
        assert busy.value.errno == errno.EBUSY
        assert freezer.frozen == [] and freezer.thaw_all() == []
    finally:
        assert thaw(loop_fs), "the administrator's freeze was still in place"


def test_every_filesystem_is_written_back_before_any_is_frozen(
    loop_fs: Path, tmp_path: Path, write_config: Any, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPLIT: syncfs on each filesystem it will freeze, the writers still free, then FIFREEZE on
    each: a freeze holds its writers only for what was dirtied since, and never through another
    filesystem's write-back (they were interleaved before: the first frozen waited for the
    second's)."""
    from splitmirror import fsfreeze
    from splitmirror.testing.loopfs import loop_filesystem

    calls: list[tuple[str, Path]] = []
    real_syncfs, real_ioctl = fsfreeze.syncfs, fsfreeze._ioctl

    def syncfs(path: Path) -> None:
        calls.append(("syncfs", path))
        real_syncfs(path)

    def ioctl(mount: Path, request: int) -> None:
        calls.append(("FIFREEZE" if request == fsfreeze.FIFREEZE else "FITHAW", mount))
        real_ioctl(mount, request)

    monkeypatch.setattr(fsfreeze, "syncfs", syncfs)
    monkeypatch.setattr(fsfreeze, "_ioctl", ioctl)
    (tmp_path / "second").mkdir()
    with loop_filesystem(tmp_path / "second", 16 << 20) as second:
        monkeypatch.setattr(FreezingSqlite, "freeze_paths", lambda self, mode: [self.path.parent, second])
        hooks.register(Probe(loop_fs), "probe")
        summary = Session(config_for(loop_fs, tmp_path, write_config), hooks).run()
        assert not thaw(second), "nothing left frozen"
    assert summary.status == "DONE"
    # (then the probe's own freeze attempts, and the thaws)
    assert calls[:4] == [("syncfs", loop_fs), ("syncfs", second), ("FIFREEZE", loop_fs), ("FIFREEZE", second)]
