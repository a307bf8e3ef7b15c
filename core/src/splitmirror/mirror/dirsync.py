"""The incremental synchronizer behind the ``directory`` mirror provider.

The final pass runs inside the quiesce window, so a pass must cost what changed, not what exists:
unchanged files are skipped by fingerprint without being read, changed files are compared block by
block and only differing blocks are written, in place, and sparse files stay sparse so the mirror
needs no more space than the primary.  Special files (FIFOs, sockets, devices) are skipped and
counted nowhere: databases keep no data in them and opening a FIFO could block the pass.  Hard
links on the primary become independent copies.  Nothing under the primary is ever written.

This module walks the tree and keeps it: which files to visit (fingerprints, and change tracking's
:mod:`.filetrack`), directories, symlinks, deletions, types, modes, owners and times, and the
state file; :mod:`.filecopy` makes each visited file's bytes and holes the primary's.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import UserError
from ..placement import containment_problem
from ..progress import Progress, no_progress
from .base import SyncStats
from .filecopy import FileCopy
from .filetrack import TrackedFiles
from .ownership import claim_of

#: Compare-and-write granularity: at 1 % churn, 1 MiB blocks wrote 83 MiB where 64 KiB wrote
#: 5-11 MiB, in the same time (docs/performance.md).
DEFAULT_BLOCK_SIZE = 64 * 1024
STATE_VERSION = 1
#: st_ino, st_size, st_mtime_ns, st_ctime_ns of a primary file, as recorded in the state file.
Fingerprint = list[int]


class DirectorySync:
    """Keeps ``mirror`` equal to ``primary``, remembering fingerprints in ``state_path``.

    ``racy_seconds``: a file modified this recently when it was examined gets no fingerprint, so
    the next pass compares its content.  File timestamps tick coarser than the clock (a jiffy; a
    second or two on some filesystems); a write landing in the same tick after the examination
    would leave the fingerprint unchanged and the mirror silently stale at the split.
    """

    def __init__(
        self,
        primary: Path,
        mirror: Path,
        state_path: Path,
        block_size: int = DEFAULT_BLOCK_SIZE,
        *,
        racy_seconds: float = 2.0,
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be at least one byte")
        problem = containment_problem(primary, mirror)
        if problem:
            raise UserError(f"{problem}; choose a mirror directory outside the primary.")
        for root in (primary.resolve(), mirror.resolve()):
            if root == state_path.resolve() or root in state_path.resolve().parents:
                raise UserError(f"the sync state file {state_path} is inside {root}; keep it outside.")
        self.primary = Path(os.path.abspath(primary))
        self.mirror = Path(os.path.abspath(mirror))
        self.state_path = state_path
        self.block_size = block_size
        self.racy_ns = int(racy_seconds * 1e9)
        self.as_root = os.geteuid() == 0
        #: Change tracking (the directory mirror's, when on): which files to visit, which of
        #: their ranges to copy.  ``map_all``: this pass maps every file (the bulk pass).
        self.tracked: TrackedFiles | None = None
        self.map_all = False
        #: Relative paths a pass leaves as they are, their recorded fingerprints kept: what the
        #: archive collects from the primary, skipped by the final pass (inside the window).
        self.skip: frozenset[str] = frozenset()
        #: Real paths of the primary and of the directories :meth:`relative` was asked about,
        #: remembered for one pass: the final pass asks for every file DISCOVER listed, inside
        #: the window, and a database's thousand files share a few directories.
        self._real: dict[str, str] = {}

    def sync(
        self,
        first: Sequence[Path] = (),
        progress: Progress = no_progress,
        on_file: Callable[[Path], None] | None = None,
    ) -> SyncStats:
        """Make the mirror equal to the primary; durable (fsynced) when this returns.

        ``first`` files are synchronized before the rest, in the given order; ``on_file`` is
        called with the primary path of every file and symlink once it is synchronized.
        """
        self._real = {}  # a link in the primary may have been re-pointed since the last pass
        one = _Pass(self, progress, on_file)
        stats = one.run(first)
        self._save_state(one.new)
        return stats

    def relative(self, path: Path) -> str:
        """``path`` relative to the primary through real directories, so that a file reached
        through a symlinked directory is copied where the mirror really holds it."""
        directory, name = os.path.split(os.path.abspath(path))
        real = os.path.join(self._realpath(directory), name)
        root = self._realpath(str(self.primary))
        if real == root:
            return "."
        inside = root.rstrip(os.sep) + os.sep
        if not real.startswith(inside):
            raise UserError(f"{path} is not inside the primary {root}, so it is not mirrored.")
        return real[len(inside) :]

    def _realpath(self, path: str) -> str:
        real = self._real.get(path)
        if real is None:
            real = self._real[path] = os.path.realpath(path)
        return real

    def load_state(self) -> dict[str, Fingerprint]:
        """The previous pass's fingerprints; empty when missing, unreadable or for another pair."""
        try:
            doc = json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        ours = isinstance(doc, dict) and doc.get("version") == STATE_VERSION
        ours = ours and (doc.get("primary"), doc.get("mirror"), doc.get("claim")) == (
            str(self.primary),
            str(self.mirror),
            claim_of(self.mirror),
        )
        files = doc.get("files") if ours else None
        return files if isinstance(files, dict) else {}

    def _save_state(self, files: dict[str, Fingerprint]) -> None:
        doc = {
            "version": STATE_VERSION,
            "primary": str(self.primary),
            "mirror": str(self.mirror),
            "claim": claim_of(self.mirror),  # a mirror handed over and back is compared in full
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "w", encoding="ascii") as out:
            # dumps, not dump: ``json.dump`` encodes in Python, piece by piece (20 ms for a
            # thousand files, inside the window); ``dumps`` uses the C encoder.
            out.write(json.dumps({**doc, "files": files}, separators=(",", ":")))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.state_path)
        _fsync_dir(str(self.state_path.parent))


class _Pass:
    """The bookkeeping of one :meth:`DirectorySync.sync` call; paths are relative strings."""

    def __init__(
        self, cfg: DirectorySync, progress: Progress, on_file: Callable[[Path], None] | None
    ) -> None:
        self.cfg = cfg
        self.progress = progress
        self.on_file = on_file
        self.stats = SyncStats()
        self.old = cfg.load_state()
        self.new: dict[str, Fingerprint] = {}
        self.done: set[str] = set()
        self.dirs: list[tuple[str, os.stat_result]] = []
        self.ensured: set[str] = set()  # mirror directories made ready in this pass
        self.dirty: set[str] = set()
        self.done_bytes = 0
        self.copy = FileCopy(cfg.block_size, self.stats, self._advance)

    def _src(self, rel: str) -> str:
        return os.path.join(self.cfg.primary, rel) if rel else str(self.cfg.primary)

    def _dst(self, rel: str) -> str:
        return os.path.join(self.cfg.mirror, rel) if rel else str(self.cfg.mirror)

    def run(self, first: Sequence[Path]) -> SyncStats:
        root = self._prepare_roots()
        for path in first:
            rel = self.cfg.relative(path)
            pst = _stat(self._src(rel))
            if rel not in self.done and pst is not None and not stat.S_ISDIR(pst.st_mode):
                for depth in range(rel.count(os.sep), 0, -1):
                    self._ensure_dir(rel.rsplit(os.sep, depth)[0])
                self._sync_entry(rel)
                self.done.add(rel)
        self._walk(root)
        self._finish_dirs()
        return self.stats

    def _prepare_roots(self) -> os.stat_result:
        try:
            root = os.stat(self.cfg.primary)
        except FileNotFoundError:
            raise UserError(f"the primary {self.cfg.primary} does not exist.") from None
        if not stat.S_ISDIR(root.st_mode):
            raise UserError(f"the primary {self.cfg.primary} is not a directory.")
        mst = _stat(self._dst(""), follow=True)
        if mst is not None and not stat.S_ISDIR(mst.st_mode):
            raise UserError(f"the mirror {self.cfg.mirror} exists and is not a directory.")
        try:
            self._ensure_dir("")
        except FileNotFoundError:
            parent = self.cfg.mirror.parent
            raise UserError(f"the mirror's parent {parent} does not exist; create it.") from None
        return root

    def _walk(self, root: os.stat_result) -> None:
        """Depth-first over the primary; each mirror directory is cleaned before it is filled."""
        stack = [("", root)]
        while stack:
            rel, st = stack.pop()
            try:
                with os.scandir(self._src(rel)) as it:
                    entries = sorted(it, key=lambda entry: entry.name)
            except (FileNotFoundError, NotADirectoryError):
                if not rel:
                    raise
                self._remove(rel)
                continue
            self.dirs.append((rel, st))
            self._drop_extras(rel, {entry.name for entry in entries})
            subdirs = []
            for entry in entries:
                child = os.path.join(rel, entry.name)
                if child in self.done:
                    continue
                if child in self.cfg.skip:
                    self._keep(child)
                    continue
                if not entry.is_dir(follow_symlinks=False):
                    self._sync_entry(child)
                    continue
                try:
                    subdirs.append((child, entry.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    self._remove(child)
                    continue
                self._ensure_dir(child)
            stack.extend(reversed(subdirs))

    def _keep(self, rel: str) -> None:
        """Leave ``rel`` (and what is below it) as the mirror has it; what the last pass
        recorded of it still stands, so the next pass compares exactly what changed since."""
        below = rel + os.sep
        self.new.update((name, fp) for name, fp in self.old.items() if name == rel or name.startswith(below))

    def _drop_extras(self, rel: str, names: set[str]) -> None:
        with os.scandir(self._dst(rel)) as it:
            extras = [entry.name for entry in it if entry.name not in names]
        for name in extras:
            self._remove(os.path.join(rel, name))

    def _ensure_dir(self, rel: str) -> None:
        """A mirror directory we can write into; its real mode is set by :meth:`_finish_dirs`.
        Once a pass: each of the files listed first makes sure of every directory above it."""
        if rel in self.ensured:
            return
        path = self._dst(rel)
        mst = _stat(path, follow=not rel)
        if mst is not None and not stat.S_ISDIR(mst.st_mode):
            self._remove(rel)
            mst = None
        if mst is None:
            os.mkdir(path, 0o700)
            self.dirty.add(os.path.dirname(path))
        elif not self.cfg.as_root and mst.st_mode & 0o700 != 0o700:
            os.chmod(path, stat.S_IMODE(mst.st_mode) | 0o700)
        self.ensured.add(rel)

    def _remove(self, rel: str) -> None:
        path = self._dst(rel)
        if _stat(path) is not None:
            below = rel + os.sep
            self.ensured = {d for d in self.ensured if d != rel and not d.startswith(below)}
            self.stats.files_deleted += _remove_tree(path, self.cfg.as_root)
            self.dirty.add(os.path.dirname(path))

    def _sync_entry(self, rel: str) -> None:
        pst = _stat(self._src(rel))
        if pst is None or not (stat.S_ISREG(pst.st_mode) or stat.S_ISLNK(pst.st_mode)):
            if pst is None or not stat.S_ISDIR(pst.st_mode):
                self._remove(rel)  # vanished, or a special file: never mirrored
            return
        self.stats.files_scanned += 1
        synced = self._sync_file if stat.S_ISREG(pst.st_mode) else self._sync_link
        if not synced(rel, pst):
            self._remove(rel)
        elif self.on_file is not None:
            self.on_file(Path(self._src(rel)))

    def _sync_link(self, rel: str, pst: os.stat_result) -> bool:
        try:
            target = os.readlink(self._src(rel))
        except OSError:
            return False  # vanished or no longer a symlink; the next pass sees what it became
        path = self._dst(rel)
        mst = _stat(path)
        was_link = mst is not None and stat.S_ISLNK(mst.st_mode)
        if not (was_link and os.readlink(path) == target):
            if was_link:
                os.unlink(path)
            else:
                self._remove(rel)
            os.symlink(target, path)
            self.dirty.add(os.path.dirname(path))
            mst = None
        changed = self._apply_meta(path, pst, mst, False, link=True)
        if changed:
            self.dirty.add(os.path.dirname(path))  # a symlink cannot be fsynced by itself
        self._count(created=not was_link, changed=changed)
        return True

    def _sync_file(self, rel: str, pst: os.stat_result) -> bool:
        """Skip by fingerprint without opening, else compare and update in place."""
        mst = _stat(self._dst(rel))
        if mst is not None and not stat.S_ISREG(mst.st_mode):
            self._remove(rel)
            mst = None
        tracked = self.cfg.tracked
        visit = tracked is not None and not self.cfg.map_all and tracked.must_visit(rel)
        if mst is not None and mst.st_size == pst.st_size and self.old.get(rel) == _fp(pst) and not visit:
            self.stats.files_unchanged += 1
            self.new[rel] = _fp(pst)
            self._advance(pst.st_size)
            if tracked is not None and self.cfg.map_all:
                self._map(rel)
            return True
        try:
            src = _open_primary(self._src(rel))
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ELOOP):
                return False
            raise
        try:
            now = time.time_ns()
            st = os.fstat(src)  # the fingerprint is taken before reading: later writes show
            if not stat.S_ISREG(st.st_mode):
                return False
            whole = self._update(src, st, rel, mst)
            if whole and max(st.st_mtime_ns, st.st_ctime_ns) < now - self.cfg.racy_ns:
                self.new[rel] = _fp(st)
            return True
        finally:
            os.close(src)

    def _update(self, src: int, st: os.stat_result, rel: str, mst: os.stat_result | None) -> bool:
        """Bring the mirror's file up to date; False when only tracked ranges were copied (the
        file's dirty pages not yet written back are not among them)."""
        path = self._dst(rel)
        if mst is None:
            dst = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self.dirty.add(os.path.dirname(path))
        else:
            dst, mst = _open_for_update(path, mst, self.cfg.as_root)
        try:
            tracked = self.cfg.tracked
            got = tracked.ranges(rel, src) if tracked and mst is not None and not self.cfg.map_all else None
            if got is not None:
                changed = self.copy.copy_ranges(src, dst, st.st_size, got)
            else:
                changed = self.copy.copy(src, dst, st.st_size, compare=mst is not None)
                if tracked is not None:
                    tracked.mapped(rel, src)
            changed = self._apply_meta(dst, st, mst, changed) or changed
            if changed:
                os.fsync(dst)
        finally:
            os.close(dst)
        self._count(created=mst is None, changed=changed)
        return got is None

    def _map(self, rel: str) -> None:
        """The bulk pass of a tracked mirror maps every file, changed or not."""
        assert self.cfg.tracked is not None
        try:
            src = _open_primary(self._src(rel))
        except OSError:
            self.cfg.tracked.unsettled.add(rel)  # not in the index: visit it on every pass
            return
        try:
            self.cfg.tracked.mapped(rel, src)
        finally:
            os.close(src)

    def _apply_meta(
        self,
        target: int | str,
        st: os.stat_result,
        mst: os.stat_result | None,
        force: bool,
        link: bool = False,
    ) -> bool:
        """Give the mirror entry the primary's owner (as root), mode and times; True if set."""
        follow = not link
        chown = self.cfg.as_root and (mst is None or (mst.st_uid, mst.st_gid) != (st.st_uid, st.st_gid))
        if chown:
            os.chown(target, st.st_uid, st.st_gid, follow_symlinks=follow)
        mode = stat.S_IMODE(st.st_mode)
        chmod = not link and (mst is None or chown or stat.S_IMODE(mst.st_mode) != mode)
        if chmod:
            os.chmod(target, mode)  # after chown, which clears set-id bits
        utime = force or chown or chmod or mst is None or mst.st_mtime_ns != st.st_mtime_ns
        if utime:
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=follow)
        return utime

    def _finish_dirs(self) -> None:
        """Directory modes and times last, children first: filling a directory changes its
        mtime, and a read-only mode would have stopped us filling it.  Then fsync them."""
        for rel, st in reversed(self.dirs):
            path = self._dst(rel)
            mst = _stat(path, follow=not rel)
            if mst and stat.S_ISDIR(mst.st_mode) and self._apply_meta(path, st, mst, False):
                self.dirty.add(path)
        for path in sorted(self.dirty):
            _fsync_dir(path)

    def _count(self, created: bool, changed: bool) -> None:
        if created:
            self.stats.files_created += 1
        elif changed:
            self.stats.files_updated += 1
        else:
            self.stats.files_unchanged += 1

    def _advance(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        self.progress(self.done_bytes, None)


def _fp(st: os.stat_result) -> Fingerprint:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _stat(path: str, follow: bool = False) -> os.stat_result | None:
    """None for a path that is not there, also when a directory on its way became a file."""
    try:
        return os.stat(path, follow_symlinks=follow)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _open_primary(path: str) -> int:
    """Read-only, never following a symlink, never blocking on a FIFO, not updating atime."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError as error:
        if error.errno != errno.EPERM:  # O_NOATIME needs ownership; EPERM is only that
            raise
        return os.open(path, flags)


def _open_for_update(path: str, mst: os.stat_result, as_root: bool) -> tuple[int, os.stat_result]:
    """Open a mirror file read-write; a read-only copy (of a read-only primary) is made
    writable first, and the returned stat shows that so the primary's mode is put back."""
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC), mst
    except PermissionError:
        if as_root:
            raise
    os.chmod(path, stat.S_IMODE(mst.st_mode) | 0o600)
    return os.open(path, os.O_RDWR | os.O_CLOEXEC), os.lstat(path)


def _remove_tree(path: str, as_root: bool) -> int:
    """Delete a mirror entry of any type; returns how many non-directories went with it."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return 1
    if not as_root and st.st_mode & 0o700 != 0o700:
        os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
    with os.scandir(path) as it:
        children = [entry.path for entry in it]
    removed = sum(_remove_tree(child, as_root) for child in children)
    os.rmdir(path)
    return removed


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return  # removed (or replaced) later in the pass; its parent is fsynced instead
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
