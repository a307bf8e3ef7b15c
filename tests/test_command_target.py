"""``[target] command``: the archive piped into a real program (zstd, gpg, sh), and read back
through ``read_command`` by ``verify ID`` and ``restore ID``, as a DBA runs them: the CLI in its
own process, a live SQLite ledger, a directory mirror.  No mocks: the failures are programs that
really fail, die early or stop reading."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import integrity, writable_now
from splitmirror.workload import create_ledger

ZSTD, GPG = shutil.which("zstd"), shutil.which("gpg")
needs_zstd = pytest.mark.skipif(ZSTD is None, reason="zstd is not installed")
needs_gpg = pytest.mark.skipif(GPG is None, reason="gpg is not installed")

CONFIG = """\
[session]
name = "ledger"
catalog = "{root}/catalog.db"

[database]
url = "sqlite://{root}/primary/ledger.db"

[mirror]
primary = "{root}/primary"
mirror = "{root}/mirror"

[target]
{target}
"""


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """``splitmirror ARGS`` in its own process; ``stdin``: an archive on its standard input."""
    done = subprocess.run(
        [sys.executable, "-m", "splitmirror", *args], capture_output=True, input=stdin, timeout=120
    )
    out, err = (stream.decode(errors="replace") for stream in (done.stdout, done.stderr))
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def one_sentence(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stderr.strip()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


def toml_list(argv: list[str]) -> str:
    return json.dumps(argv)


def write_config(root: Path, **keys: list[str] | str) -> Path:
    lines = [
        f"{key} = {toml_list(value) if isinstance(value, list) else json.dumps(value)}"
        for key, value in keys.items()
    ]
    path = root / "ledger.toml"
    path.write_text(CONFIG.format(root=root, target="\n".join(lines)))
    path.chmod(0o600)
    return path


def backup(config: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    done = cli("backup", str(config), "--json")
    data = json.loads(done.stdout) if done.stdout.strip() else {}
    return done, int(data.get("id", 0))


def session(root: Path, session_id: int) -> dict[str, Any]:
    shown = cli("show", str(session_id), "--catalog", str(root / "catalog.db"), "--json")
    assert shown.returncode == 0, shown.stderr
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


def sessions(root: Path) -> list[dict[str, Any]]:
    listed = cli("list", "--catalog", str(root / "catalog.db"), "--json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, Any]] = json.loads(listed.stdout)
    return rows


@pytest.fixture
def archive(root: Path) -> Path:
    """Where the zstd archive of session 1 lands."""
    return root / "archives" / "ledger-1.tar.zst"


def zstd_config(root: Path, **extra: list[str] | str) -> Path:
    where = f"{root}/archives/{{name}}-{{session}}.tar.zst"
    keys: dict[str, list[str] | str] = {
        "command": ["zstd", "-q", "-T0", "-o", where],
        "read_command": ["zstd", "-dc", where],
    }
    return write_config(root, **{**keys, **extra})


def restore_and_open(root: Path, session_id: int) -> None:
    """restore ID --to DIR through the read_command; the copy opens and is sound."""
    restored = root / "restored"
    done = cli("restore", str(session_id), "--to", str(restored), "--catalog", str(root / "catalog.db"))
    assert done.returncode == 0, done.stderr
    ok, rows = integrity(restored / "ledger.db")
    assert ok == "ok" and rows >= 2000


# -- end to end ------------------------------------------------------------------------------


@needs_zstd
def test_zstd_backup_verify_restore_drill(ledger: Path, root: Path, archive: Path) -> None:
    done, session_id = backup(
        zstd_config(root, delete_command=["rm", "-f", f"{root}/archives/{{name}}-{{session}}.tar.zst"])
    )
    assert done.returncode == 0, done.stderr
    assert session_id == 1
    data = session(root, 1)
    assert data["status"] == "DONE"
    assert archive.is_file() and archive.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert data["archive"] == f"command: zstd -q -T0 -o {archive}"
    stats = data["stats"]
    assert isinstance(stats, dict)
    assert stats["archive_commands"] == {
        "write": ["zstd", "-q", "-T0", "-o", str(archive)],
        "read": ["zstd", "-dc", str(archive)],
        "delete": ["rm", "-f", str(archive)],
    }
    verified = cli("verify", "1", "--catalog", str(root / "catalog.db"))
    assert verified.returncode == 0, verified.stderr
    assert "zstd -dc" in verified.stdout and "verification passed" in verified.stdout
    restore_and_open(root, 1)
    drilled = cli("drill", "1", "--catalog", str(root / "catalog.db"))  # read back through zstd -dc
    assert drilled.returncode == 0 and "PASSED" in drilled.stdout, drilled.stdout + drilled.stderr


@needs_gpg
def test_gpg_symmetric_encryption_backup_verify_restore_drill(ledger: Path, root: Path) -> None:
    home = root / "gnupg"
    home.mkdir(mode=0o700)
    secret = root / "passphrase"
    secret.write_text("correct horse battery staple\n")
    secret.chmod(0o600)
    where = f"{root}/archives/{{name}}-{{session}}.tar.gpg"
    common = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback"]
    common += ["--passphrase-file", str(secret)]
    config = write_config(
        root,
        command=[*common, "--yes", "--symmetric", "--cipher-algo", "AES256", "-o", where],
        read_command=[*common, "--decrypt", where],
    )
    try:
        done, session_id = backup(config)
        assert done.returncode == 0, done.stderr
        encrypted = (root / "archives" / "ledger-1.tar.gpg").read_bytes()
        assert b"ledger.db" not in encrypted and b"ustar" not in encrypted  # not a readable tar
        verified = cli("verify", str(session_id), "--catalog", str(root / "catalog.db"))
        assert verified.returncode == 0, verified.stderr
        restore_and_open(root, session_id)
        drilled = cli("drill", str(session_id), "--catalog", str(root / "catalog.db"))
        assert drilled.returncode == 0 and "PASSED" in drilled.stdout, drilled.stdout + drilled.stderr
        # the wrong passphrase: gpg fails, and verify says so in one sentence (exit 5: it gave nothing)
        secret.write_text("wrong\n")
        refused = cli("verify", str(session_id), "--catalog", str(root / "catalog.db"))
        assert refused.returncode == 5, refused.stderr
        assert "the read_command gpg exited 2" in one_sentence(refused)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


# -- the program fails -----------------------------------------------------------------------


def failed_in_backup(root: Path, config: Path, ledger: Path) -> str:
    """Run the backup; it must fail in BACKUP, exit 1, one sentence, the database writable."""
    done, _ = backup(config)
    assert done.returncode == 1, done.stderr
    sentence = one_sentence(done)
    (listed,) = sessions(root)
    summary = session(root, listed["id"])
    assert summary["status"] == "FAILED" and summary["failed_phase"] == "BACKUP", summary
    assert summary["error"] and str(summary["error"]) in sentence
    assert writable_now(ledger)
    return sentence


def test_a_program_that_exits_1_fails_the_session_with_its_words(ledger: Path, root: Path) -> None:
    script = "cat > /dev/null; echo 'upload refused: bucket is read-only' >&2; exit 1"
    sentence = failed_in_backup(root, write_config(root, command=["sh", "-c", script]), ledger)
    assert "the target command sh exited 1: upload refused: bucket is read-only" in sentence
    assert "Broken pipe" not in sentence


def test_a_program_that_dies_before_reading_is_said_by_its_exit_not_epipe(ledger: Path, root: Path) -> None:
    script = "echo 'cannot reach the object store' >&2; exit 3"
    sentence = failed_in_backup(root, write_config(root, command=["sh", "-c", script]), ledger)
    assert "the target command sh exited 3: cannot reach the object store" in sentence
    assert "Broken pipe" not in sentence and "writing to the target" not in sentence


def test_a_program_that_reads_half_and_exits_0_is_not_done(ledger: Path, root: Path) -> None:
    """The whole archive (about 500 KiB) fits in the pipe: no write ever fails, the program
    exits 0; what it left in the pipe says it stopped reading."""
    config = write_config(root, command=["sh", "-c", "head -c 100000 > /dev/null"])
    sentence = failed_in_backup(root, config, ledger)
    assert "the target command sh exited 0 before reading the whole archive (it read 100000 of" in sentence


def test_a_program_that_stops_reading_mid_stream_is_not_done(root: Path) -> None:
    """An archive larger than the pipe: the program exits 0 while the session is still writing."""
    create_ledger(root / "primary" / "ledger.db", rows=20000)  # about 5 MiB
    config = write_config(root, command=["sh", "-c", "head -c 300000 > /dev/null"])
    sentence = failed_in_backup(root, config, root / "primary" / "ledger.db")
    assert "exited 0 before reading the whole archive (it read 300000 of" in sentence


def test_a_failed_programs_process_group_is_killed(ledger: Path, root: Path) -> None:
    pid_file = root / "child.pid"
    script = f"sleep 300 & echo $! > {pid_file}; cat > /dev/null; echo 'gave up' >&2; exit 1"
    sentence = failed_in_backup(root, write_config(root, command=["sh", "-c", script]), ledger)
    assert "exited 1: gave up" in sentence
    assert not alive(int(pid_file.read_text()))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody has reaped yet, in a container without an init,
    has been killed)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_program_that_does_not_exit_is_killed_after_command_timeout(ledger: Path, root: Path) -> None:
    config = write_config(root, command=["sh", "-c", "cat > /dev/null; sleep 300"], command_timeout="1s")
    sentence = failed_in_backup(root, config, ledger)
    assert (
        "the target command sh did not exit within 1s after the archive ended, so it was killed" in sentence
    )


def test_a_program_that_reads_nothing_is_killed_after_command_timeout(ledger: Path, root: Path) -> None:
    with sqlite3.connect(ledger) as db:  # more than the pipe holds, so the writer waits on it
        db.execute("CREATE TABLE filler (b BLOB)")
        db.execute("INSERT INTO filler VALUES (randomblob(8 * 1024 * 1024))")
    db.close()
    config = write_config(root, command=["sleep", "300"], command_timeout="2s")
    sentence = failed_in_backup(root, config, ledger)
    assert "the target command sleep read nothing for 2s, so it was killed" in sentence


# -- configuration and preflight -------------------------------------------------------------


def test_a_program_not_on_path_is_a_preflight_problem(ledger: Path, root: Path) -> None:
    config = write_config(root, command=["splitmirror-no-such-compressor", "-o", "/x"])
    said = "[target] command[0]: the program 'splitmirror-no-such-compressor' is not found on PATH"
    checked = cli("check", str(config))
    assert checked.returncode == 3, checked.stderr
    assert [line for line in checked.stdout.splitlines() if line.startswith("✗")] == [
        f"✗ {said}; install it, or give its full path"
    ]
    done = cli("backup", str(config))
    assert done.returncode == 3, done.stderr
    assert said in one_sentence(done)
    assert not (root / "catalog.db").exists() or not sessions(root)  # no row: nothing started
    reader = write_config(root, command=["sh", "-c", "cat"], read_command=["splitmirror-no-such-reader"])
    done = cli("check", str(reader))
    assert done.returncode == 3 and "✗ [target] read_command[0]: the program" in done.stdout


BAD_KEYS = [
    ('path = "/b/x.tar"\ncommand = ["zstd"]', "[target] command: path and command are alternatives"),
    ('block_size = "256KiB"', "[target] path: missing; set it to an archive file"),
    ("command = []", "[target] command: the list is empty"),
    ('command = ["zstd", 3]', "[target] command[1]: input should be a valid string"),
    (
        'command = ["zstd", "-o", "/b/{host}.zst"]',
        "[target] command[2]: '/b/{host}.zst' uses {host}, which is not",
    ),
    ('command = "zstd -o /b/x.zst"', "[target] command: 'zstd -o /b/x.zst' is one string; write the program"),
    ('path = "/b/x.tar"\nread_command = ["zstd", "-dc"]', "[target] read_command: it goes with command"),
    ('path = "/b/x.tar"\ndelete_command = ["rm"]', "[target] delete_command: it goes with command"),
    ('command = ["zstd"]\nread_command = []', "[target] read_command: the list is empty"),
    ('command = ["zstd"]\nkind = "file"', "[target] kind: is 'file' but command is set"),
]


@pytest.mark.parametrize(
    ("target", "expected"), BAD_KEYS, ids=[b[1].split(":")[0] + b[0][:12] for b in BAD_KEYS]
)
def test_bad_target_keys_are_one_sentence_exit_2(root: Path, target: str, expected: str) -> None:
    path = root / "bad.toml"
    path.write_text(CONFIG.format(root=root, target=target))
    path.chmod(0o600)
    done = cli("check", str(path))
    assert done.returncode == 2, done.stderr
    assert expected in one_sentence(done)


# -- reading back ----------------------------------------------------------------------------


@needs_zstd
def test_a_failing_read_command_is_one_sentence(ledger: Path, root: Path, archive: Path) -> None:
    wrong = f"{root}/archives/{{name}}-{{session}}.tar.zst.elsewhere"
    done, session_id = backup(zstd_config(root, read_command=["zstd", "-dc", wrong]))
    assert done.returncode == 0, done.stderr
    catalog = str(root / "catalog.db")
    for verb in (["verify", str(session_id)], ["restore", str(session_id), "--to", str(root / "r")]):
        refused = cli(*verb, "--catalog", catalog)
        assert refused.returncode == 5, refused.stderr  # it gave nothing: the archive cannot be opened
        assert "the read_command zstd exited 1: zstd: " in one_sentence(refused)
        assert "No such file" in refused.stderr
    assert not (root / "r").exists()
    # An archive cut in half: zstd gives part of it and fails; that sentence, exit 6
    data = archive.read_bytes()
    archive.with_name("ledger-1.tar.zst.elsewhere").write_bytes(data[: len(data) // 2])
    damaged = cli("verify", str(session_id), "--catalog", catalog)
    assert damaged.returncode == 6, damaged.stderr
    sentence = one_sentence(damaged)
    assert "the read_command zstd exited 1" in sentence and "cannot be trusted" in sentence


def test_a_read_command_that_cannot_start_is_exit_5(ledger: Path, root: Path) -> None:
    reader = root / "reader.sh"
    reader.write_text(f"#!/bin/sh\nexec cat {root}/archives/ledger-1.tar\n")
    reader.chmod(0o755)
    config = write_config(
        root,
        command=["sh", "-c", f"cat > {root}/archives/{{name}}-{{session}}.tar"],
        read_command=[str(reader)],
    )
    done, session_id = backup(config)
    assert done.returncode == 0, done.stderr
    assert cli("verify", str(session_id), "--catalog", str(root / "catalog.db")).returncode == 0
    reader.unlink()
    refused = cli("verify", str(session_id), "--catalog", str(root / "catalog.db"))
    assert refused.returncode == 5
    assert f"the read_command {reader} could not be started" in one_sentence(refused)


@needs_zstd
def test_a_session_without_read_command_says_to_pass_the_archive(
    ledger: Path, root: Path, archive: Path
) -> None:
    where = f"{root}/archives/{{name}}-{{session}}.tar.zst"
    done, session_id = backup(write_config(root, command=["zstd", "-q", "-o", where]))
    assert done.returncode == 0, done.stderr
    catalog = str(root / "catalog.db")
    refused = cli("verify", str(session_id), "--catalog", catalog)
    assert refused.returncode == 5
    sentence = one_sentence(refused)
    assert "no [target] read_command was recorded" in sentence and "--archive PATH" in sentence
    # what it suggests works: the copy on standard input, checked against the catalog
    plain = subprocess.run(["zstd", "-dc", str(archive)], capture_output=True, check=True).stdout
    verified = cli("verify", str(session_id), "--archive", "-", "--catalog", catalog, stdin=plain)
    assert verified.returncode == 0, verified.stderr
