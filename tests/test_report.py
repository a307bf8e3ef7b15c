"""What the DBA reads after a session: the sync passes line."""

from __future__ import annotations

from splitmirror.report import sync_passes


def test_sync_passes_before_and_in_the_window() -> None:
    stats = {
        "bulk_sync": {"passes": [1 << 30, 512 << 10], "tracking": "tracked"},
        "final_sync": {"passes": [64 << 10], "tracking": "tracked"},
    }
    before, during = "1.0 GiB, 512.0 KiB before QUIESCE", "64.0 KiB in the window"
    assert sync_passes(stats) == f"sync passes {before}, {during} (tracked)"


def test_a_session_failed_before_split_shows_no_blank_final_pass() -> None:
    """A failed session's report once read "516.0 KiB before QUIESCE,  in the window"."""
    line = sync_passes({"bulk_sync": {"passes": [516 << 10]}})
    assert line == "sync passes 516.0 KiB before QUIESCE"


def test_no_passes_no_line() -> None:
    assert sync_passes({}) == ""
