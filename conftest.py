"""The project's own guards, for every test under this directory (core's and the plugins').

They are not in the pytest plugin splitmirror publishes (``splitmirror.testing.plugin``), which
gives fixtures only: a guard that runs around every test belongs to the project that wants it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from splitmirror.tracking import PREFIX, TRACEFS, remove_instance


@pytest.fixture(autouse=True)
def _no_tracing_instance_left() -> Iterator[None]:
    """No test may leave a change-tracking instance of this process behind (the kernel keeps
    tracing until it is removed): it is removed, and the test fails naming it."""
    yield
    instances = TRACEFS / "instances"
    left = sorted(instances.glob(f"{PREFIX}{os.getpid()}-*")) if instances.is_dir() else []
    for instance in left:
        remove_instance(instance)
    assert not left, f"the test left tracing instances: {[p.name for p in left]}"
