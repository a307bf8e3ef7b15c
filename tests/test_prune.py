"""``splitmirror prune`` and ``backup --prune`` as a DBA runs them: real sessions, real archives."""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from splitmirror.catalog import SqliteCatalog
from splitmirror.catalog.locks import one_prune_at_a_time
from splitmirror.errors import SessionBusyError
from test_cli import cli, one_sentence

KEEP_TWO = "\n[retention]\nkeep_last = 2\n"


def backups(config: Path, count: int) -> list[dict[str, Any]]:
    done = []
    for _ in range(count):
        proc = cli("backup", str(config), "--json", "-q")
        assert proc.returncode == 0, proc.stderr
        done.append(json.loads(proc.stdout))
    return done


def rows(root: Path) -> dict[int, Any]:
    catalog = SqliteCatalog(root / "catalog.db")
    try:
        return {s.id: s for s in catalog.sessions()}
    finally:
        catalog.close()


def test_prune_deletes_what_the_policy_lets_go_and_keeps_the_history(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = write_config(extra=KEEP_TWO)
    sessions = backups(config, 4)
    archives = [Path(s["archive"]) for s in sessions]

    dry = cli("prune", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 2 archive(s)" in dry.stdout and "outside the policy" in dry.stdout
    assert all(path.exists() for path in archives)
    assert all(row.pruned is None for row in rows(root).values())

    proc = cli("prune", str(config), "--json")
    assert proc.returncode == 0, proc.stderr
    outcomes = {o["id"]: o for o in json.loads(proc.stdout)}
    ids = [s["id"] for s in sessions]
    assert [outcomes[i]["result"] for i in ids] == ["deleted", "deleted", "kept", "kept"]
    assert outcomes[ids[3]]["reasons"] == ["the newest DONE archive", "one of the last 2"]
    assert [path.exists() for path in archives] == [False, False, True, True]
    catalog = rows(root)
    assert [catalog[i].pruned for i in ids] == ["PRUNED", "PRUNED", None, None]
    assert catalog[ids[0]].pruned_why == "outside the policy" and catalog[ids[0]].pruned_at

    catalog_path = str(root / "catalog.db")
    listed = json.loads(cli("list", "--catalog", catalog_path, "--json").stdout)
    assert [s["id"] for s in listed] == ids[2:]
    everything = json.loads(cli("list", "--catalog", catalog_path, "--json", "--all").stdout)
    assert [s["pruned"] for s in everything] == ["PRUNED", "PRUNED", None, None]
    assert "DONE (pruned)" in cli("list", "--catalog", catalog_path, "--all").stdout

    for command in ("verify", "restore"):
        refused = cli(
            command,
            str(ids[0]),
            "--catalog",
            catalog_path,
            *(["--to", str(root / "r")] * (command == "restore")),
        )
        assert refused.returncode == 5
        assert "archive was deleted by `splitmirror prune`" in one_sentence(refused)
    assert cli("verify", str(ids[3]), "--catalog", catalog_path).returncode == 0

    again = cli("prune", str(config), "--json")  # nothing more to do
    assert [o["result"] for o in json.loads(again.stdout)] == ["kept", "kept"]


def test_backup_prune_applies_the_policy_after_a_done_session(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = write_config(extra="\n[retention]\nkeep_last = 1\n")
    first = backups(config, 1)[0]
    proc = cli("backup", str(config), "--prune", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "deleted 1 archive(s)" in proc.stdout
    assert not Path(first["archive"]).exists()
    assert [row.pruned for row in rows(root).values()] == ["PRUNED", None]


def test_backup_prune_without_retention_refuses_before_the_session(
    ledger: Path, write_config: Any, root: Path
) -> None:
    proc = cli("backup", str(write_config()), "--prune")
    assert proc.returncode == 2
    assert "there is no [retention] section" in one_sentence(proc)
    assert not (root / "catalog.db").exists() or rows(root) == {}
    assert cli("prune", str(write_config())).returncode == 2


def test_tape_and_stdout_archives_are_never_deleted(ledger: Path, write_config: Any, root: Path) -> None:
    files = write_config(extra=KEEP_TWO)
    text = files.read_text()
    tape, stdout = root / "tape.toml", root / "stdout.toml"
    tape.write_text(text.replace(f'path = "{root}/archives/ledger-{{session}}.tar"', 'path = "/dev/null"'))
    stdout.write_text(text.replace(f'path = "{root}/archives/ledger-{{session}}.tar"', 'path = "-"'))
    for config in (tape, stdout):
        config.chmod(0o600)
        ran = subprocess.run(
            [sys.executable, "-m", "splitmirror", "backup", str(config), "-q"],
            capture_output=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
    backups(files, 2)
    outcomes = json.loads(cli("prune", str(files), "--json").stdout)
    assert [o["result"] for o in outcomes] == ["kept", "kept", "left", "left"]
    assert "standard output" in outcomes[2]["detail"] and "on tape" in outcomes[3]["detail"]
    assert all(row.pruned is None for row in rows(root).values())


#: A prune in a child process that SIGKILLs itself at one point of deleting the first archive.
KILLED_PRUNE = textwrap.dedent(
    """
    import os, signal, sys
    from splitmirror import prune
    from splitmirror.catalog.sqlite import SqliteCatalog
    from splitmirror.config import load_config

    config, point = sys.argv[1], sys.argv[2]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "before-delete":
        prune._unlink = die
    else:
        original = prune._unlink
        def unlink_then_die(path):
            original(path)
            die()
        prune._unlink = unlink_then_die
    cfg = load_config(config)
    prune.prune(cfg, SqliteCatalog(cfg.session.catalog))
    """
)


@pytest.mark.parametrize("point", ["before-delete", "after-delete"])
def test_a_prune_killed_midway_is_finished_by_the_next(
    ledger: Path, write_config: Any, root: Path, point: str
) -> None:
    config = write_config(extra=KEEP_TWO)
    sessions = backups(config, 4)
    oldest = Path(sessions[0]["archive"])
    killed = subprocess.run([sys.executable, "-c", KILLED_PRUNE, str(config), point], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    catalog = rows(root)
    assert catalog[sessions[0]["id"]].pruned == "PRUNING"  # recorded before a byte was deleted
    assert oldest.exists() == (point == "before-delete")
    assert [catalog[s["id"]].pruned for s in sessions[1:]] == [None, None, None]
    assert "DONE (pruning)" in cli("list", "--catalog", str(root / "catalog.db")).stdout

    proc = cli("prune", str(config), "--json")
    assert proc.returncode == 0, proc.stderr
    outcomes = {o["id"]: o for o in json.loads(proc.stdout)}
    assert outcomes[sessions[0]["id"]]["result"] == "deleted"
    assert "an earlier prune did not finish" in outcomes[sessions[0]["id"]]["reasons"][0]
    assert [Path(s["archive"]).exists() for s in sessions] == [False, False, True, True]
    assert [rows(root)[s["id"]].pruned for s in sessions] == ["PRUNED", "PRUNED", None, None]


def test_an_archive_that_cannot_be_deleted_stays_pruning_and_fails_the_prune(
    ledger: Path, write_config: Any, root: Path
) -> None:
    config = write_config(extra="\n[retention]\nkeep_last = 1\n")
    sessions = backups(config, 2)
    stuck = Path(sessions[0]["archive"])
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a filesystem with the immutable flag")
    try:
        proc = cli("prune", str(config))
        assert proc.returncode == 1
        assert "could not delete session" in proc.stdout and "the next prune tries again" in proc.stdout
        assert stuck.exists() and rows(root)[sessions[0]["id"]].pruned == "PRUNING"
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert cli("prune", str(config)).returncode == 0
    assert not stuck.exists() and rows(root)[sessions[0]["id"]].pruned == "PRUNED"


def test_a_command_target_archive_goes_by_its_delete_command(
    ledger: Path, write_config: Any, root: Path
) -> None:
    zstd = f'["zstd", "-q", "-o", "{root}/archives/ledger-{{session}}.tar.zst"]'
    target = (
        f"command = {zstd}\n" + f'delete_command = ["rm", "{root}/archives/ledger-{{session}}.tar.zst"]\n'
    )
    config = write_config(extra=KEEP_TWO)
    config.write_text(
        config.read_text().replace(f'path = "{root}/archives/ledger-{{session}}.tar"\n', target)
    )
    sessions = backups(config, 3)
    files = [root / "archives" / f"ledger-{s['id']}.tar.zst" for s in sessions]
    assert all(path.exists() for path in files)
    outcomes = json.loads(cli("prune", str(config), "--json").stdout)
    assert [o["result"] for o in outcomes] == ["kept", "kept", "deleted"]
    assert outcomes[2]["detail"] == "by delete_command"
    assert [path.exists() for path in files] == [False, True, True]

    without = config.read_text().replace(
        f'delete_command = ["rm", "{root}/archives/ledger-{{session}}.tar.zst"]\n', ""
    )
    config.write_text(without)
    backups(config, 1)  # its archive has no delete_command recorded; the two before it do
    outcomes = json.loads(cli("prune", str(config), "--json").stdout)
    assert [o["result"] for o in outcomes] == ["kept", "kept", "deleted"]
    backups(config, 2)
    outcomes = json.loads(cli("prune", str(config), "--json").stdout)
    assert [o["result"] for o in outcomes] == ["kept", "kept", "left", "deleted"]
    assert "without delete_command" in outcomes[2]["detail"]


def test_an_archive_path_another_kept_session_names_is_never_deleted(
    ledger: Path, write_config: Any, root: Path
) -> None:
    """The review's case: no {session} in the path, the first archive moved aside as the
    preflight says, the next session writing the same path; the newer one is the file there."""
    config = write_config(extra="\n[retention]\nkeep_last = 1\n")
    config.write_text(config.read_text().replace("ledger-{session}.tar", "ledger.tar"))
    first = backups(config, 1)[0]
    Path(first["archive"]).rename(root / "archives" / "ledger-moved.tar")
    second = backups(config, 1)[0]
    assert first["archive"] == second["archive"]
    outcomes = json.loads(cli("prune", str(config), "--json").stdout)
    assert [o["result"] for o in outcomes] == ["kept", "left"]
    assert outcomes[1]["detail"] == f"session {second['id']} names the same archive and is kept"
    assert cli("verify", str(second["id"]), "--catalog", str(root / "catalog.db")).returncode == 0


def test_a_relative_archive_path_is_recorded_absolute(ledger: Path, write_config: Any, root: Path) -> None:
    config = write_config(extra=KEEP_TWO)
    config.write_text(config.read_text().replace(f'path = "{root}/archives/', 'path = "archives/'))
    ran = subprocess.run(
        [sys.executable, "-m", "splitmirror", "backup", str(config), "--json", "-q"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["archive"] == f"{root}/archives/ledger-1.tar"


def test_a_copied_configuration_for_another_database_never_prunes_the_first(
    ledger: Path, write_config: Any, root: Path
) -> None:
    orders = write_config(extra="\n[retention]\nkeep_last = 1\n")
    kept = backups(orders, 1)[0]
    (root / "primary2").mkdir()
    shutil.copy(ledger, root / "primary2" / "ledger.db")
    copied = root / "copied.toml"
    copied.write_text(
        orders.read_text()
        .replace(f"{root}/primary", f"{root}/primary2")
        .replace(f"{root}/mirror", f"{root}/mirror2")
        .replace("ledger-{session}", "copied-{session}")
    )  # the same [session] name, another database
    copied.chmod(0o600)
    backups(copied, 2)
    outcomes = json.loads(cli("prune", str(copied), "--json").stdout)
    assert kept["id"] not in [o["id"] for o in outcomes]
    assert Path(kept["archive"]).exists()
    note = f"note: 1 archive(s) named 'ledger' back up another database (sqlite://{root}/primary/ledger.db)"
    assert note in cli("prune", str(copied)).stdout


def test_a_prune_waits_for_another_prune_of_its_catalog(ledger: Path, write_config: Any, root: Path) -> None:
    config = write_config(extra=KEEP_TWO)
    backups(config, 1)
    locks = root / "locks"
    locks.mkdir(exist_ok=True)
    with (locks / "catalog.db.prune.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = subprocess.Popen([sys.executable, "-m", "splitmirror", "prune", str(config)])
        assert cli("prune", str(config), "--dry-run").returncode == 0  # reads only: no lock
        time.sleep(1)
        assert waiting.poll() is None  # still waiting for the other prune
    assert waiting.wait(60) == 0
    with (locks / "catalog.db.prune.lock").open("w") as held:  # one that never ends
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = pytest.raises(SessionBusyError, match=r"another prune of the catalog .* has run for more")
        with refused, one_prune_at_a_time(root / "catalog.db", wait=0.5):
            pass
