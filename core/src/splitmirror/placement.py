"""Where splitmirror's own files may lie, relative to the primary and the mirror.

A sync makes the mirror equal to the primary: whatever else is inside the mirror is deleted, and
whatever is inside the primary is copied into the mirror and archived again by the next session
- and nothing but the database may write the primary.  So the archives, the catalog and its
session locks (``<catalog dir>/locks``) must lie outside both, and neither the primary nor the
mirror may contain the other.

The rules are enforced where they can first be judged:

* :func:`config_problems` compares paths, each resolved (symlinks, ``..``, trailing slashes; a
  path that does not exist yet by its nearest existing ancestor, as :func:`os.path.realpath`
  does) and component by component, so ``/x/primary-mirror`` is not inside ``/x/primary``.  It
  changes nothing and asks no filesystem but where the paths lead, so ``load_config`` refuses
  the file (exit 2).
* :func:`preflight_problems` asks the filesystems (exit 3): the same path rules for a catalog
  the file does not name (``$SPLITMIRROR_CATALOG``, the default); a place inside the primary or
  the mirror by identity (a bind mount of either); the places that share a filesystem with the
  primary a block mirror copies whole, with the filesystem on the mirror device, or with a
  filesystem SPLIT freezes.  :func:`archive_problems` judges the session's real archive path
  once its id is known.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import string
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from .engine import PreflightProblem
from .fsfreeze import same_filesystem

if TYPE_CHECKING:
    from .catalog.address import CatalogAddress
    from .config import Config
    from .mirror.base import MirrorProvider

#: A problem and the config key that causes it (``[target] path``), for ``load_config``'s sentence.
Misplaced = tuple[str, PreflightProblem]

_WHY = {
    "primary": "which only the database may write and every sync copies into the mirror",
    "mirror": "which every sync makes equal to the primary, deleting whatever else is there",
}
#: What a target path's fields stand for, as patterns (``{name}`` is filled in beforehand).
_FIELD_PATTERNS = {"session": r"\d+", "timestamp": r"\d{8}T\d{6}Z"}


def resolved(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute, with symlinks and ``..`` resolved as far as it exists, in the
    kernel's order: ``link/..`` is the link target's parent (``abspath`` would drop both first)."""
    return Path(os.path.realpath(path))


def within(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies below it (both resolved; whole components)."""
    return inner == outer or outer in inner.parents


def containment_problem(primary: Path, mirror: Path) -> str | None:
    """Why ``mirror`` cannot mirror ``primary``, or None.

    Nesting either way would make a pass copy its own output or delete primary files as entries
    "extra" in the mirror, so it is refused before anything is touched.
    """
    p, m = resolved(primary), resolved(mirror)
    if p == m:
        return f"the mirror {m} is the primary itself"
    if p in m.parents:
        return f"the mirror {m} is inside the primary {p}"
    if m in p.parents:
        return f"the primary {p} is inside the mirror {m}"
    return None


def archive_directory(template: str, name: str) -> tuple[Path, bool]:
    """Where ``[target] path`` puts archives, resolved: its directory with ``{name}`` filled in,
    cut before the first component that varies by session; and whether nothing was cut."""
    fixed: list[str] = []
    for part in PurePath(template).parent.parts:
        if {f for _, f, _, _ in string.Formatter().parse(part) if f} - {"name"}:
            return resolved(Path(*fixed)), False
        fixed.append(part.format(name=name))
    return resolved(Path(*fixed)), True


def _could_name(template: str, name: str, path: Path) -> bool:
    """Whether some session's archive path is ``path`` (as resolved, or as the link it is)."""
    directory, whole = archive_directory(template, name)
    tail = PurePath(template).name
    pattern = "".join(
        re.escape(literal) + (re.escape(name) if field == "name" else _FIELD_PATTERNS.get(field or "", ""))
        for literal, field, _, _ in string.Formatter().parse(tail)
    )
    absolute = Path(os.path.abspath(path))
    candidates = {resolved(absolute), resolved(absolute.parent) / absolute.name}
    return whole and any(c.parent == directory and re.fullmatch(pattern, c.name) for c in candidates)


def names_a_file(config: Config) -> bool:
    """Whether ``[target]`` is a file of the built-in file target, judged without the plugins:
    ``-`` (standard output), a character device (a tape) and URLs of plugins' targets are not
    places inside anything."""
    if config.target is None:
        return False  # an off-host session: a backup host writes the archive
    kind, path = config.target.kind, config.target.path
    if kind is not None:
        return kind == "file"
    try:
        device = stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        device = False
    return not (path == "-" or "://" in path or device)


def path_problems(config: Config, catalog: CatalogAddress | None, target_is_file: bool) -> list[Misplaced]:
    """The path rules, with ``catalog`` as the session will use it (None: not known yet)."""
    primary, mirror = resolved(config.mirror.primary), resolved(config.mirror.mirror)
    found: list[Misplaced] = []
    nested = containment_problem(primary, mirror)
    if nested:
        fix = "set [mirror] mirror to a place outside the primary that does not contain it either"
        found.append(("[mirror] mirror", PreflightProblem(nested, fix)))
    places: list[tuple[str, str, Path]] = []
    if target_is_file and config.target is not None:
        places.append(
            (
                "[target] path",
                "the archive directory",
                archive_directory(config.target.path, config.session.name)[0],
            )
        )
        if _could_name(config.target.path, config.session.name, config.mirror.mirror):
            what = f"[target] path {config.target.path!r} can name the mirror {mirror} itself"
            found.append(
                ("[target] path", PreflightProblem(f"{what}, {_WHY['mirror']}", _fix("[target] path")))
            )
    if catalog is not None and catalog.path is not None:
        where = resolved(catalog.path)
        places += [
            ("[session] catalog", "the catalog", where),
            ("[session] catalog", "the session lock directory", where.parent / "locks"),
        ]
    elif catalog is not None:  # behind a URL: only its locks are on this host
        places.append(("[session] catalog", "the session lock directory", resolved(catalog.home / "locks")))
    named = config.session.catalog is not None
    for key, what, path in places:
        if any(key == seen for seen, _ in found):
            continue  # one sentence per key: the lock directory lies in the catalog's
        for role, container in (("primary", primary), ("mirror", mirror)):
            if within(path, container):
                relation = "is" if path == container else "is inside"
                sentence = f"{what} {path} {relation} the {role} {container}, {_WHY[role]}"
                found.append((key, PreflightProblem(sentence, _fix(key, named))))
                break
    return found


def _fix(key: str, named: bool = True) -> str:
    fix = f"set {key} to a place outside both the primary and the mirror"
    if key == "[session] catalog" and not named:  # the catalog came from the environment or the default
        return f"{fix} (the catalog now comes from $SPLITMIRROR_CATALOG or the default location)"
    return fix


def config_problems(config: Config) -> list[Misplaced]:
    """What ``load_config`` refuses: the path rules for the paths the file names."""
    from .catalog.address import CatalogAddress

    named = config.session.catalog
    return path_problems(config, None if named is None else CatalogAddress(str(named)), names_a_file(config))


def _ours(config: Config, catalog: CatalogAddress, target_is_file: bool) -> list[tuple[str, str, Path]]:
    """The directories splitmirror writes in, each with the key that places it: the archives'
    and the catalog's (with its locks; this host's state directory for a catalog behind a URL)."""
    what = "the catalog's directory" if catalog.path is not None else "the state directory"
    ours = [("[session] catalog", what, resolved(catalog.home))]
    if target_is_file and config.target is not None:
        archives = archive_directory(config.target.path, config.session.name)[0]
        ours.insert(0, ("[target] path", "the archive directory", archives))
    return ours


def own_directories(config: Config, catalog: CatalogAddress, target_is_file: bool) -> list[Path]:
    """The directories splitmirror writes in during a session (the archives', the catalog's)."""
    return [path for _key, _what, path in _ours(config, catalog, target_is_file)]


def place_problems(
    config: Config, catalog: CatalogAddress, target_is_file: bool, mirror: MirrorProvider
) -> list[PreflightProblem]:
    """The path rules with the catalog the session will really use, then the rules of the
    devices, which need no database: checked before the session creates its lock directory."""
    problems = [problem for _key, problem in path_problems(config, catalog, target_is_file)]
    if problems:
        return problems  # the device rules would only say it again
    ours = _ours(config, catalog, target_is_file)
    found = [_reached_another_way(key, what, path, config) for key, what, path in ours]
    found += [_device_problem(what, path, mirror) for _key, what, path in ours]
    return [problem for problem in found if problem is not None]


def archive_problems(config: Config, archive: Path) -> list[PreflightProblem]:
    """The session's real archive path, once its id is known: a directory that varies by
    session (``/backup/{session}/x.tar``) may turn out to be the mirror or inside it."""
    directory = resolved(archive).parent
    for role, container in (("primary", config.mirror.primary), ("mirror", config.mirror.mirror)):
        where = resolved(container)
        if within(directory, where):
            what = f"this session's archive {archive} is inside the {role} {where}"
            return [PreflightProblem(f"{what}, {_WHY[role]}", _fix("[target] path"))]
    problem = _reached_another_way("[target] path", "this session's archive directory", directory, config)
    return [problem] if problem else []


def _reached_another_way(key: str, what: str, path: Path, config: Config) -> PreflightProblem | None:
    """``path`` inside the primary or the mirror by identity, not by name: a bind mount of
    either, or a case-insensitive filesystem, shows the same directory under another path."""
    seen = set()
    for directory in (here := nearest_existing(path), *here.parents):
        with contextlib.suppress(OSError):
            info = os.stat(directory)
            seen.add((info.st_dev, info.st_ino))
    for role, container in (("primary", config.mirror.primary), ("mirror", config.mirror.mirror)):
        try:
            info = os.stat(container)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) in seen:
            return PreflightProblem(
                f"{what} {path} is inside the {role} {container}, reached another way (a bind mount or "
                f"a link), {_WHY[role]}",
                _fix(key),
            )
    return None


def preflight_problems(
    config: Config,
    catalog: CatalogAddress,
    target_is_file: bool,
    engine_freezes: Sequence[Path],
    mirror: MirrorProvider,
) -> list[PreflightProblem]:
    """:func:`place_problems`; when they hold, what SPLIT would freeze that splitmirror must
    write: the archive directory, the catalog's, and the mirror's (the final pass writes it)."""
    problems = place_problems(config, catalog, target_is_file, mirror)
    if problems:
        return problems
    mine = mirror.freeze_paths()
    freezes = [(path, path in mine) for path in mirror.freezes_for(engine_freezes)]
    places = [path for _key, _what, path in _ours(config, catalog, target_is_file)]
    found = (_freeze_problem(path, freezes) for path in [*places, resolved(config.mirror.mirror).parent])
    return [problem for problem in found if problem is not None]


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _device_problem(what: str, path: Path, mirror: MirrorProvider) -> PreflightProblem | None:
    """``path`` on the primary's filesystem that a block mirror copies whole, or on the
    filesystem held by the mirror device, which every sync overwrites."""
    here = nearest_existing(path)
    if mirror.supports_extent_reads and mirror.primary.is_dir() and same_filesystem(here, mirror.primary):
        return PreflightProblem(
            f"{what} {path} is on the primary's filesystem ({mirror.primary}), which the block mirror "
            "copies whole and only the database may write",
            "put it on another filesystem",
        )
    try:
        device = os.stat(mirror.mirror)
    except OSError:
        return None
    if stat.S_ISBLK(device.st_mode) and device.st_rdev in _disks_of(os.stat(here).st_dev):
        return PreflightProblem(
            f"{what} {path} is on the filesystem of the mirror device {mirror.mirror}, which every sync "
            "overwrites",
            "put it on another filesystem",
        )
    return None


def _disks_of(device: int) -> set[int]:
    """``device`` and, when it is a partition, the whole disk it is part of."""
    found = {device}
    sysfs = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    if (sysfs / "partition").exists():
        try:
            major, minor = (sysfs.resolve().parent / "dev").read_text().split(":")
        except (OSError, ValueError):
            return found
        found.add(os.makedev(int(major), int(minor)))
    return found


def _freeze_problem(path: Path, freezes: list[tuple[Path, bool]]) -> PreflightProblem | None:
    """Refuse before quiescing if SPLIT would freeze a filesystem we must write to."""
    here = nearest_existing(path)
    for frozen, by_mirror in freezes:
        if frozen.exists() and same_filesystem(frozen, here):
            fix = "move the catalog, target and mirror to another filesystem"
            return PreflightProblem(
                f"{frozen} shares a filesystem with splitmirror's own {path}, which SPLIT would freeze",
                fix if by_mirror else f'{fix}, or use mode = "hot-backup"',
            )
    return None
