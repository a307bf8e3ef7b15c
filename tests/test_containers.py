"""splitmirror.testing.containers: which image a container test gets, and that containers go away."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from splitmirror.testing import containers, images
from splitmirror.testing.containers import ServerContainer, Unavailable, image_for, leftovers

BASE = "splitmirror-offline/debian:bookworm"


@pytest.fixture(autouse=True)
def fresh_answers() -> Iterator[None]:
    """image_for and the client are cached per process; each test asks afresh."""
    for cached in (images.client, images._choose, images._pull, images._exact_version):
        cached.cache_clear()
    yield
    for cached in (images.client, images._choose, images._pull, images._exact_version):
        cached.cache_clear()
    images.take_choices()  # these tests' answers are about image_for, not a database that ran


@pytest.fixture
def engine() -> None:
    try:
        containers.client()
    except Unavailable as reason:
        pytest.skip(str(reason))


@pytest.fixture
def base_image(engine: None) -> str:
    images.require(BASE)
    return BASE


def test_each_image_has_its_own_override_variable() -> None:
    assert containers.override_variable("postgres", "15") == "SPLITMIRROR_IMAGE_POSTGRES_15"
    assert containers.override_variable("mariadb", "10.11") == "SPLITMIRROR_IMAGE_MARIADB_10_11"
    names = {containers.override_variable(d, v) for d, v in containers.IMAGES}
    assert len(names) == len(containers.IMAGES)


def test_no_engine_is_a_skip_reason_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(Unavailable, match=r"^no Docker engine answers \(.*\); start one"):
        image_for("postgres", "15")


def test_the_override_wins(base_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITMIRROR_IMAGE_POSTGRES_15", base_image)
    assert image_for("postgres", "15") == base_image


def test_an_override_that_does_not_exist_says_so(engine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITMIRROR_IMAGE_POSTGRES_15", "splitmirror-offline/no-such-image:1")
    with pytest.raises(Unavailable) as reason:
        image_for("postgres", "15")
    assert str(reason.value) == (
        "$SPLITMIRROR_IMAGE_POSTGRES_15 names splitmirror-offline/no-such-image:1, which is not here "
        "and cannot be pulled"
    )


def test_an_unknown_database_names_the_known_ones(engine: None) -> None:
    with pytest.raises(Unavailable, match=r"no image is known for db2 11 \(known: postgres 15, .*\); set "):
        image_for("db2", "11")


def test_upstream_first_then_the_offline_build(engine: None) -> None:
    """postgres:15 when it is here or can be pulled; otherwise our Debian build, or a sentence
    telling how to build it.  (Which branch runs depends on the machine; each is checked.)"""
    upstream_here = images._present("postgres:15")
    try:
        chosen = image_for("postgres", "15")
    except Unavailable as reason:
        assert "run `make images`" in str(reason)
        assert not images._present("splitmirror-offline/postgres:15")
        return
    if upstream_here or images._pull("postgres:15") is None:
        assert chosen == "postgres:15"
    else:
        assert chosen == "splitmirror-offline/postgres:15"


def test_a_version_debian_lacks_skips_with_the_pull_error(engine: None) -> None:
    if images._present("mysql:8.4") or images._pull("mysql:8.4") is None:
        pytest.skip("mysql:8.4 can be pulled here")
    expected = r"^mysql:8.4 cannot be pulled \(.+\) and no Debian suite packages it \(sid has MySQL 9\)"
    with pytest.raises(Unavailable, match=expected):
        image_for("mysql", "8.4")


def test_a_container_runs_labelled_and_is_removed(base_image: str) -> None:
    server = ServerContainer(base_image, port=5432, command=["sleep", "300"])
    try:
        server.start()
        assert server.running
        assert server.exec(["id", "-un"], user="nobody") == (0, "nobody")
        assert server.host_port > 0
        assert leftovers(), "the container is labelled splitmirror.testing"
    finally:
        server.stop()
    assert not server.running and not leftovers()
    server.stop()  # always safe


def test_a_container_that_cannot_start_leaves_nothing(base_image: str) -> None:
    server = ServerContainer(base_image, port=5432, command=["/no/such/program"])
    with pytest.raises(Exception, match="no/such/program"):
        server.start()
    assert not leftovers() and server not in containers._RUNNING


def test_versions_are_in_numeric_order_and_the_newest_is_last() -> None:
    assert containers.versions("postgres") == sorted(containers.versions("postgres"), key=int)
    assert containers.versions("mariadb")[:2] == ["10.11", "11.8"]
    assert containers.newest("mysql") == "9"  # not "8.4", which sorts after "9" as text
    assert sorted(["23ai", "10.11", "9", "8.4"], key=images._version_key) == ["8.4", "9", "10.11", "23ai"]
    with pytest.raises(ValueError, match="no image of 'db2'"):
        containers.versions("db2")


def test_each_answer_is_noted_with_the_image_or_why_not(
    engine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    images.take_choices()
    with pytest.raises(Unavailable):
        image_for("db2", "11")
    assert [(c.database, c.version, c.image) for c in images.take_choices()] == [("db2", "11", None)]
    images.require(BASE)
    monkeypatch.setenv("SPLITMIRROR_IMAGE_DEBIAN_12", BASE)
    assert image_for("debian", "12") == BASE
    (choice,) = images.take_choices()
    assert choice.image == BASE and choice.offline and not choice.unavailable
    assert images.take_choices() == []
