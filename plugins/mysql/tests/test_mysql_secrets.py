"""The password (a sentinel, see conftest) lives in the option file and nowhere else: not in
any process's arguments during a session, not in its output (``--json`` included), logs,
exception text, the catalog, the archive or the mirror.  Catalog and archive are private."""

from __future__ import annotations

from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import on_newest
from splitmirror.testing.secrets import SENTINEL, found_in_files, leaks, private
from splitmirror_mysql.testing import MysqlLedgerDatabase

#: Mirrors and secrets do not change with the server's version: the newest of each database only.
pytestmark = on_newest("server", "mariadb", "mysql")


def test_the_password_never_leaves_the_option_file(
    splitmirror_database: MysqlLedgerDatabase, splitmirror_session: SessionRunner
) -> None:
    password = splitmirror_database.server.password
    assert password.startswith(SENTINEL)
    assert found_in_files(password, [splitmirror_database.option_file]), "the scan must find it where it is"
    found = leaks(splitmirror_database, splitmirror_session, password)
    assert found == {"argv": [], "texts": [], "files": []}, found
    ws = splitmirror_session.workspace
    assert all(
        private(path) for path in [ws.catalog, ws.catalog.parent / "locks", *ws.archives.glob("*.tar")]
    )
