"""Which image a plugin's container tests run: upstream where it can be pulled, the offline image
``compose/build-images`` makes from Debian's packages where not, an override variable above both.

:func:`image_for` is the one place that decides.  For ``("postgres", "15")`` it takes, in order:
the image named by ``$SPLITMIRROR_IMAGE_POSTGRES_15`` (an override, used as given); the upstream
image (``postgres:15``) when it is present or can be pulled; the offline image
(``splitmirror-offline/postgres:15``), when Debian packages that version.  When none is usable it
raises :class:`Unavailable` with a sentence saying why and what to do; tests skip with it.

Every answer is also noted (:func:`take_choices`): which image, and the exact version it carries,
or why none, so a test run can say what ran where (:mod:`splitmirror.testing.versions`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping

import docker
import docker.errors
import pytest


class Unavailable(Exception):
    """No image or engine for a container test here; the message is the skip reason."""


@dataclasses.dataclass(frozen=True)
class ImageChoice:
    """Where each (database, version) comes from."""

    upstream: str
    #: The tag ``compose/build-images`` gives its Debian-package equivalent, or None when Debian
    #: does not package that version (then only the upstream image can test it).
    offline: str | None
    #: Why there is no offline image, for the skip reason.
    why_not_offline: str = ""


_NOT_IN_DEBIAN = "no Debian suite packages it"
IMAGES: Mapping[tuple[str, str], ImageChoice] = {
    ("postgres", "15"): ImageChoice("postgres:15", "splitmirror-offline/postgres:15"),
    ("postgres", "16"): ImageChoice(
        "postgres:16", None, f"{_NOT_IN_DEBIAN} (bookworm has PostgreSQL 15, trixie 17, sid 18)"
    ),
    ("postgres", "17"): ImageChoice("postgres:17", "splitmirror-offline/postgres:17"),
    ("postgres", "18"): ImageChoice("postgres:18", "splitmirror-offline/postgres:18"),
    ("mariadb", "10.11"): ImageChoice("mariadb:10.11", "splitmirror-offline/mariadb:10.11"),
    ("mariadb", "11.8"): ImageChoice("mariadb:11.8", "splitmirror-offline/mariadb:11.8"),
    ("mysql", "8.4"): ImageChoice("mysql:8.4", None, f"{_NOT_IN_DEBIAN} (sid has MySQL 9)"),
    ("mysql", "9"): ImageChoice("mysql:9", "splitmirror-offline/mysql:9"),
    # The image testcontainers' Oracle module uses; not a faststart tag (splitmirror_oracle.testing).
    ("oracle", "23"): ImageChoice(
        "gvenzl/oracle-free:23-slim", None, "Oracle Database has no Debian package"
    ),
}


def versions(database: str) -> list[str]:
    """Every version of ``database`` :data:`IMAGES` knows, oldest first: the versions a plugin's
    container suite runs on (each skips with its reason where no image is usable)."""
    known = [version for name, version in IMAGES if name == database]
    if not known:
        raise ValueError(f"no image of {database!r} is known")
    return sorted(known, key=_version_key)


def _version_key(version: str) -> tuple[int | str, ...]:
    """``"10.11"`` after ``"9"``; a part that is no number (``"23ai"``) by its leading digits."""
    return tuple(int(m[1]) if m[1] else m[2] for m in re.finditer(r"(\d+)|([^\d.]+)", version))


def newest(database: str) -> str:
    """The newest version of ``database``: the one the slow suites (the fault matrix, the
    benchmarks) run on, where every version would take too long."""
    return versions(database)[-1]


def on_newest(fixture: str, *databases: str, pairs: bool | None = None) -> pytest.MarkDecorator:
    """A mark that runs a test, or a module (as its ``pytestmark``), on one version of each of
    ``databases`` only, by parametrizing the server ``fixture`` indirectly (which overrides the
    fixture's own list of versions): the newest whose image is usable here, so a machine that
    cannot build the newest still runs the suite, on the newest it has (the newest of all when
    none is usable: the test then skips with its reason).  The parameter is the version
    (``"18"``), or with ``pairs`` (the default for several databases) ``(database, version)``
    (``("mysql", "9")``, id ``mysql-9``): the shape your fixture's own params have."""
    return _parametrize(fixture, [(d, newest_usable(d)) for d in databases], pairs)


def on_every(fixture: str, *databases: str, pairs: bool | None = None) -> pytest.MarkDecorator:
    """As :func:`on_newest`, on every version of ``databases``: a test about one flavour among
    the fixture's (``on_every("server", "mysql", pairs=True)``) instead of a skip on the others."""
    return _parametrize(fixture, [(d, v) for d in databases for v in versions(d)], pairs)


def _parametrize(fixture: str, chosen: list[tuple[str, str]], pairs: bool | None) -> pytest.MarkDecorator:
    if pairs is None:
        pairs = len({database for database, _ in chosen}) > 1
    if not pairs:
        return pytest.mark.parametrize(fixture, [v for _, v in chosen], indirect=True)
    return pytest.mark.parametrize(fixture, chosen, indirect=True, ids=[f"{d}-{v}" for d, v in chosen])


def newest_usable(database: str) -> str:
    """The newest version of ``database`` with an image usable here; :func:`newest` when none
    is (or no engine answers)."""
    for version in reversed(versions(database)):
        try:
            _choose(database, version)
        except Unavailable:
            continue
        return version
    return newest(database)


def require(image: str) -> None:
    """Skip the calling test, saying why, unless ``image`` is here (an engine answers and the
    image is present: ``compose/build-images`` makes the offline ones)."""
    try:
        present = _present(image)
    except Unavailable as why:
        pytest.skip(str(why))
    if not present:
        pytest.skip(f"{image} is not built; run `make images`")


def override_variable(database: str, version: str) -> str:
    """``SPLITMIRROR_IMAGE_POSTGRES_15``: the variable that overrides one image."""
    suffix = f"{database}_{version}".upper().replace(".", "_").replace("-", "_")
    return f"SPLITMIRROR_IMAGE_{suffix}"


@functools.cache
def client() -> docker.DockerClient:
    """A client of the engine, or :class:`Unavailable` when none answers."""
    try:
        engine = docker.from_env(timeout=10)
        engine.ping()
    except docker.errors.DockerException as error:
        raise Unavailable(
            f"no Docker engine answers ({_first_line(error)}); start one (.ci/run installs and starts "
            "Debian's docker.io) to run the container tests"
        ) from None
    return engine


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _present(name: str) -> bool:
    try:
        client().images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


@functools.cache
def _pull(name: str) -> str | None:
    """Pull ``name``; None when it worked, else why not (one line).  Asked once per process."""
    repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    try:
        client().images.pull(repository, tag=tag)
        return None
    except docker.errors.APIError as error:
        return _first_line(Exception(error.explanation or error))  # the registry's words, not the URL
    except docker.errors.DockerException as error:
        return _first_line(error)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One answer of :func:`image_for`: the image and the exact version it carries (its
    ``org.opencontainers.image.version`` label, else the ``*_VERSION`` variable upstream images
    set), or why no image is usable."""

    database: str
    version: str
    image: str | None
    exact: str = ""
    unavailable: str = ""

    @property
    def offline(self) -> bool:
        return self.image is not None and self.image.startswith(OFFLINE_PREFIX)


#: The tag prefix of the images compose/build-images makes.
OFFLINE_PREFIX = "splitmirror-offline/"

#: Answers since the last :func:`take_choices`, in order.
_CHOICES: list[Choice] = []


def take_choices() -> list[Choice]:
    """The answers :func:`image_for` gave since the last call (a test's, when called around
    each test), and forget them."""
    taken = list(_CHOICES)
    _CHOICES.clear()
    return taken


def image_for(database: str, version: str) -> str:
    """The image to test ``database`` ``version`` with (see the module docstring)."""
    try:
        image = _choose(database, version)
    except Unavailable as reason:
        _CHOICES.append(Choice(database, version, None, unavailable=str(reason)))
        raise
    _CHOICES.append(Choice(database, version, image, _exact_version(image)))
    return image


@functools.cache
def _exact_version(image: str) -> str:
    try:
        config = client().images.get(image).attrs.get("Config") or {}
    except docker.errors.DockerException:
        return ""  # a note for the report, never a reason for a test to fail
    label = (config.get("Labels") or {}).get("org.opencontainers.image.version")
    if label:
        return str(label)
    for variable in config.get("Env") or []:
        name, _, value = str(variable).partition("=")
        if name in ("PG_VERSION", "MARIADB_VERSION", "MYSQL_VERSION"):
            return value
    return ""


@functools.cache
def _choose(database: str, version: str) -> str:
    variable = override_variable(database, version)
    choice = IMAGES.get((database, version))
    override = os.environ.get(variable)
    if override:
        if _present(override) or _pull(override) is None:
            return override
        raise Unavailable(f"${variable} names {override}, which is not here and cannot be pulled")
    if choice is None:
        known = ", ".join(f"{d} {v}" for d, v in IMAGES)
        raise Unavailable(f"no image is known for {database} {version} (known: {known}); set ${variable}")
    if _present(choice.upstream):
        return choice.upstream
    failure = _pull(choice.upstream)
    if failure is None:
        return choice.upstream
    if choice.offline is None:
        raise Unavailable(
            f"{choice.upstream} cannot be pulled ({failure}) and {choice.why_not_offline}; these tests run "
            f"where the image can be pulled, or set ${variable}"
        )
    if _present(choice.offline):
        return choice.offline
    raise Unavailable(
        f"{choice.upstream} cannot be pulled and the offline image {choice.offline} is not built; "
        "run `make images` (compose/build-images)"
    )
