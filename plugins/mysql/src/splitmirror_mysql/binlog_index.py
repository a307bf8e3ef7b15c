"""The restored binary log index, made right for the copy that starts on it.

The index lists the binary logs by the names the server gave them: relative to the data
directory (``./binlog.000001``) when ``log_bin`` was relative, absolute
(``/var/lib/mysql/binlog.000001``) when it was absolute.  Recovery opens the last one listed to
learn which prepared transactions committed.  Absolute names are the live server's paths: a copy
started on this host fails to find them ("Failed to open log ... Can't init tc log") or, beside
the live server, reads the live server's binary log, whose files its ``PURGE BINARY LOGS``
would delete.  So:

* names inside the data directory are rewritten relative to it (``./binlog.000001``), right
  for a copy started anywhere, on this host or in a container;
* names outside it (a binary log directory of its own) stay as they are for a copy in a
  container, which mounts that directory where the server had it, and a second index naming the
  restored files (:data:`HOST_SUFFIX`) is written beside it for a copy on this host.

Found on the way: the end of the last binary log.  The split is a crash image whose binary log
and InnoDB agree once recovery has run (the binary log decides which prepared transactions
commit), so its end is exactly where the backup ends, in either mode: where point-in-time
recovery starts replaying the live server's later binary logs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .restore import RestoredServer

#: The index written for a copy on this host when the original names paths outside the data
#: directory: ``mariadb-bin.index`` → ``mariadb-bin.index.restored``.
HOST_SUFFIX = ".restored"


def is_on(value: Any) -> bool:
    return str(value).upper() in ("1", "ON", "TRUE")


def server_path(datadir: str, value: Any) -> str:
    """A path as the server resolves it: relative values from the data directory."""
    return os.path.normpath(os.path.join(datadir, str(value)))


@dataclasses.dataclass(frozen=True)
class Prepared:
    #: The index written for a copy on this host, when the restored one cannot serve it.
    host_index: str | None
    #: (name, size) of the last binary log in the restore: where the backup ends.
    end: tuple[str, int] | None


def prepare(server: RestoredServer) -> Prepared | None:
    """Rewrite the restored index as the module docstring says; None when the server had no
    binary log or the restore does not hold its index."""
    recorded, datadir = server.recorded, server.server_dir
    if not is_on(recorded.get("log_bin")) or not recorded.get("log_bin_basename"):
        return None
    basename = server_path(datadir, recorded["log_bin_basename"])
    index_on_server = server_path(datadir, recorded.get("log_bin_index") or basename + ".index")
    carried = server.carried(index_on_server)
    if carried is None or not Path(carried).is_file():
        return None  # not carried by the backup: never touch the live server's index
    index = Path(carried)
    lines = [line.strip() for line in index.read_text().splitlines() if line.strip()]
    entries = [server_path(datadir, line) for line in lines]
    host_index = None
    if all(not os.path.relpath(entry, datadir).startswith("..") for entry in entries):
        relative = [f"./{os.path.relpath(entry, datadir)}" for entry in entries]
        if relative != lines:
            _write(index, relative, like=index)
    else:
        host = index.with_name(index.name + HOST_SUFFIX)
        _write(host, [server.restored(entry) for entry in entries], like=index)
        host_index = str(host)
    last_carried = server.carried(entries[-1]) if entries else None
    last = Path(last_carried) if last_carried else None
    end = (last.name, last.stat().st_size) if last is not None and last.is_file() else None
    return Prepared(host_index, end)


def _write(path: Path, lines: list[str], *, like: Path) -> None:
    """Replace ``path`` atomically with ``lines``, with the mode and owner of ``like``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    shutil.copymode(like, tmp)
    st = like.stat()
    if os.geteuid() == 0:
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)
