"""Real PostgreSQL clusters from the host's binaries, for tests: new ones, and restored copies.

:class:`HostPostgres` runs a throw-away cluster (initdb, pg_ctl) for fast tests without
containers; :func:`started_as_printed` starts a restored copy by the steps ``splitmirror
restore`` printed and :func:`restored` (for harness tests) a copied data directory, each until it
has recovered; :func:`amcheck` runs ``pg_amcheck`` on it.  The contract suite's side is in
:mod:`.testing`.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) every server-side
command runs as the ``postgres`` OS user, and the directories it uses are handed to that user:

* the data directory is chowned to ``postgres`` with mode 0700 (the server insists on 0700/0750);
* the socket directory and the server log live in a separate *work directory*, also owned by
  ``postgres``, **outside** the data directory, so the mirror never copies a socket or a log;
* every ancestor of those directories must be traversable by ``postgres``.  pytest's temporary
  directories (``/tmp/pytest-of-root/...``) are 0700 root, so :func:`make_traversable` adds the
  search bit (``o+x``: enter, not list) to the ancestors that lack it.  This was chosen over
  keeping the cluster under ``/var/tmp``: the contract suite needs the data directory *inside*
  the test's workspace (``[mirror] primary``), so its parents have to be opened anyway, and pytest
  itself resets its base directory to 0700 at the next run.

Unix socket paths are limited to 107 bytes; when the work directory is too deep for that, the
socket goes into a short private directory under the system temporary directory instead (removed
by :meth:`HostPostgres.stop`).  Connection strings never carry a password: the test clusters use
``trust`` authentication on their private socket (listen_addresses is empty, no TCP at all).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg

from splitmirror.testing import RestoreResult, containers
from splitmirror.testing.steps import run_host_steps

from . import restored_paths

#: The server binaries used unless ``$SPLITMIRROR_PG_BINDIR`` names others.
DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")
#: The OS user the server runs as when the tests run as root.
OS_USER = "postgres"
#: Binaries the harness calls.
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres", "pg_amcheck")
#: Longest socket directory that still leaves room for ``/.s.PGSQL.NNNNN`` in 107 bytes.
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")
#: Seconds a server may take to start (crash recovery of a restored copy included) or stop.
START_TIMEOUT, STOP_TIMEOUT = 120, 60


def bindir() -> Path:
    """The directory holding the PostgreSQL server binaries the harness uses."""
    return Path(os.environ.get("SPLITMIRROR_PG_BINDIR", str(DEFAULT_BINDIR)))


def unavailable() -> str | None:
    """Why host PostgreSQL clusters cannot be run here (a sentence for ``pytest.skip``), or None.

    Root is required because the restored files belong to root (splitmirror's restore runs as
    root) and must be handed to ``postgres`` before the server will open them."""
    missing = [name for name in REQUIRED_BINARIES if not (bindir() / name).is_file()]
    if missing:
        return (
            f"PostgreSQL server binaries not found in {bindir()} ({', '.join(missing)}); "
            "set $SPLITMIRROR_PG_BINDIR"
        )
    if os.geteuid() != 0:
        return "host PostgreSQL tests need root (to run the server as the postgres user and chown restores)"
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        return f"there is no {OS_USER!r} OS user to run the PostgreSQL server as"
    return None


def _account() -> pwd.struct_passwd | None:
    """The account server-side commands run as, or None to run them as ourselves (not root)."""
    return pwd.getpwnam(OS_USER) if os.geteuid() == 0 else None


def run_as_postgres(argv: list[str], *, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as the postgres OS user (when we are root), output captured, never raising on
    a non-zero exit.  The environment is cleaned of ``PG*`` variables so a developer's PGHOST or
    PGDATA cannot redirect a test; the working directory is ``/`` because postgres may not be
    allowed into ours."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    account = _account()
    if account is None:
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd="/", timeout=timeout, check=False
        )
    env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=timeout,
        check=False,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],  # drop root's supplementary groups
    )


def make_traversable(path: Path) -> None:
    """Give the postgres user the search bit on every ancestor of ``path`` that lacks it (see the
    module docstring for why).  Only the bit postgres falls under is added: user, group or other."""
    account = _account()
    if account is None:
        return
    for parent in reversed(Path(os.path.abspath(path)).parents):
        st = parent.stat()
        if st.st_uid == account.pw_uid:
            bit = 0o100
        elif st.st_gid == account.pw_gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            parent.chmod((st.st_mode & 0o7777) | bit)


def give_to_postgres(path: Path, mode: int = 0o700) -> None:
    """Make ``path`` (recursively, symlinks not followed) belong to the postgres user, set
    ``mode`` on ``path`` itself and make its parents traversable."""
    account = _account()
    if account is not None:
        uid, gid = account.pw_uid, account.pw_gid
        os.lchown(path, uid, gid)
        for top, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.lchown(os.path.join(top, name), uid, gid)
    path.chmod(mode)
    make_traversable(path)


def free_port() -> int:
    """A TCP port nobody listens on.  The servers do not listen on TCP at all (the port only
    names the socket file), but a free one keeps them clear of a system cluster's socket and of
    each other's System V shared-memory keys, which PostgreSQL derives from the port."""
    return containers.free_port()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no server log: {error})"


#: Every server this process started and has not stopped, stopped at exit as a last resort (a
#: test run interrupted between start and its fixture's teardown must not leave servers behind).
_RUNNING: set[HostPostgres] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


class HostPostgres:
    """A PostgreSQL cluster run from the host's binaries.

    ``workdir`` holds the socket directory and the server log, outside the data directory.  Use
    :meth:`init` to create a new cluster or :meth:`adopt` to run an existing data directory (a
    copy, a restore), then :meth:`start`; :meth:`stop` is always safe to call.
    """

    def __init__(self, workdir: Path, *, binaries: Path | None = None) -> None:
        self.workdir = Path(os.path.abspath(workdir))
        self.bindir = binaries or bindir()
        self.datadir: Path | None = None
        self.port = free_port()
        self.logfile = self.workdir / "postgresql.log"
        self._private_socket_dir: Path | None = None
        self.socket_dir = self.workdir / "socket"
        self.workdir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_dir)) > _MAX_SOCKET_DIR:
            self._private_socket_dir = Path(tempfile.mkdtemp(prefix="splitmirror-pg-"))
            self.socket_dir = self._private_socket_dir
        self.socket_dir.mkdir(exist_ok=True)
        give_to_postgres(self.workdir)
        give_to_postgres(self.socket_dir)

    def bin(self, name: str) -> str:
        """The path of one of the server binaries (``initdb``, ``pg_ctl``, ``pg_amcheck``...)."""
        return str(self.bindir / name)

    @property
    def conninfo(self) -> str:
        """``postgresql://postgres@/postgres?host=SOCKETDIR&port=PORT``: no password, trust auth."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{OS_USER}@/postgres?host={host}&port={self.port}"

    def _require_datadir(self) -> Path:
        if self.datadir is None:
            raise RuntimeError("no data directory: call init() or adopt() first")
        return self.datadir

    def init(self, datadir: Path) -> HostPostgres:
        """Create a new cluster in ``datadir`` (created if missing; must be empty): trust
        authentication, data checksums on (so amcheck and the server catch torn pages), C locale
        (the same result on every machine), ``wal_level`` left at its default, ``replica``."""
        datadir = Path(os.path.abspath(datadir))
        datadir.mkdir(parents=True, exist_ok=True)
        give_to_postgres(datadir)
        argv = [
            self.bin("initdb"), "-D", str(datadir), "--auth=trust", "--data-checksums",
            f"--username={OS_USER}", "--locale=C", "--encoding=UTF8", "--no-instructions",
        ]  # fmt: skip
        result = run_as_postgres(argv)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed in {datadir}: {(result.stdout + result.stderr).strip()}")
        self.datadir = datadir
        return self

    def adopt(self, datadir: Path) -> HostPostgres:
        """Run an existing data directory (files possibly owned by root, as a restore writes
        them): hand it to postgres with mode 0700, which the server insists on."""
        datadir = Path(os.path.abspath(datadir))
        if not (datadir / "PG_VERSION").is_file():
            raise RuntimeError(f"{datadir} is not a PostgreSQL data directory (no PG_VERSION)")
        give_to_postgres(datadir)
        self.datadir = datadir
        return self

    def start(self, *settings: str) -> HostPostgres:
        """Start the server and wait until it accepts connections (``pg_ctl -w``).  ``settings``
        are extra ``name=value`` server settings.  Raises with the tail of the server log when it
        does not start."""
        datadir = self._require_datadir()
        options = ["-k", str(self.socket_dir), "-p", str(self.port), "-c", "listen_addresses="]
        for setting in settings:
            options += ["-c", setting]
        _RUNNING.add(self)
        argv = [
            self.bin("pg_ctl"), "-D", str(datadir), "-l", str(self.logfile), "-w",
            "-t", str(START_TIMEOUT), "-o", shlex.join(options), "start",
        ]  # fmt: skip
        result = run_as_postgres(argv, timeout=START_TIMEOUT + 30)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            self.stop()
            raise RuntimeError(
                f"PostgreSQL did not start on {datadir}: {output}\n--- {self.logfile} (tail) ---\n"
                f"{_tail(self.logfile)}"
            )
        return self

    @property
    def running(self) -> bool:
        """Whether a server is running on the data directory (``pg_ctl status``)."""
        if self.datadir is None:
            return False
        return run_as_postgres([self.bin("pg_ctl"), "-D", str(self.datadir), "status"]).returncode == 0

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self._require_datadir() / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the server: ``fast`` (roll back sessions, checkpoint), then ``immediate``, then
        SIGKILL of the postmaster.  Safe to call when it never started or already stopped."""
        try:
            if self.datadir is not None and (self.datadir / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    argv = [self.bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w"]
                    run_as_postgres([*argv, "-t", str(STOP_TIMEOUT), "stop"], timeout=STOP_TIMEOUT + 30)
                    if not self.running:
                        break
                else:
                    pid = self._postmaster_pid()
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        finally:
            _RUNNING.discard(self)
            if self._private_socket_dir is not None:
                shutil.rmtree(self._private_socket_dir, ignore_errors=True)
                self._private_socket_dir = None

    def wait_until_writable(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until recovery has finished (``pg_is_in_recovery()`` is false)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                with psycopg.connect(self.conninfo, connect_timeout=5, autocommit=True) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    if row is not None and row[0] is False:
                        return
                    last = "still in recovery"
            except psycopg.OperationalError as error:
                last = str(error).strip()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on {self.datadir} did not finish recovery in {timeout:.0f} s ({last})\n"
                    f"--- {self.logfile} (tail) ---\n{_tail(self.logfile)}"
                )
            time.sleep(0.1)


@contextlib.contextmanager
def restored(directory: Path, *, workdir: Path | None = None) -> Iterator[str]:
    """Start the data directory splitmirror restored into ``directory`` and yield its conninfo
    once it accepts connections *and* has finished recovery; stop it afterwards, pass or fail.

    A HOT_BACKUP restore holds ``backup_label`` and the WAL in ``pg_wal``: with no signal file
    the server replays from the label's checkpoint to the backup end, then opens read-write.  A
    FREEZE restore is a crash image and gets ordinary crash recovery.  Archiving is switched off
    so a restored copy never writes into the live cluster's WAL archive.  ``workdir`` (socket,
    log) defaults to a sibling ``<directory>.pg``."""
    directory = Path(os.path.abspath(directory))
    server = HostPostgres(workdir or directory.with_name(directory.name + ".pg"))
    try:
        server.adopt(directory)
        server.start("archive_mode=off")
        server.wait_until_writable()
        yield server.conninfo
    finally:
        server.stop()


#: Where a Debian-built server puts its socket when the configuration does not say.
DEFAULT_SOCKET_DIR = Path("/var/run/postgresql")


@contextlib.contextmanager
def started_as_printed(restore: RestoreResult, *, binaries: Path | None = None) -> Iterator[str]:
    """Start a restored cluster by the host steps ``splitmirror restore`` printed (``chown``,
    ``runuser -u postgres -- pg_ctl ... start``) and yield its conninfo once it has finished
    recovery; stop it afterwards, pass or fail.  The harness adds only what a DBA's shell has:
    the server binaries on ``PATH``, a free port in ``PGPORT``, the default socket directory,
    and the search bit on the test's private ancestors (see the module docstring)."""
    datadir = restored_paths.data_directory(restore.directory, restore.manifest)
    server = HostPostgres(restore.directory.with_name(restore.directory.name + ".pg"), binaries=binaries)
    server.datadir, server.socket_dir, server.logfile = datadir, DEFAULT_SOCKET_DIR, datadir / "startup.log"
    DEFAULT_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    give_to_postgres(DEFAULT_SOCKET_DIR, 0o2775)
    make_traversable(restore.directory)
    _RUNNING.add(server)
    try:
        env = {"PATH": f"{server.bindir}:{os.environ.get('PATH', '')}", "PGPORT": str(server.port)}
        run_host_steps(restore.steps, env=env)
        server.wait_until_writable()
        yield server.conninfo
    finally:
        server.stop()


def amcheck(conninfo: str, *, binaries: Path | None = None) -> tuple[bool, str]:
    """Run ``pg_amcheck --all --install-missing --heapallindexed`` (every table and B-tree
    index of every database, and every index entry against its heap) as postgres.  Returns
    ``(ok, output)``; the output is ``"ok"`` when pg_amcheck said nothing, as it does when it
    found no problem."""
    binary = str((binaries or bindir()) / "pg_amcheck")
    result = run_as_postgres(
        [binary, "--maintenance-db", conninfo, "--all", "--install-missing", "--heapallindexed"],
        timeout=600,
    )
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0, output or ("ok" if result.returncode == 0 else f"exit {result.returncode}")
