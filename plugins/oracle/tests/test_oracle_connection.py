"""Reading an ``oracle://`` URL and finding the password: no database, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror_oracle import connection


@pytest.mark.parametrize(
    "url, parsed",
    [
        ("oracle://c##splitmirror@db1:1521/ORCLCDB", ("c##splitmirror", "db1", 1521, "ORCLCDB")),
        ("oracle://c%23%23splitmirror@db1/ORCLCDB", ("c##splitmirror", "db1", 1521, "ORCLCDB")),
        ("oracle://bkp@[::1]:1522/FREE", ("bkp", "::1", 1522, "FREE")),
    ],
)
def test_a_common_user_s_url_is_read_whole(url: str, parsed: tuple[object, ...]) -> None:
    """``C##`` users are Oracle's common users: a URL parser would take ``#`` for a fragment."""
    target = connection.parse_url(url)
    assert (target.user, target.host, target.port, target.service) == parsed


@pytest.mark.parametrize(
    "url, sentence",
    [
        ("oracle://c##bkp:hunter2@db/FREE", "the [database] url carries a password; remove it"),
        ("oracle://db1:1521/FREE", "must name the user, the host and the service"),
        ("oracle://bkp@db1:1521/", "must name the user, the host and the service"),
        ("oracle://bkp@db1:port/FREE", "the port in 'oracle://bkp@db1:port/FREE' is not a number"),
        ("postgresql://bkp@db1/FREE", "is not an oracle:// URL"),
    ],
)
def test_a_bad_url_is_one_sentence_without_the_password(url: str, sentence: str) -> None:
    with pytest.raises(connection.ConnectionProblem) as refused:
        connection.parse_url(url)
    assert sentence in str(refused.value) and "hunter2" not in str(refused.value)


def test_the_password_file_must_be_private_and_not_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "oracle.pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(
        connection.ConnectionProblem, match=f"readable by group or others; chmod 600 {secret}"
    ):
        connection.password(secret)
    secret.chmod(0o600)
    assert connection.password(secret) == "s3cret"
    secret.write_text("")
    with pytest.raises(connection.ConnectionProblem, match="is empty; put the password on its first line"):
        connection.password(secret)
    with pytest.raises(connection.ConnectionProblem, match="cannot read the password file"):
        connection.password(tmp_path / "missing.pw")
    monkeypatch.delenv(connection.PASSWORD_VARIABLE, raising=False)
    with pytest.raises(
        connection.ConnectionProblem, match="no password for Oracle: set SPLITMIRROR_ORACLE_PASSWORD"
    ):
        connection.password(None)
    monkeypatch.setenv(connection.PASSWORD_VARIABLE, "from-env")
    assert connection.password(None) == "from-env"


def test_a_server_that_is_not_there_is_one_sentence_from_the_real_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """python-oracledb itself (no stand-in), against a port nothing listens on: the keyword
    arguments the plugin passes are the driver's, and its refusal becomes one sentence."""
    import socket

    from splitmirror.api import PreflightError
    from splitmirror_oracle.engine import OracleEngine, OracleOptions

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the engine connects
    monkeypatch.setenv(connection.PASSWORD_VARIABLE, "not-used")
    engine = OracleEngine(f"oracle://c##splitmirror@127.0.0.1:{port}/FREE", OracleOptions(connect_timeout=2))
    with pytest.raises(PreflightError) as refused:
        engine.connect()
    assert str(refused.value).startswith(
        f"cannot connect to Oracle at oracle://c##splitmirror@127.0.0.1:{port}/FREE: "
        "DPY-6005: cannot connect to database: [Errno 111] Connection refused; check the URL"
    ), refused.value
    assert "\n" not in str(refused.value) and "not-used" not in str(refused.value)
