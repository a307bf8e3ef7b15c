"""The time line above the summary's table: the window always visible, nothing wider than the console."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from splitmirror.catalog.base import PhaseRecord, SessionSummary
from splitmirror.phases import PHASE_ORDER
from splitmirror.report import print_summary
from splitmirror.timeline import print_timeline, timeline

#: Minutes of SYNC and BACKUP around a window of 23.4 ms: the window is 0.01% of the session.
MINUTES = {
    "INIT": 2_000.0,
    "MAP": 8_000.0,
    "SYNC": 120_000.0,
    "QUIESCE": 2.1,
    "DISCOVER": 0.5,
    "PREPARE": 0.3,
    "SPLIT": 19.0,
    "CHECK": 1.2,
    "UNQUIESCE": 0.3,
    "BACKUP": 60_000.0,
    "CLEANUP": 2_000.0,
}


def session(
    durations: dict[str, float], *, failed: str | None = None, window_ms: float | None = None
) -> SessionSummary:
    """A session that ran the phases of ``durations`` (in phase order), up to ``failed``."""
    phases = []
    for phase in PHASE_ORDER:
        if phase.name not in durations:
            break
        error = "the target is full" if phase.name == failed else None
        phases.append(PhaseRecord(phase.name, "2026-01-01T00:00:00.000+00:00", durations[phase.name], error))
        if error:
            break
    return SessionSummary(
        id=7,
        name="orders",
        status="FAILED" if failed else "DONE",
        mode="freeze",
        database="sqlite",
        database_url="sqlite:///srv/orders.db",
        config="orders.toml",
        started_at="2026-01-01T00:00:00.000+00:00",
        window_ms=window_ms,
        failed_phase=failed,
        error="the target is full" if failed else None,
        phases=phases,
    )


def render(summary: SessionSummary, width: int) -> list[str]:
    console = Console(record=True, width=width, file=io.StringIO())
    print_timeline(console, summary)
    return console.export_text().splitlines()


def window_edges(bar: str) -> tuple[int, int]:
    """The columns of the window's two edge marks in the bar."""
    marks = [column for column, char in enumerate(bar) if char in "╫┃"]
    assert len(marks) == 2, bar
    return marks[0], marks[1]


def test_a_window_of_a_ten_thousandth_of_the_session_is_drawn_and_bracketed() -> None:
    header, labels, bar, bracket = render(session(MINUTES, window_ms=23.4), 80)
    left, right = window_edges(bar)
    assert bar[left] == bar[right] == "╫"  # magnified: break marks, and the header says by how much
    assert right - left - 1 >= 6  # a cell at least for each of the window's six phases
    assert "the window between ╫ drawn ×" in header
    assert (bracket.index("└"), bracket.index("┘")) == (left, right)
    assert "window 23.4 ms" in bracket[left:right]
    assert "SPLIT" in labels[left:right]  # the window's longest phase, named inside it
    assert "SYNC 2 min 0 s" in labels[:left] and "BACKUP" in labels[right:]


def test_a_window_long_enough_is_drawn_to_scale() -> None:
    durations = dict.fromkeys(MINUTES, 10.0)
    header, _labels, bar, bracket = render(session(durations, window_ms=60.0), 80)
    left, right = window_edges(bar)
    assert bar[left] == bar[right] == "┃" and "╫" not in header
    assert right - left - 1 == pytest.approx(78 * 6 / 11, abs=2)
    assert "window 60.0 ms" in bracket


def test_a_session_failed_in_backup_is_red_where_it_stopped_and_keeps_its_window() -> None:
    summary = session(MINUTES, failed="BACKUP", window_ms=23.4)
    _header, _labels, bar, bracket = render(summary, 80)
    left, right = window_edges(bar)
    assert bar[left] == "╫" and bar.rstrip().endswith("✗") and bar.index("✗") > right
    assert "window 23.4 ms" in bracket
    failed = [line for line in timeline(summary, 80) if "✗" in line]
    assert len(failed) == 1 and re.search(r"\[bold red\][█▒]*✗\[/\]", failed[0])


def test_a_session_failed_in_sync_has_no_window() -> None:
    lines = render(session(MINUTES, failed="SYNC"), 80)
    assert len(lines) == 3  # header, labels, bar: no bracket
    assert not any(mark in "".join(lines) for mark in ("╫", "┃", "└", "window"))
    assert lines[2].rstrip().endswith("✗")


def test_a_session_killed_in_a_phase_it_never_recorded_still_shows_where() -> None:
    summary = session({name: MINUTES[name] for name in ("INIT", "MAP", "SYNC")})
    summary.status, summary.failed_phase = "FAILED", "QUIESCE"  # the watchdog closed the row
    _header, _labels, bar, bracket = render(summary, 80)
    left, right = window_edges(bar)
    assert bar[right - 1] == "✗" and "✗" not in bar[:left]
    assert "window -" in bracket  # its length was never measured


def test_phases_of_no_duration_each_get_a_cell() -> None:
    zero = dict.fromkeys(MINUTES, 0.0)
    header, _labels, bar, bracket = render(session(zero, window_ms=0.0), 40)
    assert header == "time line 0.0 ms"
    assert len(bar) == 40 and " " not in bar  # every phase a span, in one bar
    assert "window 0.0 ms" in bracket


@pytest.mark.parametrize("width", [40, 80, 200])
@pytest.mark.parametrize(
    "summary",
    [
        session(MINUTES, window_ms=23.4),
        session(MINUTES, failed="SPLIT", window_ms=21.2),
        session(MINUTES, failed="SYNC"),
        session(dict.fromkeys(MINUTES, 0.0), window_ms=0.0),
        session({**MINUTES, "QUIESCE": 3_600_000.0}, window_ms=3_600_023.4),
    ],
    ids=["done", "failed-in-split", "failed-in-sync", "zero", "hour-long-window"],
)
def test_no_line_is_wider_than_the_console(summary: SessionSummary, width: int) -> None:
    lines = render(summary, width)
    assert lines and all(len(line) <= width for line in lines), "\n".join(lines)
    assert len(lines[2]) == width  # the bar fills the width, on one line
    if summary.window_ms is not None:
        left, right = window_edges(lines[2])
        assert (lines[3].index("└"), lines[3].index("┘")) == (left, right)
        assert "window" in lines[3]


def test_too_narrow_for_a_cell_a_phase_draws_nothing() -> None:
    assert render(session(MINUTES, window_ms=23.4), 12) == []
    assert len(render(session(MINUTES, window_ms=23.4), 13)) == 4


def test_the_summary_shows_the_picture_above_the_table() -> None:
    console = Console(record=True, width=80, file=io.StringIO())
    print_summary(console, session(MINUTES, window_ms=23.4))
    text = console.export_text()
    assert text.index("time line") < text.index("└─ window 23.4 ms ─┘") < text.index("UNQUIESCE")


def test_backup_prints_the_time_line(ledger: Path, write_config: Any) -> None:
    """Through the command line, piped: 200 columns, the window bracketed under the bar."""
    proc = subprocess.run(
        [sys.executable, "-m", "splitmirror", "backup", str(write_config(mode="freeze"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("time line "))
    bar, bracket = lines[header + 2], lines[header + 3]
    assert len(bar) == 200 and all(len(line) <= 200 for line in lines)
    left, right = window_edges(bar)
    assert (bracket.index("└"), bracket.index("┘")) == (left, right)
    assert "window " in bracket and " ms" in bracket
