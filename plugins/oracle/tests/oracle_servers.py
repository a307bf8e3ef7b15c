"""Starting the test server, shared by the fixtures and the tests that need a server of their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitmirror.testing.containers import Unavailable, image_for
from splitmirror.testing.secrets import sentinel_password
from splitmirror_oracle.testing import ContainerOracle


def start_server(version: str, datadir: Path, *, archivelog: bool = True) -> ContainerOracle:
    """A started :class:`ContainerOracle`, or a skip saying why there is none here."""
    if os.geteuid() != 0:
        pytest.skip("container Oracle tests need root: splitmirror reads files the container's user owns")
    try:
        server = ContainerOracle(version, datadir, sentinel_password(), archivelog=archivelog)
    except Unavailable as reason:
        pytest.skip(str(reason))
    return server.start()


def require_image(version: str) -> None:
    """Skip, saying why, unless Oracle ``version``'s image is usable here: asked before the
    primary disk is made, so a skip costs no loop device or filesystem."""
    try:
        image_for("oracle", version)
    except Unavailable as reason:
        pytest.skip(str(reason))
