"""An archive read from a program's standard output: ``[target] read_command``.

``verify ID`` and ``restore ID`` of a session whose archive went into a program
(:mod:`..targets.command`) run the ``read_command`` the catalog recorded for it (``zstd -dc
/backup/orders-7.tar.zst``) and read its output as a stream (:class:`~.reader.ArchiveReader`).
Each :meth:`ReadCommand.open` starts it anew: ``restore`` reads the archive twice.

The program is the witness of its own failure.  Its exit is judged once its output has ended:
a program that exits non-zero is said in one sentence with its last words ("the read_command
zstd exited 1: zstd: /backup/orders-7.tar.zst: No such file or directory"), which the reader
raises as :class:`~.reader.ArchiveNotFound` (exit 5) when it gave nothing, else as
:class:`~.reader.ArchiveDamaged` (exit 6), in place of what it found wrong with the bytes it
gave (a cut archive is what a failing decompressor leaves).  Where the reader
stops before the program's output ends (damage found mid-stream, ``restore --only`` done), the
program is killed with its process group and its exit says nothing.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from typing import IO

from ..processes import how_it_ended, kill_group, last_words, site_environment, wait_exit

#: What is read past the archive's end to reach the end of the program's output: the rest of
#: the last record (``[target] block_size`` is at most 16 MiB) and a little more.
DRAIN_LIMIT = 17 << 20
#: How long a program whose output has ended is given to exit.
EXIT_S = 30.0


class _Output:
    """The program's standard output, counting what was read and whether it ended."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.read_bytes = 0
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.read_bytes += len(data)
        if not data and size != 0:
            self.ended = True
        return data

    def drain(self, limit: int) -> None:
        while not self.ended and limit > 0:
            limit -= len(self.read(min(limit, 1 << 20)))


class ReadCommand:
    """A program (an argument list, no shell) whose standard output is the archive."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.label = f"`{shlex.join(self.argv)}`'s output"
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._output: _Output | None = None

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else "?"

    def __str__(self) -> str:
        return self.label

    def open(self) -> _Output:
        """Start the program; its standard output, to read the archive from.  OSError when it
        cannot be started."""
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        try:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=site_environment(),
                start_new_session=True,
            )
        except OSError:
            self._stderr.close()
            self._stderr = None
            raise
        assert self._process.stdout is not None
        self._output = _Output(self._process.stdout)
        return self._output

    def close(self, reading_failed: bool) -> tuple[str, int] | None:
        """Stop reading; when the program failed, the sentence that says so and how many bytes
        it gave.  ``reading_failed``: the reader stopped at an error (the rest is not read)."""
        process, output = self._process, self._output
        if process is None or output is None:
            return None
        try:
            if not reading_failed:
                output.drain(DRAIN_LIMIT)
            if not output.ended:
                return None  # the reader stopped before the program did: its exit says nothing
            try:
                code = wait_exit(process, EXIT_S)
            except subprocess.TimeoutExpired:
                return None  # it closed its output but lingers: what it gave is all there is
            if code == 0:
                return None
            said = last_words(self._stderr) if self._stderr is not None else ""
            return f"the read_command {self.program} {how_it_ended(code)}" + (
                f": {said}" if said else ""
            ), output.read_bytes
        finally:
            if process.returncode is None:
                kill_group(process)
            if process.stdout is not None:
                with contextlib.suppress(OSError):
                    process.stdout.close()
            if self._stderr is not None:
                self._stderr.close()
            self._process = self._stderr = self._output = None
