"""Bad input against a real Oracle, where its image can be pulled: each refused by ``splitmirror
check`` in one sentence naming what to do, exit 3, nothing touched (no datafile in backup mode
afterwards).  Without a server, the same sentences are checked against the scripted instance
(test_oracle_statements_scripted.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from oracle_servers import require_image, start_server

from splitmirror.cli import main
from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import newest
from splitmirror.testing.secrets import SENTINEL, leaks
from splitmirror_oracle.testing import (
    PDB_SERVICE,
    ContainerOracle,
    OracleLedgerDatabase,
    write_password_file,
)


def check(runner: SessionRunner, url: str, options: dict[str, Any], primary: Path) -> tuple[int, str]:
    config = runner.config_file(url, "hot-backup", options, primary)
    result = CliRunner().invoke(main, ["check", str(config)])
    output = result.output.strip()
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    return result.exit_code, output


def untouched(database: OracleLedgerDatabase) -> None:
    assert database.leftovers() == []


def test_noarchivelog_is_refused(request: pytest.FixtureRequest, splitmirror_session: SessionRunner) -> None:
    version = newest("oracle")
    require_image(version)
    disk: Path = request.getfixturevalue("splitmirror_primary_disk")
    server = start_server(version, disk / "noarchive", archivelog=False)
    try:
        database = OracleLedgerDatabase(server, splitmirror_session.workspace.root)
        code, output = check(splitmirror_session, database.url, database.options, database.primary)
        assert code == 3
        assert "is in NOARCHIVELOG mode, and BEGIN BACKUP needs ARCHIVELOG (ORA-01123)" in output
        untouched(database)
    finally:
        server.stop()


def test_a_plain_account_is_told_each_missing_grant(
    server: ContainerOracle, splitmirror_database: OracleLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    code, created = server.sysdba(
        'CREATE USER c##weak IDENTIFIED BY "weak-pw" CONTAINER = ALL;\n'
        "GRANT CREATE SESSION TO c##weak CONTAINER = ALL;"
    )
    assert code == 0, created
    options = {**splitmirror_database.options, "privilege": "none"}
    options["password_file"] = str(
        write_password_file(splitmirror_session.workspace.root / "weak.pw", "weak-pw")
    )
    code, output = check(splitmirror_session, server.url("c##weak"), options, splitmirror_database.primary)
    assert code == 3
    assert (
        "user C##WEAK cannot read v$database (log mode and SCNs); GRANT SELECT_CATALOG_ROLE TO C##WEAK"
        in output
    )
    untouched(splitmirror_database)


def test_a_wrong_password_is_one_sentence_without_it(
    splitmirror_database: OracleLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    options = dict(splitmirror_database.options)
    options["password_file"] = str(
        write_password_file(splitmirror_session.workspace.root / "wrong.pw", SENTINEL + "wrong")
    )
    code, output = check(splitmirror_session, splitmirror_database.url, options, splitmirror_database.primary)
    assert code == 3 and "ORA-01017" in output and SENTINEL not in output, output


def test_datafiles_outside_the_primary_are_refused(
    splitmirror_database: OracleLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    inner = splitmirror_database.primary / "FREE" / "FREEPDB1"
    code, output = check(splitmirror_session, splitmirror_database.url, splitmirror_database.options, inner)
    assert code == 3 and "files outside the primary" in output, output
    untouched(splitmirror_database)


def test_the_pdb_service_is_refused(
    server: ContainerOracle, splitmirror_database: OracleLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    url = server.url(service=PDB_SERVICE)
    code, output = check(splitmirror_session, url, splitmirror_database.options, splitmirror_database.primary)
    assert code == 3 and f"connected to the pluggable database {PDB_SERVICE}" in output, output


def test_the_password_never_leaves_its_file(
    splitmirror_database: OracleLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    password = splitmirror_database.server.password
    assert password.startswith(SENTINEL)
    found = leaks(splitmirror_database, splitmirror_session, password)
    assert found == {"argv": [], "texts": [], "files": []}, found


@pytest.mark.parametrize("mode", ["hot-backup", "freeze"])
def test_positions_are_recorded(
    mode: str, splitmirror_database: OracleLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    """SCN at begin and end, log sequences, the archived logs (each an archive member), and
    v$backup all NOT ACTIVE after the session."""
    splitmirror_database.create_ledger()
    summary = splitmirror_session.run(splitmirror_database, mode)
    show = CliRunner().invoke(
        main, ["show", str(summary.id), "--json", "--catalog", str(splitmirror_session.workspace.catalog)]
    )
    assert show.exit_code == 0, show.output
    shown = json.loads(show.output)
    redo = shown["redo_range"]
    assert 0 < redo["begin_scn"] < redo["end_scn"], redo
    assert redo["archived_logs"] and redo["end_sequences"]["1"] >= redo["begin_sequences"]["1"], redo
    archived = {f["path"] for f in shown["members"] if f["role"] == "archived-log"}
    assert {str(splitmirror_database.server.datadir / Path(n).relative_to("/opt/oracle/oradata"))
            for n in redo["archived_logs"]} == archived  # fmt: skip
    untouched(splitmirror_database)
