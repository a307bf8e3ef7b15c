"""The PostgreSQL engine (docs/databases/postgresql.md).

HOT_BACKUP: on the one connection held for the session, a temporary physical replication slot
keeps every WAL segment from now on, then ``pg_backup_start(label, fast)``; the split happens;
``pg_backup_stop(false)`` returns the stop LSN, ``backup_label`` and ``tablespace_map``.  The
mirror's own ``pg_wal`` is not enough (WAL written between the split and the stop is not on it),
so the segments from the label's start file to the stop LSN are *collected* from the primary
after the window — the slot guarantees they still exist — and archived in order, followed by
the label and map.  The restored directory then recovers by itself, as ``pg_basebackup -X
fetch`` output does: backup_label in the root, the WAL in ``pg_wal``, nothing to configure.

FREEZE: ``CHECKPOINT`` (only to shorten recovery), then SPLIT freezes every filesystem holding
the data directory, ``pg_wal`` and the tablespaces; the image is a crash image with its WAL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import pydantic

from splitmirror.api import (
    DatabaseFile,
    DrillCopy,
    ExtraMember,
    Mode,
    PreflightProblem,
    RestoreStep,
    ServerEngine,
    ServerInfo,
    ServerOptions,
    SplitmirrorError,
    UnquiesceResult,
    first_line,
)

from . import drill, identity, layout, restored_paths
from .restore import restore_steps


class PostgresOptions(ServerOptions):
    """``path_map`` (``"/var/lib/postgresql/data" = "/srv/pg"``) and ``connect_timeout``, and:"""

    #: ``pg_backup_start(fast => true)``: an immediate checkpoint, for a short window.
    fast_checkpoint: bool = True


class BackupFailed(SplitmirrorError):
    """PostgreSQL refused to start or stop the backup."""


class PostgresEngine(ServerEngine[psycopg.Connection[Any], PostgresOptions]):
    name = "postgresql"
    url_schemes = ("postgresql", "postgres")
    secret_variables = ("PGPASSWORD",)
    options_model = PostgresOptions
    server_name = "PostgreSQL"
    password_sources = "PGPASSWORD or ~/.pgpass (PGPASSFILE)"
    driver_errors = (psycopg.Error,)
    frozen_files = "the data directory, pg_wal and tablespaces"
    freeze_reason = "FREEZE freezes filesystems"
    freeze_alternative = 'mode = "hot-backup"'
    drill_port = 5432

    def __init__(self, url: str, options: pydantic.BaseModel) -> None:
        super().__init__(url, options)
        self._in_backup = False
        self.version = 0
        self.server: dict[str, Any] = {}
        self.tablespaces: list[tuple[int, str, str]] = []

    # -- connection and facts -------------------------------------------------------------

    def open_connection(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.url, autocommit=True, connect_timeout=max(1, int(self.settings.connect_timeout))
        )

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params or None).fetchall())

    def describe_server(self) -> ServerInfo:
        self.version = self.conn.info.server_version
        rows = self.conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('data_directory', 'wal_level', "
            "'wal_segment_size', 'max_replication_slots', 'archive_mode')"
        ).fetchall()
        self.server = dict(rows)
        self.tablespaces = self.conn.execute(
            "SELECT oid, spcname, pg_tablespace_location(oid) FROM pg_tablespace"
        ).fetchall()
        return ServerInfo("postgresql", str(self._one("SHOW server_version")), "")

    def server_data_directory(self) -> str | None:
        return self.server.get("data_directory")

    # -- preflight ------------------------------------------------------------------------

    def preflight(self, mode: Mode) -> list[PreflightProblem]:
        problems: list[PreflightProblem] = []
        user = self._one("SELECT current_user")
        superuser = bool(self._one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
        if self.version < 150000:
            problems.append(
                PreflightProblem(
                    f"PostgreSQL {self.version // 10000} is not supported",
                    "use PostgreSQL 15 or newer (pg_backup_start/pg_backup_stop)",
                )
            )
        if "data_directory" not in self.server:
            problems.append(
                PreflightProblem(
                    f"role {user} cannot read the server's settings",
                    f"GRANT pg_read_all_settings TO {user}",
                )
            )
            return problems
        problems += self.data_directory_problems()
        if mode is Mode.HOT_BACKUP:
            problems += self._hot_problems(str(user), superuser)
        else:
            problems += self._freeze_problems(str(user), superuser)
        return problems

    def identity_problems(self) -> list[PreflightProblem]:
        """The files are the running server's (:mod:`.identity`); a checkpoint between the two
        reads moves the LSN, so a mismatch is read once more before it counts."""
        for _attempt in range(3):
            try:
                system, checkpoint = identity.on_disk(self.datadir)
                live_system = int(self._one("SELECT system_identifier FROM pg_control_system()"))
                live_checkpoint = identity.lsn(
                    str(self._one("SELECT checkpoint_lsn FROM pg_control_checkpoint()"))
                )
            except (OSError, psycopg.Error):
                return []  # unreadable files are reported above; without the functions, no comparison
            if (system, checkpoint) == (live_system, live_checkpoint):
                return []
        what = (
            f"another cluster (system identifier {system}, the server's is {live_system})"
            if system != live_system
            else "an older copy of the server's cluster (its last checkpoint is not the server's)"
        )
        return [self.foreign_data_directory(what)]

    def _hot_problems(self, user: str, superuser: bool) -> list[PreflightProblem]:
        problems = []
        if self.server.get("wal_level") == "minimal":
            problems.append(
                PreflightProblem(
                    "wal_level is minimal, and HOT_BACKUP needs WAL for the backup",
                    "ALTER SYSTEM SET wal_level = replica, then restart PostgreSQL",
                )
            )
        if not superuser:
            for function in ("pg_backup_start(text, boolean)", "pg_backup_stop(boolean)"):
                if not self._one("SELECT has_function_privilege(%s, 'EXECUTE')", function):
                    problems.append(
                        PreflightProblem(
                            f"role {user} may not call {function}",
                            f"GRANT EXECUTE ON FUNCTION {function} TO {user}",
                        )
                    )
            if not self._one("SELECT rolreplication FROM pg_roles WHERE rolname = current_user"):
                problems.append(
                    PreflightProblem(
                        f"role {user} lacks REPLICATION, needed for the slot that keeps the backup's WAL",
                        f"ALTER ROLE {user} REPLICATION",
                    )
                )
        if int(self.server.get("max_replication_slots", 0)) < 1:
            problems.append(
                PreflightProblem(
                    "max_replication_slots is 0, and HOT_BACKUP holds a temporary slot",
                    "ALTER SYSTEM SET max_replication_slots = 10, then restart PostgreSQL",
                )
            )
        return problems

    def _freeze_problems(self, user: str, superuser: bool) -> list[PreflightProblem]:
        problems = []
        if not superuser and not self._one("SELECT pg_has_role(current_user, 'pg_checkpoint', 'MEMBER')"):
            problems.append(
                PreflightProblem(f"role {user} may not CHECKPOINT", f"GRANT pg_checkpoint TO {user}")
            )
        return problems + self.freeze_problems(Mode.FREEZE)

    # -- files ----------------------------------------------------------------------------

    def layout(self) -> list[Path]:
        if "data_directory" not in self.server:
            return []  # unreadable without pg_read_all_settings: preflight says which GRANT
        return [
            path
            for path, _relative in layout.walk(self.datadir, with_wal=True, link_target=self._link_target)
        ]

    def _link_target(self, link: Path) -> Path:
        """Where a link in the data directory (``pg_tblspc/<oid>``, ``pg_wal``) leads on this
        host: the server wrote it with its own paths (``path_map``)."""
        target = os.readlink(link)
        return self.host_path(target) if os.path.isabs(target) else (link.parent / target).resolve()

    def discover(self) -> list[DatabaseFile]:
        # In HOT_BACKUP the WAL is collected up to the stop LSN instead of taken from the mirror.
        with_wal = self._mode is not Mode.HOT_BACKUP
        datadir = self.datadir
        files = []
        for path, relative in layout.walk(datadir, with_wal=with_wal, link_target=self._link_target):
            key = layout.logical_key(relative)
            role = "wal" if key[0] == 2 else ("data" if key[0] == 0 else "cluster")
            # The server keeps working until the split (FREEZE freezes the filesystem only then):
            # a table dropped now, a WAL segment a checkpoint recycles, lose their files, and
            # replay drops them in the restore too.  pg_control never goes away.
            may_vanish = relative != layout.PG_CONTROL
            files.append(DatabaseFile(path, key, role, may_vanish=may_vanish))
        return files

    def collected_paths(self, mode: Mode) -> list[Path]:
        """HOT_BACKUP archives the WAL from the primary after ``pg_backup_stop``: the final pass
        need not copy what pgbench-like writers put in ``pg_wal`` meanwhile (measured: most of
        its bytes)."""
        return [self.datadir / "pg_wal"] if mode is Mode.HOT_BACKUP else []

    def freeze_paths(self, mode: Mode) -> list[Path]:
        if mode is not Mode.FREEZE or "data_directory" not in self.server:
            return []  # HOT_BACKUP repairs the non-atomic copy by replaying WAL
        wal = self.datadir / "pg_wal"
        paths = [self.datadir, self._link_target(wal) if wal.is_symlink() else wal]
        paths += [self.host_path(location) for _oid, _name, location in self.tablespaces if location]
        return paths

    # -- the mode -------------------------------------------------------------------------

    def before_window(self, mode: Mode) -> None:
        """A checkpoint while the server still runs: the one QUIESCE asks for (``CHECKPOINT``
        in FREEZE, ``pg_backup_start``'s in HOT_BACKUP) then writes only what was dirtied
        since, and the mirror's last pre-copy pass copies what this one wrote.  Skipped for a
        role that may not CHECKPOINT (HOT_BACKUP does not need it): only the window is longer."""
        allowed = self._one(
            "SELECT pg_has_role(current_user, 'pg_checkpoint', 'MEMBER')"
            " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        )
        if allowed:
            self.conn.execute("CHECKPOINT")

    def quiesce(self, mode: Mode) -> None:
        self._mode = mode
        if mode is Mode.FREEZE:
            self.conn.execute("CHECKPOINT")
            return
        slot = f"splitmirror_{os.getpid()}_{id(self) & 0xFFFF}"
        try:
            self.conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (slot,))
            self._in_backup = True
            self.conn.execute(
                "SELECT pg_backup_start(%s, %s)", (f"splitmirror {slot}", self.settings.fast_checkpoint)
            )
        except psycopg.Error as error:
            raise BackupFailed(f"PostgreSQL refused to start the backup: {first_line(error)}") from None

    def prepare(self) -> Mapping[str, Any]:
        """What a restore needs to put the data directory and tablespaces back together: where
        they were on this host (the archive names files by their place under the primary)."""
        return {
            "server_version_num": self.version,
            "data_directory": self.server.get("data_directory"),
            "data_directory_host": str(self.datadir.resolve()),
            "archive_mode": self.server.get("archive_mode"),
            "tablespaces": [
                {
                    "oid": oid,
                    "name": name,
                    "location": location,
                    **_tablespace_on_host(self.host_path(location)),
                }
                for oid, name, location in self.tablespaces
                if location
            ],
        }

    def unquiesce(self) -> UnquiesceResult:
        if self._mode is Mode.FREEZE:
            self._mode = None
            return UnquiesceResult(label="postgresql freeze (crash image with its WAL)")
        try:
            stop_lsn, labelfile, spcmapfile = self.conn.execute(
                "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
            ).fetchone() or (None, "", "")
        except psycopg.Error as error:
            raise BackupFailed(f"PostgreSQL refused to stop the backup: {first_line(error)}") from None
        self._in_backup = False
        self._mode = None
        label = _parse_label(labelfile)
        start_wal = label["START WAL LOCATION"].split("file ")[1].rstrip(")")
        segments = layout.wal_segments(start_wal, str(stop_lsn), int(self.server["wal_segment_size"]))
        wal = [DatabaseFile(self.datadir / "pg_wal" / name, (2, name), "wal") for name in segments]
        extra = [self._label_member("backup_label", labelfile)]
        if spcmapfile:
            extra.append(self._label_member("tablespace_map", spcmapfile))
        redo = {
            "start_lsn": label["START WAL LOCATION"].split()[0],
            "stop_lsn": stop_lsn,
            "timeline": int(label.get("START TIMELINE", "1")),
            "wal_files": [segments[0], segments[-1]],
        }
        return UnquiesceResult(
            label=label.get("LABEL", ""), redo_range=redo, extra_members=extra, collected_files=wal
        )

    def _label_member(self, name: str, text: str) -> ExtraMember:
        """``backup_label`` / ``tablespace_map``, archived in the data directory's root."""
        return ExtraMember(name, text.encode(), (3, name), "label", path=self.datadir / name)

    def release(self, mode: Mode | None) -> None:
        """End a backup :meth:`quiesce` started; closing the connection ends it too (and drops
        the temporary slot)."""
        if mode is not Mode.HOT_BACKUP or not self._in_backup:
            return
        self._in_backup = False
        self.conn.execute("SELECT pg_backup_stop(false)")

    @classmethod
    def prepare_restore(cls, directory: Path, manifest: Mapping[str, Any]) -> list[RestoreStep]:
        """Recreate what an archive cannot carry (it holds files only): the directories a
        cluster needs, the modes PostgreSQL insists on, and each tablespace's ``pg_tblspc``
        link, pointed at the tablespace's *restored* copy (never at the live one; a
        ``tablespace_map`` is rewritten to match).  The WAL and backup_label are in place."""
        datadir = restored_paths.data_directory(directory, manifest)
        version = int(manifest.get("metadata", {}).get("server_version_num") or 0)
        for name in layout.required_dirs(version):
            (datadir / name).mkdir(parents=True, exist_ok=True)
        for path in (datadir, *datadir.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o700)
        (datadir / "postmaster.pid").unlink(missing_ok=True)
        tablespaces = restored_paths.link_tablespaces(directory, datadir, manifest)
        return restore_steps(
            directory, datadir, manifest, [t for t in tablespaces if not t.is_relative_to(datadir)]
        )

    @classmethod
    def drill_environment(cls, port: int, scratch: Path) -> Mapping[str, str]:
        """``PGPORT``, which ``pg_ctl`` passes on to the server (``runuser`` keeps the
        environment): the copy listens on the drill's port, its socket file and lock file are
        named by that port, and its shared memory keys derive from it, so nothing it makes can
        meet the live server's.  A ``port`` set in the restored ``postgresql.conf`` (or
        ``postgresql.auto.conf``) overrides it: the copy then fails to start beside the live
        server, which keeps its port (docs/databases/postgresql.md, "Drills")."""
        return {"PGPORT": str(port)}

    @classmethod
    def drill_check(cls, copy: DrillCopy) -> list[str]:
        """Wait for the copy to open, amcheck every database, run the query (:mod:`.drill`)."""
        return drill.check(copy)

    @classmethod
    def drill_stop(cls, copy: DrillCopy) -> None:
        """``pg_ctl stop -m fast`` for the daemon the host route's ``pg_ctl start`` left."""
        drill.stop(copy)


def _tablespace_on_host(location: Path) -> dict[str, Any]:
    """Where a tablespace really is on this host, and its version directory (``PG_15_2022...``),
    which a restore recreates even when the tablespace holds no file yet."""
    real = location.resolve()
    try:
        versions = sorted(d.name for d in real.iterdir() if d.name.startswith("PG_") and d.is_dir())
    except OSError:
        versions = []
    return {"host_path": str(real), "version_directories": versions}


def _parse_label(labelfile: str) -> dict[str, str]:
    fields = {}
    for line in labelfile.splitlines():
        key, _, value = line.partition(": ")
        fields[key.strip()] = value.strip()
    return fields
