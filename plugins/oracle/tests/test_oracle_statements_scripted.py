"""What the engine says to Oracle and in which order, checked against a *scripted* instance
(:mod:`scripted_oracle`: not Oracle, a stand-in that records statements).  These run everywhere;
whether Oracle itself takes the statements is for the container tests, where the image can be
pulled.  Each test names the mechanism it guards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import oracledb
import pytest
from scripted_oracle import ScriptedOracle, oracle_error

from splitmirror.api import Mode
from splitmirror_oracle import connection, release
from splitmirror_oracle.engine import BackupFailed, OracleEngine, OracleOptions

URL = "oracle://c##splitmirror@db.example:1521/FREE"


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedOracle]:
    """The scripted instance; every test ends by checking that nothing the engine sent would
    have waited for RESUME on a real one (a control-file view read while suspended)."""
    scripted = ScriptedOracle(tmp_path / "oradata")
    monkeypatch.setattr(connection, "connect", scripted.connect)
    yield scripted
    assert scripted.waited == [], "read while suspended, which Oracle holds until RESUME"


def engine(**options: object) -> OracleEngine:
    return OracleEngine(URL, OracleOptions.model_validate(options))


def connected(**options: object) -> OracleEngine:
    """Connected, and through preflight (which reads the database's facts), as in a session."""
    found = engine(**options)
    found.connect()
    found.preflight(Mode.HOT_BACKUP)
    return found


def backup(instance: ScriptedOracle, mode: Mode) -> tuple[OracleEngine, object]:
    """The engine's calls in a session's order, preflight to close."""
    session = connected()
    assert session.preflight(mode) == []
    session.layout()
    instance.statements.clear()
    session.quiesce(mode)
    session.discover()
    session.prepare()
    result = session.unquiesce()
    session.close()
    return session, result


def test_hot_backup_switches_the_log_enters_backup_mode_and_ends_it_with_a_control_file(
    instance: ScriptedOracle,
) -> None:
    _session, result = backup(instance, Mode.HOT_BACKUP)
    assert instance.alters() == [
        "ALTER SYSTEM ARCHIVE LOG CURRENT",
        "ALTER DATABASE BEGIN BACKUP",
        "ALTER DATABASE END BACKUP",
        "ALTER SYSTEM ARCHIVE LOG CURRENT",
        f"ALTER DATABASE BACKUP CONTROLFILE TO '{instance.oradata}/splitmirror-backup.ctl' REUSE",
    ]
    assert instance.in_backup == set() and instance.database_status == "ACTIVE"
    redo = result.redo_range  # type: ignore[attr-defined]
    assert redo["begin_scn"] < redo["end_scn"]
    # The log archived after END BACKUP holds the whole backup; the one archived before does not.
    assert redo["archived_logs"] == [instance.archived[-1][0]]
    collected = [(f.role, f.logical_key) for f in result.collected_files]  # type: ignore[attr-defined]
    assert collected == [("archived-log", (2, 1, 8)), ("backup-controlfile", (3,))]


def test_freeze_suspends_inside_backup_mode_and_reads_no_control_file_while_suspended(
    instance: ScriptedOracle,
) -> None:
    """Oracle holds a query that reads the control file until RESUME: DISCOVER and PREPARE
    answer from what QUIESCE read just before SUSPEND."""
    session, result = backup(instance, Mode.FREEZE)
    assert instance.alters()[:4] == [
        "ALTER DATABASE BEGIN BACKUP",
        "ALTER SYSTEM SUSPEND",
        "ALTER SYSTEM RESUME",
        "ALTER DATABASE END BACKUP",
    ]
    assert instance.waited == []
    assert [f.path for f in session.discover()] == [Path(d[1]) for d in instance.datafiles]
    assert result.redo_range["archived_logs"]  # type: ignore[attr-defined]


def test_datafiles_are_in_container_tablespace_and_file_order(instance: ScriptedOracle) -> None:
    instance.datafiles.reverse()
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    keys = [f.logical_key for f in session.discover()]
    session.abort()
    assert keys == sorted(keys) and keys[0] == (0, 1, 0, 1) and keys[-1] == (0, 3, 0, 3)


def test_a_failed_suspend_still_ends_backup_mode(instance: ScriptedOracle) -> None:
    instance.fail_on = ("SUSPEND", oracle_error("ORA-00600: internal error"))
    session = connected()
    with pytest.raises(BackupFailed, match="refused to enter backup mode: ORA-00600"):
        session.quiesce(Mode.FREEZE)
    session.abort()
    assert instance.in_backup == set() and instance.database_status == "ACTIVE"
    assert instance.alters()[-1] == "ALTER DATABASE END BACKUP"


def test_a_killed_connection_is_released_on_a_fresh_one(instance: ScriptedOracle) -> None:
    """Closing the connection ends backup mode for no one: abort must open another."""
    session = connected()
    session.quiesce(Mode.FREEZE)
    instance.connections[0].killed = True
    session.abort()
    assert len(instance.connections) == 2 and instance.connections[1].closed
    assert instance.in_backup == set() and instance.database_status == "ACTIVE"
    assert instance.alters()[-2:] == ["ALTER SYSTEM RESUME", "ALTER DATABASE END BACKUP"]


def test_the_emergency_release_resumes_then_ends_backup_mode_and_is_idempotent(
    instance: ScriptedOracle,
) -> None:
    session = connected()
    state = session.emergency_state()
    session.quiesce(Mode.FREEZE)  # and the process "dies": nothing released
    OracleEngine.emergency_release(URL, OracleOptions(), state)
    assert instance.alters()[-2:] == ["ALTER SYSTEM RESUME", "ALTER DATABASE END BACKUP"]
    assert instance.in_backup == set() and instance.database_status == "ACTIVE"
    before = len(instance.statements)
    OracleEngine.emergency_release(URL, OracleOptions(), state)
    again = [s for s in instance.statements[before:] if s.startswith("ALTER")]
    assert again == ["ALTER SYSTEM RESUME"], "a second release: RESUME (a no-op) and nothing else"
    OracleEngine.emergency_release(URL, OracleOptions(), None)
    assert len(instance.connections) == 3, "no state: nothing was entered, no connection"


def test_the_emergency_release_issues_resume_even_when_the_instance_says_active(
    instance: ScriptedOracle,
) -> None:
    """A session that died while SUSPEND was finishing may have left v$instance saying ACTIVE
    for a moment: RESUME is issued whatever the status, before END BACKUP (which needs I/O)."""
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    OracleEngine.emergency_release(URL, OracleOptions(), session.emergency_state())
    assert instance.alters()[-2:] == ["ALTER SYSTEM RESUME", "ALTER DATABASE END BACKUP"]


def test_the_spare_connection_releases_without_a_login(instance: ScriptedOracle) -> None:
    """Opened before the window: a login while the instance is suspended may never complete."""
    session = connected(statement_timeout="1s")
    session.layout()  # MAP, before the window: the spare is opened here
    session.quiesce(Mode.FREEZE)
    instance.connections[0].killed = True
    instance.refuse_connect = oracle_error("ORA-12345: no login now")
    session.abort()
    assert len(instance.connections) == 2 and instance.connections[1].closed
    assert instance.in_backup == set() and instance.database_status == "ACTIVE"


def test_archived_logs_missing_here_fail_the_session_after_releasing(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    session.discover()
    session.prepare()
    original = instance._archive_current

    def archive_elsewhere(sql: str, params: object) -> None:
        original(sql, params)  # type: ignore[arg-type]
        Path(instance.archived[-1][0]).unlink()

    instance._archive_current = archive_elsewhere  # type: ignore[method-assign]
    with pytest.raises(BackupFailed, match=r"archived logs of the backup are incomplete here .*1_8_1\.arc"):
        session.unquiesce()
    session.abort()
    assert instance.in_backup == set()


def test_end_backup_with_nothing_in_backup_is_not_an_error_on_release(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    instance.in_backup = set()  # someone ended it already (ORA-01142 on END BACKUP)
    session.abort()
    assert instance.statements[-1] == "ALTER DATABASE END BACKUP"


PROBLEMS = {
    "noarchivelog": (
        lambda i: setattr(i, "log_mode", "NOARCHIVELOG"),
        "the database FREE is in NOARCHIVELOG mode, and BEGIN BACKUP needs ARCHIVELOG (ORA-01123); "
        "SHUTDOWN IMMEDIATE; STARTUP MOUNT; ALTER DATABASE ARCHIVELOG; ALTER DATABASE OPEN",
    ),
    "pdb": (lambda i: setattr(i, "container", "FREEPDB1"), "connected to the pluggable database FREEPDB1"),
    "in backup": (lambda i: setattr(i, "in_backup", {1, 2}), "2 datafiles are already in backup mode"),
    "suspended": (lambda i: setattr(i, "database_status", "SUSPENDED"), "the instance is SUSPENDED"),
    "force logging": (
        lambda i: setattr(i, "force_logging", "NO"),
        "not in FORCE LOGGING mode: a NOLOGGING operation during the backup would write blocks no redo "
        "describes, and a restore would hold them corrupt; ALTER DATABASE FORCE LOGGING, or set [database] "
        "require_force_logging = false",
    ),
    "view": (
        lambda i: i.denied_views.update({"v$backup", "v$instance"}),
        "user SYSBACKUP cannot read v$backup (backup mode); GRANT SELECT_CATALOG_ROLE TO SYSBACKUP",
    ),
    "asm": (
        lambda i: i.datafiles.__setitem__(0, (1, "+DATA/FREE/system01.dbf", 0, "SYSTEM", 1)),
        "the datafile +DATA/FREE/system01.dbf is in an ASM disk group",
    ),
    "unreadable": (lambda i: Path(i.datafiles[1][1]).unlink(), "data02.dbf is not readable here"),
}


@pytest.mark.parametrize("case", list(PROBLEMS))
def test_preflight_names_each_problem(case: str, instance: ScriptedOracle) -> None:
    arrange, expected = PROBLEMS[case]
    arrange(instance)
    session = engine()
    session.connect()
    sentences = [p.sentence() for p in session.preflight(Mode.HOT_BACKUP)]
    assert expected in sentences[-1] and len(sentences) == (2 if case == "view" else 1), sentences
    assert not instance.alters(), "preflight changes nothing"


def test_a_plain_account_is_told_each_missing_privilege(instance: ScriptedOracle) -> None:
    instance.user = "BKP"
    instance.session_privs = ["CREATE SESSION", "ALTER DATABASE"]
    plain = engine(privilege="none")
    plain.connect()
    sentences = [p.sentence() for p in plain.preflight(Mode.FREEZE)]
    assert sentences == [
        "user BKP lacks the ALTER SYSTEM privilege; GRANT ALTER SYSTEM TO BKP, or grant SYSBACKUP and set "
        'privilege = "sysbackup"'
    ]


def test_a_backup_control_file_outside_the_data_directories_is_refused(instance: ScriptedOracle) -> None:
    sentences = [
        p.sentence() for p in connected(backup_controlfile="/nowhere/b.ctl").preflight(Mode.HOT_BACKUP)
    ]
    assert sentences == [
        "the backup control file's directory /nowhere is not here as /nowhere; set [database] "
        "backup_controlfile to a server path under the primary"
    ]


def test_layout_names_what_is_collected_so_the_session_can_refuse_it_early(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    session.abort()
    candidates = session.layout()
    assert candidates[-2:] == [instance.oradata / "splitmirror-backup.ctl", Path(instance.archived[-1][0])]


def test_a_connection_error_is_one_sentence_without_the_password(
    instance: ScriptedOracle, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance.refuse_connect = oracle_error(
        "ORA-01017: invalid credential or not authorized; logon denied\nHelp: https://docs.oracle.com/x"
    )
    from splitmirror.api import PreflightError

    with pytest.raises(PreflightError) as refused:
        engine().connect()
    assert str(refused.value) == (
        "cannot connect to Oracle at oracle://c##splitmirror@db.example:1521/FREE: ORA-01017: invalid "
        "credential or not authorized; logon denied; check the URL, that the server is running, and "
        "SPLITMIRROR_ORACLE_PASSWORD or [database] password_file"
    )


def test_a_release_that_fails_everywhere_says_what_to_run_by_hand(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    instance.connections[0].killed = True
    assert instance.in_backup
    instance.refuse_connect = oracle_error("DPY-6005: cannot connect to database", oracledb.OperationalError)
    session.settings.statement_timeout = 0.5  # how long the fresh logins are retried
    with pytest.raises(BackupFailed) as failed:
        session.abort()
    assert str(failed.value) == (
        "Oracle could not be released (DPY-6005: cannot connect to database): the datafiles may still be "
        "in backup mode and the instance suspended; as SYSDBA run ALTER SYSTEM RESUME, then ALTER "
        "DATABASE END BACKUP"
    )


def test_a_nologging_change_during_the_backup_fails_it_after_the_release(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    instance.unrecoverable = (instance.datafiles[2][1], session.begin["scn"])
    with pytest.raises(BackupFailed, match=r"a NOLOGGING operation changed .*data03\.dbf during the backup"):
        session.unquiesce()
    assert instance.in_backup == set()


def test_a_nologging_change_before_the_backup_is_not_its_business(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    instance.unrecoverable = (instance.datafiles[2][1], session.begin["scn"] - 1)
    assert session.unquiesce().redo_range["archived_logs"]


def test_a_login_that_hangs_is_given_up_and_closed_when_it_comes(
    instance: ScriptedOracle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """python-oracledb bounds only the TCP connect, not the login: a login held by a suspended
    instance must not hold the release, and must not leak a session when it finally completes."""
    late: list[object] = []

    def slow_login(url: str, **options: object) -> object:
        time.sleep(0.3)
        conn = instance.connect(url)
        late.append(conn)
        return conn

    monkeypatch.setattr(connection, "connect", slow_login)
    with pytest.raises(release.ReleaseFailed, match=r"logging in took over 0\.1 s"):
        release.connect_within(URL, privilege="sysbackup", password_file=None, seconds=0.1, call_timeout=1)
    time.sleep(0.5)
    assert late and late[0].closed  # type: ignore[attr-defined]


def test_a_resume_refused_on_an_active_instance_is_not_a_failure(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    instance.fail_on = ("RESUME", oracle_error("ORA-99999: not suspended"))
    OracleEngine.emergency_release(URL, OracleOptions(), session.emergency_state())
    assert instance.in_backup == set()


def test_an_instance_still_suspended_after_resume_is_not_ended_blindly(instance: ScriptedOracle) -> None:
    """RESUME that did not take: END BACKUP would wait for the I/O; the release says why instead."""
    session = connected(statement_timeout="0.5s")
    session.quiesce(Mode.FREEZE)
    instance._resume = lambda sql, params: None  # type: ignore[method-assign]
    with pytest.raises(release.ReleaseFailed, match="still SUSPENDED after ALTER SYSTEM RESUME"):
        OracleEngine.emergency_release(URL, session.settings, session.emergency_state())
    assert instance.alters()[-1] == "ALTER SYSTEM RESUME" and instance.in_backup


def test_the_emergency_release_tries_again_until_a_login_works(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    refused = [oracle_error("ORA-12520: no handler")]
    original = instance.connect

    def once_refused(url: str, **options: object) -> object:
        if refused:
            raise refused.pop()
        return original(url)

    instance.connect = once_refused  # type: ignore[method-assign]
    OracleEngine.emergency_release(URL, OracleOptions(statement_timeout=5), session.emergency_state())
    assert instance.in_backup == set()


def test_every_connection_is_closed_after_a_session(instance: ScriptedOracle) -> None:
    backup(instance, Mode.FREEZE)
    assert len(instance.connections) == 2, "the session's and its spare, opened once"
    assert all(conn.closed for conn in instance.connections)
    again = connected()
    again.layout()
    again.layout()
    assert len(instance.connections) == 4, "one spare, not one per call"
    again.close()


def test_a_spare_that_died_before_the_window_is_opened_again(instance: ScriptedOracle) -> None:
    session = connected(statement_timeout="0.5s")
    session.layout()
    instance.connections[1].killed = True  # during a long SYNC, say
    session.quiesce(Mode.FREEZE)  # finds it dead and opens another before entering the mode
    instance.connections[0].killed = True
    instance.refuse_connect = oracle_error("ORA-12345: no login while suspended")
    session.abort()
    assert len(instance.connections) == 3 and instance.database_status == "ACTIVE"


def test_files_still_in_backup_mode_after_end_backup_fail_the_session(instance: ScriptedOracle) -> None:
    session = connected()
    session.quiesce(Mode.HOT_BACKUP)
    instance.end_backup_leaves = {2}
    with pytest.raises(BackupFailed, match="END BACKUP returned, but 1 datafiles are still in backup mode"):
        session.unquiesce()


def test_require_force_logging_false_is_a_choice_honoured(instance: ScriptedOracle) -> None:
    instance.force_logging = "NO"
    session = engine(require_force_logging=False)
    session.connect()
    assert session.preflight(Mode.HOT_BACKUP) == []
