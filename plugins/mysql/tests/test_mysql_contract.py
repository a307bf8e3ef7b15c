"""The contract suite against MariaDB 10.11 (and MySQL 8.4 where its image can be pulled):
both modes, discovery, logical order, unquiesce on failure in every window phase, and restore
drills with four writers whose restored copy starts in a fresh container, passes CHECK TABLE
for every table and holds every acknowledged row."""

from __future__ import annotations

from splitmirror.testing.contract import DatabaseContract


class TestMysqlContract(DatabaseContract):
    pass
