"""A third party can run the contract suite with nothing but splitmirror's pytest11 fixtures.

A tiny plugin distribution is written out, pip-installed into a fresh virtual environment, and
its own test suite (a conftest with one fixture and a test module with one class) runs there in
a separate pytest process that knows nothing of this repository's tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import install_in_venv, write_distribution

PLUGIN = '''
"""tinydb: the SQLite engine under another URL scheme, as a third party would ship it.

Its quiesce also enters a mode that outlives the process (a marker file, as Oracle's BEGIN
BACKUP outlives its session): it declares it for the watchdog, and its emergency hook notes
when the watchdog called it."""
import json
from pathlib import Path

from splitmirror import impl
from splitmirror.engines.sqlite import SqliteEngine


class TinyEngine(SqliteEngine):
    name = "tinydb"
    url_schemes = ("tinydb",)

    @property
    def marker(self):
        return Path(self.url.removeprefix("tinydb://") + ".in-backup")

    def quiesce(self, mode):
        self.marker.write_text("in backup")
        super().quiesce(mode)

    def unquiesce(self):
        result = super().unquiesce()
        self.marker.unlink(missing_ok=True)
        return result

    def abort(self):
        super().abort()
        self.marker.unlink(missing_ok=True)

    def emergency_state(self):
        return {"marker": str(self.marker)}

    @classmethod
    def emergency_release(cls, url, options, state):
        if state:
            Path(state["marker"]).unlink(missing_ok=True)


@impl
def splitmirror_register_engines(register):
    register(TinyEngine)


@impl
def splitmirror_emergency_release(config, phase, engine_state):
    note = Path(str(config.database.url).removeprefix("tinydb://") + ".released")
    note.write_text(json.dumps({"phase": phase, "state": engine_state}))
'''

CONFTEST = """
import pytest
from splitmirror.testing import SqliteLedgerDatabase


class TinyLedger(SqliteLedgerDatabase):
    def __init__(self, primary):
        super().__init__(primary)
        self.url = f"tinydb://{self.path}"


@pytest.fixture
def splitmirror_database(splitmirror_workspace):
    return TinyLedger(splitmirror_workspace.primary)


@pytest.fixture
def splitmirror_writers():
    return 2
"""

TESTS = """
from splitmirror.testing.contract import DatabaseContract


class TestTinyDb(DatabaseContract):
    pass


def test_the_engine_under_test_is_ours(splitmirror_database, splitmirror_session):
    splitmirror_database.create_ledger()
    assert splitmirror_session.run(splitmirror_database, "freeze").database == "tinydb"


def test_the_watchdog_releases_what_a_killed_session_held(
    splitmirror_database, splitmirror_session, tmp_path
):
    import json
    from pathlib import Path
    from splitmirror.testing.faults import run_killed

    splitmirror_database.create_ledger()
    config = splitmirror_session.config(splitmirror_database, "freeze")
    run_killed(config.source, "SPLIT", tmp_path)
    path = Path(str(splitmirror_database.path))
    assert not Path(str(path) + ".in-backup").exists(), "the engine's emergency_release ended the mode"
    note = json.loads(Path(str(path) + ".released").read_text())
    assert note == {"phase": "SPLIT", "state": {"marker": str(path) + ".in-backup"}}
"""


def test_contract_suite_runs_from_a_separate_plugin_package(tmp_path: Path) -> None:
    package = tmp_path / "splitmirror-tinydb"
    (package / "splitmirror_tinydb").mkdir(parents=True)
    (package / "tests").mkdir()
    write_distribution(package, "splitmirror-tinydb", "0.0.1", {"tinydb": "splitmirror_tinydb"})
    (package / "splitmirror_tinydb" / "__init__.py").write_text(PLUGIN)
    (package / "tests" / "conftest.py").write_text(CONFTEST)
    (package / "tests" / "test_contract.py").write_text(TESTS)
    python = install_in_venv(package, tmp_path / "venv")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SPLITMIRROR_", "PYTEST_"))}
    proc = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rP", "tests"],
        cwd=package,
        capture_output=True,
        text=True,
        env={**environ, "SPLITMIRROR_STRICT_PLUGINS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "22 passed" in proc.stdout
    assert "drill freeze, 2 writers:" in proc.stdout and " 0 lost, 0 gaps" in proc.stdout
