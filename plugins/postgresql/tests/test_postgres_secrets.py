"""The password (a sentinel, see conftest) lives in the .pgpass file and nowhere else: not in
any process's arguments during a session, not in its output (``--json`` included), logs,
exception text, the catalog, the archive or the mirror.  Catalog and archive are private."""

from __future__ import annotations

import os
from pathlib import Path

from splitmirror.testing import SessionRunner
from splitmirror.testing.containers import on_newest
from splitmirror.testing.secrets import SENTINEL, found_in_files, leaks, private
from splitmirror_postgresql.container import ContainerLedgerDatabase, ContainerPostgres

#: Mirrors and secrets do not change with the server's version: the newest of each database only.
pytestmark = on_newest("container_postgres", "postgres")


def test_the_password_never_leaves_the_pgpass_file(
    container_postgres: ContainerPostgres, splitmirror_session: SessionRunner
) -> None:
    password = container_postgres.password
    assert password.startswith(SENTINEL)
    assert found_in_files(password, [Path(os.environ["PGPASSFILE"])]), "the scan must find it where it is"
    found = leaks(ContainerLedgerDatabase(container_postgres), splitmirror_session, password)
    assert found == {"argv": [], "texts": [], "files": []}, found
    ws = splitmirror_session.workspace
    assert all(
        private(path) for path in [ws.catalog, ws.catalog.parent / "locks", *ws.archives.glob("*.tar")]
    )
