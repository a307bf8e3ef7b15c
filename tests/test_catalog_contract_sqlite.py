"""The built-in SQLite catalog passes the catalog contract (splitmirror.testing.catalog_contract)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitmirror.catalog import CatalogAddress
from splitmirror.testing.catalog_contract import CatalogContract


class TestSqliteCatalog(CatalogContract):
    @pytest.fixture
    def splitmirror_catalog_address(self, tmp_path: Path) -> CatalogAddress:
        return CatalogAddress(str(tmp_path / "state" / "catalog.db"))
