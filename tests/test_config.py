"""Bad configuration: one sentence naming the key and the fix, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.config import load_config

GOOD = {
    "session": 'name = "orders"\nmax_window = "30s"',
    "database": 'url = "sqlite:///srv/data/orders.db"\nmode = "freeze"',
    "mirror": 'provider = "directory"\nprimary = "/srv/data"\nmirror = "/backup/mirror"',
    "target": 'path = "/backup/orders-{session}.tar"\nblock_size = "256KiB"',
}


def toml(**changes: str | None) -> str:
    sections = {**GOOD, **changes}
    return "\n".join(f"[{name}]\n{body}\n" for name, body in sections.items() if body is not None)


BAD = [
    (
        "unknown key, did-you-mean",
        toml(session='name = "o"\nmax_windw = "30s"'),
        "[session] has no key 'max_windw'; did you mean 'max_window'?",
    ),
    (
        "unknown section",
        toml() + "[sesion]\nname = 'x'\n",
        "the file has no key 'sesion'; did you mean 'session'?",
    ),
    (
        "missing section",
        toml(mirror=None),
        "the [mirror] section is missing; add it with provider, primary and mirror",
    ),
    ("missing key", toml(database='mode = "freeze"'), "[database] needs the key 'url'"),
    (
        "bad duration",
        toml(session='name = "o"\nmax_window = "30x"'),
        "[session] max_window: '30x' is not a duration",
    ),
    ("negative duration", toml(session='name = "o"\nmax_window = "-1s"'), "[session] max_window:"),
    (
        "zero duration",
        toml(session='name = "o"\nmax_window = 0'),
        "a duration must be a finite number greater than zero",
    ),
    (
        "bad size",
        toml(target='path = "/b/x.tar"\nblock_size = "lots"'),
        "[target] block_size: 'lots' is not a size",
    ),
    (
        "block size not 512-aligned",
        toml(target='path = "/b/x.tar"\nblock_size = 1000'),
        "block_size must be a multiple of 512 bytes",
    ),
    ("bad mode", toml(database='url = "sqlite:///x.db"\nmode = "frozen"'), "[database] mode is 'frozen'"),
    ("wrong type", toml(session="name = 12"), "[session] name: input should be a valid string"),
    ("bad name", toml(session='name = "../etc"'), "[session] name: string should match pattern"),
    ("unknown placeholder", toml(target='path = "/b/{host}.tar"'), "uses {host}, which is not known"),
    (
        "unknown engine key",
        toml(database='url = "sqlite:///x.db"\nmode = "freeze"\nlock_timout = "1s"'),
        "[database] has no key 'lock_timout'; did you mean 'lock_timeout'?",
    ),
    (
        "bad engine value",
        toml(database='url = "sqlite:///x.db"\nlock_timeout = "soon"'),
        "[database] lock_timeout: 'soon' is not a duration",
    ),
    (
        "unknown mirror key",
        toml(mirror='primary = "/a"\nmirror = "/b"\ndevice = "/dev/x"'),
        "[mirror] has no key 'device'",
    ),
    (
        "unknown provider",
        toml(mirror='provider = "dirctory"\nprimary = "/a"\nmirror = "/b"'),
        "unknown mirror provider 'dirctory'; did you mean 'directory'?",
    ),
    (
        "unknown URL scheme",
        toml(database='url = "nosuchdb://h/x"'),
        "no installed database engine handles nosuchdb://",
    ),
    ("not TOML", "[session\nname=", "is not valid TOML"),
    ("infinite window", toml(session='name = "o"\nmax_window = inf'), "a duration must be a finite number"),
    (
        "window over an hour",
        toml(session='name = "o"\nmax_window = "2h"'),
        "[session] max_window: input should be less than or equal to 3600",
    ),
    (
        "section as a value",
        'session = "x"\n' + toml(session=None),
        "session must be a section: write [session]",
    ),
    (
        "typo of a core key next to engine keys",
        toml(database='url = "sqlite:///x.db"\nmoed = "freeze"'),
        "[database] has no key 'moed'; did you mean 'mode'?",
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_one_sentence_exit_2(case: str, text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    path.chmod(0o600)
    result = CliRunner().invoke(main, ["check", str(path)])
    message = result.output.strip()
    assert result.exit_code == 2, message
    assert expected in message
    assert str(path) in message or "unknown" in message or "no installed" in message
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message


def test_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["backup", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "does not exist; check the path" in result.output


def test_world_writable_config_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml())
    path.chmod(0o666)
    result = CliRunner().invoke(main, ["backup", str(path)])
    assert result.exit_code == 2
    assert "writable by every user" in result.output and "chmod o-w" in result.output


def test_config_is_a_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert result.exit_code == 2
    assert "is a directory, not a config file" in result.output


def test_design_example_config_parses(tmp_path: Path) -> None:
    path = tmp_path / "orders.toml"
    path.write_text(
        toml(session='name = "orders"\nmax_window = "30s"\ncatalog = "/var/lib/splitmirror/catalog.db"')
    )
    config = load_config(path)
    assert config.session.max_window == 30.0
    assert config.target.block_size == 256 * 1024
    assert config.database.mode.value == "freeze"


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml(session='name = "o"\nmax_windw = "1s"'))
    path.chmod(0o600)
    proc = subprocess.run(
        [sys.executable, "-m", "splitmirror", "backup", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:")
