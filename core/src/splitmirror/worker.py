"""``splitmirror archive``: a backup host's BACKUP and CLEANUP of splits database hosts handed
over (:mod:`.handover`, docs/fleet.md).

A worker claims one split at a time from the shared catalog (:meth:`Catalog.claim_split`: row
locks, so workers never wait for each other or take the same split) under a lease it renews
while it works, from a connection of its own.  A worker that dies stops renewing, and the next
worker takes the split once the lease ran out, discarding what the dead one left.  BACKUP reads
the split by extent from the mirror's disk, checked to be the disk the split was taken on;
CLEANUP records the archive, the session ``DONE`` and the mirror free for the database host's
next session, in one transaction that only the lease's holder can commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import glob
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .archive.assembly import ArchiveAssembly
from .budget import Budget
from .catalog import Catalog, CatalogAddress, catalog_address, open_catalog
from .catalog.base import DONE, FAILED, Handover, PhaseRecord, utc_now
from .errors import CatalogError, PreflightError, SessionInterrupted, SplitmirrorError, first_line
from .handover import SplitToArchive
from .hooks import Hooks
from .hostname import host
from .mirror.identity import identity, identity_of
from .mirror.offhost import OffHostMirror
from .progress import Progress
from .targets.builtin import PARTIAL_SUFFIX, FileTarget
from .workerconfig import WorkerConfig

#: What a split whose lease another worker took over ends as here.
LOST = "LOST"


@dataclasses.dataclass
class Outcome:
    """One split this worker took: ``DONE``, ``FAILED``, or ``LOST`` (its lease ran out)."""

    session_id: int
    name: str
    status: str
    archive: str | None = None
    files: int = 0
    bytes: int = 0
    duration_s: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LeaseLost(SplitmirrorError):
    """The worker no longer holds its split: another worker may archive it now."""


class Lease:
    """Renews a claim every third of its length, from a connection of its own (opened again
    after an error), until stopped; a renewal that fails is tried again every ninth.  ``lost``
    once the catalog says another worker has the split.  And once two thirds of the lease went
    by since the last renewal was sent, :meth:`check` raises: a worker cut off from the catalog
    fences itself off before another can claim the split, so two never write one archive."""

    def __init__(self, address: CatalogAddress, session_id: int, worker: str, lease_s: float) -> None:
        self.address, self.session_id, self.worker, self.lease_s = address, session_id, worker, lease_s
        self.lost = threading.Event()
        self._renewed = time.monotonic()  # when the last renewal that held was sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{session_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def holds(self) -> bool:
        return not self.lost.is_set() and time.monotonic() - self._renewed <= self.lease_s * 2 / 3

    def check(self, _length: int = 0) -> None:
        """Raise :class:`LeaseLost` once the split is no longer surely this worker's (BACKUP asks
        before every read, and the worker before it records the archive)."""
        if not self.holds():
            raise LeaseLost(
                f"the lease on session {self.session_id}'s split ran out (the catalog did not answer for "
                f"{self.lease_s * 2 / 3:.0f}s, or another worker took it over); this worker stopped"
            )

    def _renew(self) -> None:
        catalog: Catalog | None = None
        wait = self.lease_s / 3
        try:
            while not self._stop.wait(wait):
                sent = time.monotonic()
                try:
                    catalog = catalog or open_catalog(self.address, create=False)
                    renewed = catalog.renew_lease(self.session_id, worker=self.worker, lease_s=self.lease_s)
                except Exception:  # noqa: BLE001 - out of reach a while: check() fences by time
                    if catalog is not None:
                        with contextlib.suppress(Exception):
                            catalog.close()
                    catalog, wait = None, self.lease_s / 9
                    continue
                if not renewed:
                    self.lost.set()
                    return
                self._renewed, wait = sent, self.lease_s / 3
        finally:
            if catalog is not None:
                catalog.close()


class Worker:
    """One backup host's worker: ``config`` says which disks it reads and where archives go."""

    def __init__(
        self, config: WorkerConfig, hooks: Hooks | None = None, progress: Progress | None = None
    ) -> None:
        self.config, self.hooks = config, hooks or Hooks()
        self.address = catalog_address(config.archive.catalog)
        self.name = f"{host()}:{os.getpid()}"
        self.progress: Progress = progress or (lambda _done, _total: None)

    def disks(self) -> dict[str, Path]:
        """This host's mirror disks by identity; one it cannot name is one sentence."""
        return {identity(device): device for device in self.config.archive.devices}

    def take(self, catalog: Catalog, session_id: int | None = None) -> Outcome | None:
        """Claim one split (session ``session_id``'s) and archive it; None when there is none.
        What only this host can get wrong (its disks, its target's directory, its spool) is
        checked before the claim: a split is never failed for the backup host's own problem."""
        disks = self.disks()
        self._ready()
        if session_id is not None:
            self._ours(catalog, session_id, disks)
        split = catalog.claim_split(
            worker=self.name, identities=list(disks), lease_s=self.config.archive.lease, session_id=session_id
        )
        if split is None:
            return None
        with Lease(self.address, split.session_id, self.name, self.config.archive.lease) as lease:
            return self._archive(catalog, split, disks[split.identity], lease)

    def _ready(self) -> None:
        """A target whose directory is missing or unwritable, and a spool that is not a
        directory, refuse before any split is claimed."""
        spool = self.config.archive.spool
        if spool is not None and not spool.is_dir():
            raise PreflightError(f"[archive] spool {spool} is not a directory; create it or remove the key")
        config = self.config.target
        if config.command is not None:
            if shutil.which(config.command[0]) is None:
                raise PreflightError(
                    f"[target] command {config.command[0]!r} is not a program here; install it"
                )
            return
        # The directory every archive goes to: the path up to its first field (``{name}`` may
        # open a directory of each database's, which the target itself then checks).
        fixed = config.path.split("{", 1)[0]
        directory = Path(fixed if fixed.endswith("/") else os.path.dirname(fixed) or ".")
        if os.path.exists(config.path) and not os.path.isfile(config.path):  # a tape
            directory = Path(config.path)
        if not directory.exists():
            raise PreflightError(
                f"the archive directory {directory} does not exist; create it, or fix [target] path"
            )
        if not os.access(directory, os.W_OK):
            raise PreflightError(f"the archive directory {directory} is not writable by this worker")

    def _ours(self, catalog: Catalog, session_id: int, disks: dict[str, Path]) -> None:
        """``--session ID``: a split that is not waiting, or that is on a disk this host does not
        have, is said, not skipped."""
        split = next(iter(catalog.handovers(session_id=session_id)), None)
        if split is None:
            raise CatalogError(f"session {session_id} was not handed over for off-host backup")
        if split.identity not in disks:
            seen = ", ".join(f"{path} is {name}" for name, path in disks.items())
            raise PreflightError(
                f"session {session_id}'s split was taken on the disk {split.identity}, and none of this "
                f"host's [archive] devices is it ({seen}); give the right disk in [archive] devices"
            )

    def _archive(self, catalog: Catalog, split: Handover, device: Path, lease: Lease) -> Outcome:
        started, clock = utc_now(), time.monotonic()
        outcome = Outcome(
            split.session_id, str(split.record.get("header", {}).get("session", {}).get("name")), FAILED
        )
        target = None
        try:
            record = SplitToArchive(split.record)
            target = self._target(split, outcome.name)
            members, fields = self._backup(catalog, split, record, device, target, lease)
        except (KeyboardInterrupt, SessionInterrupted, LeaseLost) as stopped:
            # Stopped, or fenced off: this worker's archive goes first (a renewal stuck on the
            # network must not hold that up), then its renewals stop, and the split goes back
            # at once, for the next worker (no renewal undoes that any more).
            if target is not None:
                with contextlib.suppress(Exception):
                    target.discard()
            lease.stop()
            with contextlib.suppress(CatalogError):
                catalog.renew_lease(split.session_id, worker=self.name, lease_s=0)
            if isinstance(stopped, LeaseLost):
                outcome.status, outcome.error = LOST, str(stopped)
                outcome.duration_s = time.monotonic() - clock
                return outcome
            raise
        except Exception as error:  # noqa: BLE001 - recorded as the session's failure, the mirror freed
            outcome.error = first_line(error)
            if target is not None:
                with contextlib.suppress(Exception):
                    target.discard()
            self._phase(catalog, split.session_id, "BACKUP", started, clock, outcome.error)
            finished = catalog.finish_handover(
                split.session_id, worker=self.name, archived=False, files=[], fields={},
                finished_at=utc_now(), failed_phase="BACKUP", error=outcome.error,
            )  # fmt: skip
            outcome.status = FAILED if finished else LOST
            outcome.duration_s = time.monotonic() - clock
            return outcome
        self._phase(catalog, split.session_id, "BACKUP", started, clock, None)
        cleanup, cleanup_clock = utc_now(), time.monotonic()
        self._phase(catalog, split.session_id, "CLEANUP", cleanup, cleanup_clock, None)
        lease.stop()  # the catalog decides now: only the worker it names can finish the split
        finished = not lease.lost.is_set() and catalog.finish_handover(
            split.session_id,
            worker=self.name,
            archived=True,
            files=members,
            fields=fields,
            finished_at=utc_now(),
        )
        if not finished:  # another worker took it: its archive is the one the catalog will name
            target.discard()  # this one's only: a file another worker put at the path stays
            outcome.status, outcome.error = LOST, "the lease ran out and another worker took the split over"
        else:
            outcome.status, outcome.archive = DONE, str(fields["archive"])
            outcome.files, outcome.bytes = int(fields["files"]), int(fields["bytes"])
        outcome.duration_s = time.monotonic() - clock
        return outcome

    def _target(self, split: Handover, name: str) -> Any:
        config = self.config.target
        cls = self.hooks.target_for_path(config.path, config.kind)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        target = cls.for_session(config, session=split.session_id, name=name, timestamp=stamp)
        if isinstance(target, FileTarget):
            target.write_aside(self.name.replace(":", "-"))
            if split.attempts > 1:  # what a worker before this one left of this split's archive
                for leftover in [target.path, *glob.glob(glob.escape(target.path) + PARTIAL_SUFFIX + "*")]:
                    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                        os.unlink(leftover)
        problems = target.preflight()
        if problems:
            raise PreflightError("; and ".join(problem.sentence() for problem in problems))
        return target

    def _backup(
        self,
        catalog: Catalog,
        split: Handover,
        record: SplitToArchive,
        device: Path,
        target: Any,
        lease: Lease,
    ) -> tuple[list[Any], dict[str, Any]]:
        with self._checked(device, split.identity), self._spool() as spool:
            mirror = OffHostMirror(record, device, lambda seq: catalog.parcel(split.session_id, seq), spool)
            try:
                files, unquiesced = record.inputs(lambda seq: catalog.parcel(split.session_id, seq))
                stats = dict(catalog.get(split.session_id).stats)
                header = record.header
                assembly = ArchiveAssembly(target, mirror, header, self.progress, stats)
                assembly.collected_in_mirror = True  # the database host sent them
                window = {key: header[key] for key in ("window_ms", "blocked_ms", "metadata")}
                fields = assembly.write_under(Budget(), files, unquiesced, window, before_read=lease.check)
            finally:
                mirror.reestablish()  # closes its readers and removes the parcels' copies
        fields["stats"] = {**fields["stats"], "archived_by": self.name}
        return assembly.members, fields

    @contextlib.contextmanager
    def _checked(self, device: Path, expected: str) -> Iterator[None]:
        """The disk at ``device`` is the one the split was taken on, asked of the open device."""
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            found = identity_of(fd, str(device))
            if found != expected:
                raise PreflightError(
                    f"{device} is the disk {found}, not {expected} on which the split was taken; give the "
                    "right disk in [archive] devices"
                )
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _spool(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(
            prefix="splitmirror-archive-", dir=self.config.archive.spool
        ) as spool:
            yield Path(spool)

    @staticmethod
    def _phase(
        catalog: Catalog, session_id: int, name: str, started: str, clock: float, error: str | None
    ) -> None:
        record = PhaseRecord(name, started, (time.monotonic() - clock) * 1000, error, host())
        with contextlib.suppress(CatalogError):
            catalog.record_phase(session_id, record)
