"""The calling thread's I/O priority and nice value: what ``[session] io_priority`` and
``cpu_nice`` set (:mod:`.budget` decides for which threads).

On Linux both belong to a thread, not to the process, and a new thread starts with its
creator's.  ``os`` has ``getpriority``/``setpriority`` (``PRIO_PROCESS`` with a thread id is
that one thread) but nothing for I/O priorities: ``ioprio_get``/``ioprio_set`` are called as raw
system calls.  The kernel lets anyone lower their own threads' I/O priority to best-effort or
idle and raise it back, and raise a nice value; lowering a nice value again needs CAP_SYS_NICE
or an RLIMIT_NICE that allows it (:func:`may_lower_nice`).
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import threading
from pathlib import Path

#: (ioprio_set, ioprio_get) by machine.
SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31)}
_WHO_PROCESS = 1  # IOPRIO_WHO_PROCESS: on Linux, one thread
CLASS_SHIFT, BEST_EFFORT, IDLE = 13, 2, 3
_CAP_SYS_NICE = 23
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


#: ``[session] io_priority``'s values: "normal" leaves the thread's as it is.
NAMES = ("normal", "idle", *(f"best-effort:{level}" for level in range(8)))


def ioprio_of(name: str) -> int | None:
    """The ``ioprio`` value (class << 13 | level) of one of :data:`NAMES`; None for "normal"."""
    if name not in NAMES:
        raise ValueError(
            f'{name!r} is not an I/O priority; write "normal", "idle", or "best-effort:0" (first) to '
            '"best-effort:7" (last)'
        )
    kind, _, level = name.partition(":")
    if kind == "normal":
        return None
    return (IDLE if kind == "idle" else BEST_EFFORT) << CLASS_SHIFT | int(level or 0)


def supported() -> bool:
    """Whether this machine's I/O priorities can be set (Linux, a known syscall number)."""
    return platform.system() == "Linux" and platform.machine() in SYSCALLS


def _ioprio(call: int, *value: int) -> int:
    args = [SYSCALLS[platform.machine()][call], _WHO_PROCESS, threading.get_native_id(), *value]
    result = int(_libc.syscall(*(ctypes.c_long(arg) for arg in args)))
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"ioprio: {os.strerror(error)}")
    return result


def get_io_priority() -> int:
    """The calling thread's ``ioprio``: class << 13 | level, 0 when none was set (it then
    follows the nice value; older kernels report that as best-effort, level (nice + 20) / 5)."""
    return _ioprio(1)


def set_io_priority(value: int) -> None:
    _ioprio(0, value)


def get_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def set_nice(value: int) -> None:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)


def may_lower_nice(to: int) -> bool:
    """Whether the kernel lets this process lower a thread's nice value to ``to`` (its
    ``can_nice``: RLIMIT_NICE allows 20 - ``to``, or CAP_SYS_NICE)."""
    limit = resource.getrlimit(resource.RLIMIT_NICE)[0]
    if limit == resource.RLIM_INFINITY or 20 - to <= limit:
        return True
    status = Path("/proc/self/status").read_text().splitlines()
    effective = next(line for line in status if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) >> _CAP_SYS_NICE & 1)
