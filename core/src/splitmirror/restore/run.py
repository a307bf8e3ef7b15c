"""``splitmirror restore``: scan, check DIR, write, then let the database engine prepare.

The order is the guarantee: nothing is created (not even DIR) until every member has passed the
safety scan and DIR is known to be fit, and every file is checked against its checksum before it
takes its name.  The archive is read twice (headers, then the data of the chosen members), so it
must be a regular file; a tape or a pipe is copied to a file first (docs/restore.md).  An archive
that a program gives (a session's ``[target] read_command``) is read by running it twice: the
scan's plan, made from the first run, is what the second run's data is written by, and every file
is still checked against its checksum, so a second run that gave other bytes restores nothing
unchecked.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..archive.read_command import ReadCommand
from ..archive.reader import STDIN, ArchiveReader
from ..catalog import CatalogAddress, FileRecord, open_catalog
from ..catalog.base import DONE, PRUNED
from ..errors import CatalogError, PluginError, UserError, first_line
from ..hooks import Hooks
from ..restore_steps import RestoreStep, as_step
from ..targets.builtin import STDOUT_LABEL
from .plan import Plan, RestoreRefused, check_directory, scan
from .tree import Tree
from .verify import Expectation


class RestoreFailed(UserError):
    """Writing into DIR failed part way (a full disk, permissions): DIR is incomplete."""

    exit_code = 1


@dataclasses.dataclass
class RestoreResult:
    archive: str
    directory: Path
    restored: list[str]
    skipped: list[str]
    bytes: int
    engine: str | None
    steps: list[RestoreStep]
    notes: list[str]
    manifest: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "manifest"}
        data["directory"] = str(self.directory)
        data["steps"] = [step.to_json() for step in self.steps]
        return data


def restore_archive(
    source: str | Path | ReadCommand,
    directory: Path,
    *,
    only: Sequence[str] = (),
    force: bool = False,
    expected: Sequence[Expectation] | None = None,
    hooks: Hooks | None = None,
) -> RestoreResult:
    """Restore ``source`` into ``directory``.  ``expected`` is the catalog's file list when the
    session is known (else the archive's own manifest is the reference); ``only`` holds fnmatch
    patterns against member names.  Raises :class:`~splitmirror.errors.UserError` subclasses:
    refused (exit 7, nothing written), damaged (exit 6), not found (exit 5), writing failed
    (exit 1)."""
    label = str(source)
    rerun = isinstance(source, ReadCommand)
    if not rerun and (label == STDIN or (os.path.exists(label) and not os.path.isfile(label))):
        raise RestoreRefused(
            "restore reads the archive twice (a safety scan before anything is written), so it needs "
            "a regular file; copy the tape or stream to a file first (docs/restore.md)"
        )
    directory = Path(os.path.abspath(directory))
    with ArchiveReader(source, stream=False) as reader:
        plan = scan(reader, only=only, expected=expected)
        check_directory(directory, plan, force=force)
        if not rerun:
            restored, size = _write(reader, plan, directory)
    if rerun:  # a program's output cannot seek back: it runs again, read forward to each member
        with ArchiveReader(source) as reader:
            restored, size = _write(reader, plan, directory)
    skipped = [e.name for e in plan.entries if not e.selected and e.name != "."]
    engine, steps, notes = _prepare(plan, directory, set(restored), hooks)
    return RestoreResult(
        reader.label, directory, restored, skipped, size, engine, steps, notes, plan.manifest
    )


def _write(reader: ArchiveReader, plan: Plan, directory: Path) -> tuple[list[str], int]:
    """Create DIR and every chosen member; the names written and the bytes of file data."""
    restored: list[str] = []
    size = 0
    current = str(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with Tree(directory, owners=os.geteuid() == 0) as tree:
            for entry in plan.selected:
                current = f"member {entry.name}"
                if entry.kind == "file":
                    tree.file(entry, reader.chunks(entry.info))
                    size += entry.info.size
                elif entry.kind == "directory":
                    tree.directory(entry)
                elif entry.kind == "symlink":
                    tree.symlink(entry)
                else:
                    tree.hard_link(entry)
                restored.append(entry.name)
            current = "the directories' modes and times"
            tree.finish()
    except OSError as error:  # disk full, permissions, DIR changed under us: one sentence
        raise RestoreFailed(
            f"writing {current} into {directory} failed ({error.strerror or error}); the restore "
            f"stopped and {directory} is incomplete"
        ) from None
    return restored, size


def _prepare(
    plan: Plan, directory: Path, restored: set[str], hooks: Hooks | None
) -> tuple[str | None, list[RestoreStep], list[str]]:
    """The engine's restore preparation and the steps it returns; reasons it was skipped as notes
    (the files are restored either way)."""
    manifest: Mapping[str, Any] = plan.manifest
    database = manifest.get("database")
    name = database.get("engine") if isinstance(database, Mapping) else None
    if not isinstance(name, str) or not name:
        return None, [], ["the manifest names no database engine, so there is nothing to prepare"]
    members = [f.get("member") for f in manifest.get("files", []) if isinstance(f, Mapping)]
    if not all(member in restored for member in members):
        return (
            name,
            [],
            [
                "only part of the database was restored (--only), so it was not prepared to start; "
                "restore every file to start it"
            ],
        )
    try:
        engine = (hooks or Hooks()).engines.get(name)
    except PluginError:
        return (
            name,
            [],
            [
                f"the {name} engine plugin is not installed, so {directory} was not prepared to start "
                f"(the files are restored); install splitmirror-{name} or follow docs/restore.md"
            ],
        )
    try:
        steps = engine.prepare_restore(directory, manifest)
    except UserError:
        raise
    except Exception as error:  # a plugin's bug: reported as a sentence, the traceback chained
        raise PluginError(
            f"the {name} engine's restore preparation failed ({first_line(error)}); the files are "
            f"restored in {directory}, prepare it by hand (docs/restore.md)"
        ) from error
    return name, [as_step(step) for step in steps], []


def locate_archive(
    session_id: int | None, archive: str | None, catalog: CatalogAddress | Path | None
) -> tuple[str | ReadCommand, list[FileRecord] | None]:
    """The archive to read and, for a session ID, the catalog's file list to check it against
    (``verify`` and ``restore`` share it).  Only a ``DONE`` session has an archive, and one that
    failed in CLEANUP (re-establishing the mirror), after its archive was complete.  A session
    whose archive went into a program (``[target] command``) is read through the
    ``read_command`` recorded with it, unless ``archive`` names a copy."""
    if session_id is None:
        if archive is None:
            raise UserError("give a session ID, or the archive itself with --archive PATH")
        return archive, None
    opened = open_catalog(catalog, create=False)
    try:
        summary = opened.get(session_id)
        files = opened.files(session_id)
    finally:
        opened.close()
    if summary.status != DONE and summary.failed_phase != "CLEANUP":
        why = f" (failed in {summary.failed_phase}: {summary.error})" if summary.failed_phase else ""
        raise CatalogError(
            f"session {session_id} is {summary.status}{why}; only a DONE session has an archive (or one "
            "that failed in CLEANUP)"
        )
    if summary.pruned is not None and archive is None:
        how = (
            "was deleted" if summary.pruned == PRUNED else "is being deleted (or a prune was killed doing so)"
        )
        raise CatalogError(
            f"session {session_id}'s archive {how} by `splitmirror prune` at {summary.pruned_at} "
            f"({summary.pruned_why}); pick a kept session from `splitmirror list`"
        )
    commands = summary.stats.get("archive_commands")
    if archive is None and isinstance(commands, Mapping):
        read = commands.get("read")
        if not read:
            raise CatalogError(
                f"session {session_id}'s archive went into a program ({summary.archive}) and no [target] "
                "read_command was recorded to read it back; pass your copy with --archive PATH (or "
                "--archive - to read it from standard input)"
            )
        return ReadCommand([str(arg) for arg in read]), files
    if archive is not None:
        return archive, files  # the DBA's copy (``-``: standard input), checked against the catalog
    path = summary.archive
    if not path or path in ("-", STDOUT_LABEL):
        raise CatalogError(
            f"session {session_id}'s archive went to standard output, so the catalog cannot say where "
            f"it is; pass your copy with --archive PATH"
        )
    return path, files
