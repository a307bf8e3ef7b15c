"""Where a catalog is: a path, or a URL a catalog plugin opens; what a URL may not carry; where
this host keeps a URL catalog's session locks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from splitmirror.catalog import CatalogAddress, PhaseRecord, SqliteCatalog, catalog_address
from splitmirror.catalog.abandoned import fail_abandoned
from splitmirror.config import load_config
from splitmirror.errors import CatalogError
from test_cli import cli, one_sentence

URL = "postgresql://backup@catalog-db:5432/splitmirror"


def _with_catalog(write_config: Any, catalog: str) -> Path:
    path: Path = write_config()
    path.write_text(path.read_text().replace('catalog = "', f'catalog = "{catalog}"\n# was "', 1))
    return path


def test_a_url_is_kept_as_written_and_a_path_stays_a_path(write_config: Any, root: Path) -> None:
    assert load_config(_with_catalog(write_config, URL)).session.catalog == URL
    assert load_config(write_config()).session.catalog == root / "catalog.db"
    address = CatalogAddress(URL)
    assert (address.url, address.path, address.scheme) == (URL, None, "postgresql")
    assert address.tag == CatalogAddress(URL).tag != CatalogAddress("/x/catalog.db").tag
    local = CatalogAddress(str(root / "c.db"))
    assert (local.url, local.path, local.home) == (None, root / "c.db", root)


def test_a_password_in_the_catalog_url_is_refused_everywhere(
    write_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "postgresql://backup:hunter2@catalog-db/splitmirror"
    refused = cli("check", str(_with_catalog(write_config, secret)))
    assert refused.returncode == 2
    said = one_sentence(refused)
    assert "the catalog URL carries a password" in said and "SPLITMIRROR_CATALOG_PASSWORD" in said
    assert "hunter2" not in said
    listed = cli("list", "--catalog", secret)
    assert listed.returncode == 5 and "carries a password" in one_sentence(listed)
    monkeypatch.setenv("SPLITMIRROR_CATALOG", secret)
    with pytest.raises(CatalogError, match=r"\$SPLITMIRROR_CATALOG carries a password"):
        catalog_address(None)
    in_the_query = cli("list", "--catalog", "postgresql://backup@catalog-db/splitmirror?password=hunter2")
    assert in_the_query.returncode == 5 and "carries a password" in one_sentence(in_the_query)
    assert "hunter2" not in in_the_query.stderr


def test_a_url_catalogs_locks_live_in_the_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPLITMIRROR_STATE_DIR", str(tmp_path / "state"))
    assert CatalogAddress(URL).home == tmp_path / "state"
    monkeypatch.delenv("SPLITMIRROR_STATE_DIR")
    assert CatalogAddress(URL).home.name == "splitmirror"  # the user's data directory


def test_a_state_directory_inside_the_primary_is_refused(
    write_config: Any, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session locks of a URL catalog obey the rule the catalog file's did: a sync would
    delete them from the mirror, a backup archive them from the primary."""
    monkeypatch.setenv("SPLITMIRROR_STATE_DIR", str(root / "primary" / "state"))
    refused = cli("check", str(_with_catalog(write_config, URL)))
    assert refused.returncode == 2, refused.stderr
    said = one_sentence(refused)
    assert f"the session lock directory {root}/primary/state/locks is inside the primary" in said


def test_an_unknown_catalog_scheme_is_one_sentence() -> None:
    unknown = cli("list", "--catalog", "mongodb://db/splitmirror")
    assert unknown.returncode == 5
    assert "no installed catalog opens mongodb:// URLs" in one_sentence(unknown)


def test_a_shared_catalog_closes_only_this_hosts_abandoned_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every host of a fleet may keep its configuration at one path: INIT's lock is this host's,
    so in a catalog behind a URL a STARTED row another host recorded is that host's running
    session, never closed here (a SQLite catalog is one host's: all its rows are)."""
    monkeypatch.setenv("SPLITMIRROR_HOST", "db1")
    catalog = SqliteCatalog(tmp_path / "catalog.db")
    catalog.address = CatalogAddress(URL)  # as a fleet's catalog: shared by hosts
    rows = {}
    for where in ("db1", "db2"):
        rows[where] = catalog.start_session(
            name="orders", mode="freeze", database="sqlite", database_url="u",
            config="/etc/splitmirror/orders.toml", started_at="t",
        )  # fmt: skip
        catalog.record_phase(rows[where], PhaseRecord("INIT", "t", 1.0, host=where))
    fail_abandoned(catalog, "/etc/splitmirror/orders.toml")
    assert catalog.get(rows["db1"]).status == "FAILED", "this host's dead session is closed"
    assert catalog.get(rows["db2"]).status == "STARTED", "another host's is left alone"
    catalog.address = CatalogAddress(str(tmp_path / "catalog.db"))
    fail_abandoned(catalog, "/etc/splitmirror/orders.toml")
    assert catalog.get(rows["db2"]).status == "FAILED"
    catalog.close()
