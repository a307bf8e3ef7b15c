"""Every hook is documented with its exact signature, and called where its documentation says."""

from __future__ import annotations

import inspect
import re
from collections import defaultdict
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import pytest

from splitmirror import hookspecs, impl
from splitmirror.catalog import CatalogAddress, SessionSummary, catalog_class
from splitmirror.config import Config
from splitmirror.errors import CatalogError
from splitmirror.hooks import Hooks
from splitmirror.phases import PHASE_ORDER, Phase
from splitmirror.session import Session

ROOT = Path(__file__).resolve().parent.parent
HOOKS = {name: fn for name, fn in vars(hookspecs).items() if name.startswith("splitmirror_")}


def documented() -> dict[str, str]:
    text = (ROOT / "docs" / "hooks.md").read_text()
    return dict(re.findall(r"^(splitmirror_\w+)(\(.*\) -> .*)$", text, flags=re.MULTILINE))


def signature(fn: object) -> str:
    return str(inspect.signature(fn)).replace("'", "")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_documented_with_matching_signature(name: str) -> None:
    docs = documented()
    assert name in docs, f"{name} is missing from docs/hooks.md"
    assert docs[name] == signature(HOOKS[name])


def test_docs_list_no_hook_that_does_not_exist() -> None:
    assert set(documented()) <= set(HOOKS)


class Recorder:
    """Implements every hook and remembers each call, so a test can see that the code calls it."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    @impl
    def splitmirror_register_engines(self, register: Callable[[type], None]) -> None:
        self.calls["splitmirror_register_engines"].append((register,))

    @impl
    def splitmirror_register_mirrors(self, register: Callable[[type], None]) -> None:
        self.calls["splitmirror_register_mirrors"].append((register,))

    @impl
    def splitmirror_register_targets(self, register: Callable[[type], None]) -> None:
        self.calls["splitmirror_register_targets"].append((register,))

    @impl
    def splitmirror_register_catalogs(self, register: Callable[[type], None]) -> None:
        self.calls["splitmirror_register_catalogs"].append((register,))

    @impl(wrapper=True)
    def splitmirror_phase(self, session: Session, phase: Phase) -> Generator[None, Any, Any]:
        self.calls["splitmirror_phase"].append((phase,))
        return (yield)

    @impl
    def splitmirror_phase_started(self, session: Session, phase: Phase) -> None:
        self.calls["splitmirror_phase_started"].append((phase,))

    @impl
    def splitmirror_phase_finished(
        self, session: Session, phase: Phase, duration_s: float, error: BaseException | None
    ) -> None:
        self.calls["splitmirror_phase_finished"].append((phase, duration_s, error))

    @impl
    def splitmirror_progress(self, session: Session, phase: Phase, done: int, total: int | None) -> None:
        self.calls["splitmirror_progress"].append((phase, done, total))

    @impl
    def splitmirror_session_finished(self, session: Session, summary: SessionSummary) -> None:
        self.calls["splitmirror_session_finished"].append((summary.status,))

    @impl
    def splitmirror_emergency_release(
        self, config: Config, phase: str, engine_state: Mapping[str, Any] | None
    ) -> None:
        self.calls["splitmirror_emergency_release"].append((phase, engine_state))


def test_recorder_implements_every_hook() -> None:
    assert {name for name in vars(Recorder) if name.startswith("splitmirror_")} == set(HOOKS)


def test_every_hook_is_called_by_the_code_that_promises_it(
    ledger: Path, make_config: Callable[..., Config], hooks: Hooks
) -> None:
    """A real SQLite session calls the registry and session hooks with what docs/hooks.md says;
    a catalog URL asks ``splitmirror_register_catalogs``; the watchdog's facade calls
    ``splitmirror_emergency_release`` (the watchdog's own process
    doing so for an installed plugin is proven in test_contract_thirdparty.py)."""
    recorder = Recorder()
    remove = hooks.register(recorder, "recorder")
    try:
        config = make_config()
        Session(config, hooks).run()
        assert hooks.emergency_release(config, "SPLIT", {"held": 1}) == []
        with pytest.raises(CatalogError, match="no installed catalog opens nosuch:// URLs"):
            catalog_class(CatalogAddress("nosuch://catalog/db"), hooks)  # a URL asks the catalogs
    finally:
        remove()
    calls = recorder.calls
    assert set(calls) == set(HOOKS), f"never called: {sorted(set(HOOKS) - set(calls))}"
    for name in ("splitmirror_phase", "splitmirror_phase_started"):
        assert [phase for (phase,) in calls[name]] == list(PHASE_ORDER), name
    assert [call[0] for call in calls["splitmirror_phase_finished"]] == list(PHASE_ORDER)
    assert all(error is None and duration >= 0 for _p, duration, error in calls["splitmirror_phase_finished"])
    backup = [(done, total) for phase, done, total in calls["splitmirror_progress"] if phase is Phase.BACKUP]
    assert backup and backup[-1][0] == backup[-1][1], "BACKUP reports its progress up to its total"
    assert calls["splitmirror_session_finished"] == [("DONE",)]
    assert calls["splitmirror_emergency_release"] == [("SPLIT", {"held": 1})]


def test_every_hook_is_prefixed_and_marked() -> None:
    for name, fn in HOOKS.items():
        assert hasattr(fn, "splitmirror_spec"), f"{name} lacks the hookspec marker"
