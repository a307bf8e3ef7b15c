"""``[target] command``: the archive written into a program's standard input.

``command = ["zstd", "-q", "-T0", "-o", "/backup/{name}-{session}.tar.zst"]`` compresses it,
``gpg``/``age`` encrypt it, an object-store client uploads it, a BACKINT-style agent takes it
(docs/targets.md).  An argument list, never a shell; ``{session}``, ``{name}`` and
``{timestamp}`` are filled in each argument, as in ``[target] path``.  The program runs in a
process group of its own (:mod:`..processes`); its standard output is discarded (give it its
output file), its standard error is kept for the error.

What makes a session ``DONE`` is the program's word, not ours: :meth:`CommandTarget.commit`
closes its standard input and waits (up to ``command_timeout``) for it to exit 0 having read
every byte.  It must read to the end.  To know whether it did, the session keeps the pipe's read
end open too: a program that exits early is then seen by its exit (a pidfd, polled beside the
pipe), not by a write failing with EPIPE, and what it left unread is still in the pipe to count
(FIONREAD) once it has exited, even when the whole tail of the archive fitted in the pipe before
it stopped reading.  Either way, and on a non-zero exit, BACKUP fails with one sentence: "the
target command zstd exited 1: zstd: /backup/x.tar.zst: No space left on device".

The catalog row keeps the commands with their fields filled in (``stats["archive_commands"]``:
``write``, ``read``, ``delete``), so that ``verify`` and ``restore`` read the archive through
``read_command`` (:mod:`..archive.read_command`) and ``prune`` deletes it with
``delete_command``, without the configuration.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shlex
import shutil
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Sequence
from typing import IO, Any, Self

from ..config import COMMAND_LABEL, TargetConfig, expand_target_path
from ..engine import PreflightProblem
from ..processes import how_it_ended, kill_group, last_words, site_environment
from .base import Target, TargetError
from .builtin import _widen_pipe

#: How long a failed program is given to be reaped once its group is killed.
REAP_S = 5.0
#: How often a write waiting for the program to read checks that it is still there, where
#: there is no pidfd (before Linux 5.3) to wake it at once.
POLL_MS = 1000


def runnable(program: str) -> bool:
    """Whether ``program`` (a name looked up on PATH, or a path) can be started."""
    if "/" in program:
        return os.path.isfile(program) and os.access(program, os.X_OK)
    return bool(program) and shutil.which(program) is not None


class CommandTarget(Target):
    """A program that takes the archive on its standard input (``[target] command``)."""

    name = "command"

    def __init__(
        self,
        path: str,
        block_size: int,
        *,
        write: Sequence[str] = (),
        read: Sequence[str] | None = None,
        delete: Sequence[str] | None = None,
        timeout: float = 3600.0,
    ) -> None:
        super().__init__(path, block_size)
        self.write_argv = list(write) or shlex.split(path.removeprefix(COMMAND_LABEL))
        self.read_argv = None if read is None else list(read)
        self.delete_argv = None if delete is None else list(delete)
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stdin = -1  # the pipe's write end: the archive goes in here
        self._unread = -1  # its read end, kept: what the program has not read stays countable
        self._pidfd = -1
        self._stderr: IO[bytes] | None = None
        self._written = 0  # bytes into the pipe

    @classmethod
    def accepts(cls, path: str) -> bool:
        return False  # chosen by [target] command, which sets kind = "command"

    @classmethod
    def for_session(cls, config: TargetConfig, *, session: int, name: str, timestamp: str) -> Self:
        def filled(argv: Sequence[str] | None) -> list[str] | None:
            if argv is None:
                return None
            return [expand_target_path(a, session=session, name=name, timestamp=timestamp) for a in argv]

        write = filled(config.command) or []
        return cls(
            COMMAND_LABEL + shlex.join(write),
            config.block_size,
            write=write,
            read=filled(config.read_command),
            delete=filled(config.delete_command),
            timeout=config.command_timeout,
        )

    @property
    def program(self) -> str:
        return self.write_argv[0] if self.write_argv else "?"

    def stats(self) -> dict[str, Any]:
        commands = {"write": self.write_argv, "read": self.read_argv, "delete": self.delete_argv}
        return {"archive_commands": commands}

    def preflight(self) -> list[PreflightProblem]:
        problems = []
        for key, argv in (
            ("command", self.write_argv),
            ("read_command", self.read_argv),
            ("delete_command", self.delete_argv),
        ):
            if argv is not None and not runnable(argv[0]):
                where = "is not an executable file" if "/" in argv[0] else "is not found on PATH"
                problems.append(
                    PreflightProblem(
                        f"[target] {key}[0]: the program {argv[0]!r} {where}",
                        "install it, or give its full path",
                    )
                )
        return problems

    def open(self) -> None:
        read_end, write_end = os.pipe()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _close()
        try:
            self._process = subprocess.Popen(
                self.write_argv,
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=site_environment(),
                start_new_session=True,
            )
        except OSError as error:
            os.close(read_end)
            os.close(write_end)
            raise TargetError(
                f"the target command {self.program} could not be started ({error.strerror or error}); "
                "install it, or give its full path in [target] command"
            ) from None
        self._unread, self._stdin = read_end, write_end
        _widen_pipe(write_end, self.block_size)
        os.set_blocking(write_end, False)
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(self._process.pid)

    def _emit(self, record: bytes | bytearray | memoryview) -> None:
        view = memoryview(record).cast("B")
        while view:
            if self._exited():
                raise self._failure()
            try:
                written = os.write(self._stdin, view)
            except BlockingIOError:
                self._wait_writable()
                continue
            except BrokenPipeError:  # not while the read end is ours; said the same way anyway
                raise self._failure() from None
            self._written += written
            view = view[written:]

    def _exited(self) -> bool:
        """Whether the program has exited, asked without reaping it: while it is a zombie its
        process group is still its own to kill (:meth:`_failure`)."""
        assert self._process is not None
        if self._process.returncode is not None:
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            return os.waitid(os.P_PID, self._process.pid, flags) is not None
        except ChildProcessError:
            return True

    def _exit_code(self) -> int:
        """The exit code of a program that has exited (negative: the signal), still unreaped."""
        assert self._process is not None
        if self._process.returncode is not None:
            return self._process.returncode
        status = os.waitid(os.P_PID, self._process.pid, os.WEXITED | os.WNOWAIT)
        assert status is not None
        return status.si_status if status.si_code == os.CLD_EXITED else -status.si_status

    def _wait_exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the program to exit (it is not reaped)."""
        if self._pidfd >= 0:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            return bool(poller.poll(max(0, int(timeout * 1000))))
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _wait_writable(self) -> None:
        """Until the program has made room in the pipe, or has exited (then :meth:`_failure`).
        A program that reads nothing for ``command_timeout`` (stuck on a full disk, a dead
        network) is killed: BACKUP must not wait forever on it."""
        assert self._process is not None
        poller = select.poll()
        poller.register(self._stdin, select.POLLOUT)
        if self._pidfd >= 0:
            poller.register(self._pidfd, select.POLLIN)
        stalled = time.monotonic() + self.timeout
        while True:
            ready = {fd for fd, _event in poller.poll(POLL_MS)}
            if self._pidfd in ready or self._exited():
                raise self._failure()
            if self._stdin in ready:
                return
            if time.monotonic() > stalled:
                kill_group(self._process)
                raise TargetError(
                    f"the target command {self.program} read nothing for {self.timeout:g}s, so it was "
                    "killed; see what it waits for, or raise [target] command_timeout"
                )

    def _finish(self) -> None:
        """Close its standard input, wait for its exit, and count what it left unread."""
        assert self._process is not None
        os.close(self._stdin)
        self._stdin = -1
        if not self._wait_exited(self.timeout):
            kill_group(self._process)
            raise TargetError(
                f"the target command {self.program} did not exit within {self.timeout:g}s after the archive "
                "ended, so it was killed; see what it waits for, or raise [target] command_timeout"
            )
        unread = self._left_unread()
        if unread or self._exit_code() != 0:
            raise self._failure(unread)
        self._process.wait()
        self._close()

    def _left_unread(self) -> int:
        """Bytes still in the pipe: written, never read by the program."""
        if self._unread < 0:
            return 0
        try:
            answer = fcntl.ioctl(self._unread, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", answer)[0])

    def _failure(self, unread: int | None = None) -> TargetError:
        """The sentence for a program that failed, or exited before reading the whole archive
        (it has exited; what it started goes with it: its group is killed before it is reaped)."""
        assert self._process is not None
        if unread is None:
            unread = self._left_unread()
        if self._process.returncode is None:
            kill_group(self._process)
        try:
            code = self._process.wait(REAP_S)
        except subprocess.TimeoutExpired:
            code = -9
        said = last_words(self._stderr) if self._stderr is not None else ""
        self._close()
        if code != 0:
            return TargetError(
                f"the target command {self.program} {how_it_ended(code)}" + (f": {said}" if said else "")
            )
        read = self._written - unread
        return TargetError(
            f"the target command {self.program} exited 0 before reading the whole archive (it read {read} "
            f"of the {self._written} bytes written to it); it must read its standard input to the end"
        )

    def _close(self) -> None:
        for name in ("_stdin", "_unread", "_pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def discard(self) -> None:
        """Kill the program's process group (an unreaped program only: its pid is still ours).
        What it wrote before is its own to remove; the catalog never names it as an archive."""
        if self._process is not None and self._process.returncode is None:
            kill_group(self._process)
        self._close()
