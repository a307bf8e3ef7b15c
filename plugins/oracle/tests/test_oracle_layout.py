"""Which archived logs a backup needs (:func:`splitmirror_oracle.layout.window_logs`): pure
functions over ``v$archived_log`` rows, no database."""

from __future__ import annotations

import pytest

from splitmirror_oracle.layout import ARCHIVED_LOGS_SQL, ArchivedLog, LogsMissing, window_logs


def log(sequence: int, first: int, next_: int, dest: int = 1, thread: int = 1) -> ArchivedLog:
    return ArchivedLog(f"/arch{dest}/{thread}_{sequence}.arc", thread, sequence, first, next_, dest)


def everywhere(name: str) -> bool:
    return True


def test_the_logs_from_the_begin_scn_to_past_the_end_scn() -> None:
    logs = [log(6, 10, 100), log(7, 100, 200), log(8, 200, 300), log(9, 300, 400)]
    chosen = window_logs(logs, 150, 250, everywhere)
    assert [x.sequence for x in chosen] == [7, 8]


def test_a_missing_sequence_is_named() -> None:
    with pytest.raises(LogsMissing, match="destination 1: thread 1 lacks sequence 8"):
        window_logs([log(7, 100, 200), log(9, 300, 400)], 150, 350, everywhere)


def test_a_backup_whose_end_is_not_archived_yet_is_refused() -> None:
    with pytest.raises(LogsMissing, match="thread 1 has no archived log past SCN 250"):
        window_logs([log(7, 100, 200), log(8, 200, 250)], 150, 250, everywhere)


def test_the_first_destination_that_has_every_log_here_is_taken() -> None:
    logs = [
        log(7, 100, 200, dest=1),
        log(8, 200, 300, dest=1),
        log(7, 100, 200, dest=2),
        log(8, 200, 300, dest=2),
    ]
    chosen = window_logs(logs, 150, 250, lambda name: not name.startswith("/arch1/1_8"))
    assert [x.name for x in chosen] == ["/arch2/1_7.arc", "/arch2/1_8.arc"]


def test_nothing_archived_is_one_sentence() -> None:
    with pytest.raises(LogsMissing, match="no archived log covers the backup's SCNs 150 to 250"):
        window_logs([log(6, 10, 100)], 150, 250, everywhere)


def test_every_thread_must_reach_past_the_end() -> None:
    logs = [log(7, 100, 300), log(3, 90, 200, thread=2)]
    with pytest.raises(LogsMissing, match="thread 2 has no archived log past SCN 250"):
        window_logs(logs, 150, 250, everywhere)


def test_a_log_registered_twice_is_one_log() -> None:
    logs = [log(7, 100, 200), log(7, 100, 200), log(8, 200, 300)]
    assert [x.sequence for x in window_logs(logs, 150, 250, everywhere)] == [7, 8]


def test_the_query_keeps_to_the_current_incarnation() -> None:
    """After a RESETLOGS the old branch's logs share SCNs with the new one's."""
    assert "resetlogs_change# = (SELECT resetlogs_change# FROM v$database)" in ARCHIVED_LOGS_SQL
