"""A third party writes a plugin from docs/writing-a-plugin.md and runs the contract suite with
nothing but ``splitmirror.api`` and splitmirror's pytest11 fixtures.

The package's files are taken from the page's complete example (each code block that opens with
``# PATH``), pip-installed into a fresh virtual environment, and its tests run there in a
separate pytest process that knows nothing of this repository's tests.  So the page cannot
drift from what works: a signature change breaks this test, not the reader.  One more engine,
written here on top of the page's, proves the watchdog calls an installed plugin's emergency
release.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from conftest import install_in_venv, write_distribution

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "writing-a-plugin.md"

#: An engine whose mode outlives the process (a marker file, as Oracle's BEGIN BACKUP outlives
#: its session): it declares it for the watchdog, and its emergency hook notes the call.
MARKED = """
import json
from pathlib import Path

from splitmirror.api import impl
from splitmirror_tinydb import TinyWalEngine


class MarkedEngine(TinyWalEngine):
    name = "tinymarked"
    url_schemes = ("tinymarked",)

    @property
    def marker(self):
        return Path(str(self.path) + ".in-backup")

    def quiesce(self, mode):
        self.marker.write_text("in backup")
        super().quiesce(mode)

    def unquiesce(self):
        result = super().unquiesce()
        self.marker.unlink(missing_ok=True)
        return result

    def abort(self):
        super().abort()
        if Path(str(self.path) + ".abort-fails").exists():  # as Oracle's, when no connection answers
            raise RuntimeError("could not end the backup mode")
        self.marker.unlink(missing_ok=True)

    def emergency_state(self):
        return {"marker": str(self.marker)}

    @classmethod
    def emergency_release(cls, url, options, state):
        if state:
            Path(state["marker"]).unlink(missing_ok=True)


@impl
def splitmirror_register_engines(register):
    register(MarkedEngine)


@impl
def splitmirror_emergency_release(config, phase, engine_state):
    note = Path(str(config.database.url).removeprefix("tinymarked://") + ".released")
    note.write_text(json.dumps({"phase": phase, "state": engine_state}))
"""

WATCHDOG_TEST = """
import json
from pathlib import Path

import pytest
from conftest import TinyLedger
from splitmirror.api import Phase
from splitmirror.testing.contract import Fault
from splitmirror.testing.faults import run_killed


def test_the_watchdog_releases_what_a_killed_session_held(
    splitmirror_workspace, splitmirror_session, tmp_path
):
    database = TinyLedger(splitmirror_workspace.primary, "tinymarked")
    database.create_ledger()
    config = splitmirror_session.config(database, "hot-backup")
    run_killed(config.source, "SPLIT", tmp_path)
    path = Path(str(database.path))
    assert not Path(str(path) + ".in-backup").exists(), "the engine's emergency_release ended the mode"
    note = json.loads(Path(str(path) + ".released").read_text())
    assert note == {"phase": "SPLIT", "state": {"marker": str(path) + ".in-backup"}}


def test_a_release_the_session_could_not_do_is_tried_again_by_the_watchdog(
    splitmirror_workspace, splitmirror_session
):
    database = TinyLedger(splitmirror_workspace.primary, "tinymarked")
    database.create_ledger()
    path = Path(str(database.path))
    Path(str(path) + ".abort-fails").touch()
    with pytest.raises(Exception) as failed:  # noqa: B017 - SessionFailed, which the API does not name
        splitmirror_session.run(database, "hot-backup", Fault(Phase.CHECK))
    assert "could not end the backup mode" in str(failed.value)
    assert not Path(str(path) + ".in-backup").exists(), "the watchdog's second try ended the mode"
    note = json.loads(Path(str(path) + ".released").read_text())
    assert note["phase"] == "CHECK"
"""


def example_files() -> dict[str, str]:
    """The complete example's files: every code block of its section that opens with ``# PATH``."""
    section = PAGE.read_text().split("## A complete example", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n# (\S+)\n(.*?)```", section, flags=re.DOTALL)
    return {path: code for path, code in blocks}


def test_the_page_gives_a_whole_package() -> None:
    assert set(example_files()) == {
        "splitmirror_tinydb/__init__.py",
        "tests/conftest.py",
        "tests/test_contract.py",
    }
    for path, code in example_files().items():
        compile(code, path, "exec")
        imported = re.findall(r"^(?:from|import) (splitmirror\S*)", code, flags=re.MULTILINE)
        assert set(imported) <= {"splitmirror.api", "splitmirror.testing", "splitmirror.testing.contract",
                                 "splitmirror.testing.faults"}, (path, imported)  # fmt: skip


def test_the_plugin_written_from_the_docs_passes_the_contract_suite(tmp_path: Path) -> None:
    package = tmp_path / "splitmirror-tinydb"
    entry_points = {"tinydb": "splitmirror_tinydb", "tinymarked": "splitmirror_tinydb.marked"}
    write_distribution(package, "splitmirror-tinydb", "0.0.1", entry_points)
    for path, code in example_files().items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(code)
    (package / "splitmirror_tinydb" / "marked.py").write_text(MARKED)
    (package / "tests" / "test_watchdog.py").write_text(WATCHDOG_TEST)
    python = install_in_venv(package, tmp_path / "venv")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SPLITMIRROR_", "PYTEST_"))}
    proc = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsP", "tests"],
        cwd=package,
        capture_output=True,
        text=True,
        env={**environ, "SPLITMIRROR_STRICT_PLUGINS": "1"},
        timeout=900,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    # Both engines through the contract suite: the FREEZE-only one in its mode, the other in both.
    for engine, mode in [("tinydb", "freeze"), ("tinywal", "freeze"), ("tinywal", "hot-backup")]:
        assert re.search(rf"test_restore_drill\[{engine}-{mode}\] PASSED|drill {mode}, 2 writers", out), (
            engine
        )
    assert out.count("drill freeze, 2 writers:") == 2 and out.count("drill hot-backup, 2 writers:") == 1, out
    assert " 0 lost, 0 gaps" in out
    assert "the tinydb engine declares freeze only" in out, "tinydb's hot-backup tests skip, saying why"
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
