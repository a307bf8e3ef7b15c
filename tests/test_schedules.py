"""The schedules shipped in the repository: contrib/systemd's units, the Kubernetes CronJob, and
docs/scheduling.md, checked against each other and against the command line they run.

``systemd-analyze verify`` loads the units as systemd would, without a running systemd and
without executing anything: it needs only that ExecStart='s program exists, so the units are
verified from a copy whose ExecStart= names this environment's ``splitmirror``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from splitmirror.cli import main
from splitmirror.config import parse_config, plugin_options
from splitmirror.hooks import Hooks

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"
SERVICE = UNITS / "splitmirror@.service"
TIMER = UNITS / "splitmirror@.timer"
DROP_IN = UNITS / "splitmirror@orders.service.d" / "local.conf"
DRILL_SERVICE = UNITS / "splitmirror-drill@.service"
DRILL_TIMER = UNITS / "splitmirror-drill@.timer"
DRILL_DROP_IN = UNITS / "splitmirror-drill@orders.service.d" / "local.conf"
CRONJOB = ROOT / "docs" / "examples" / "kubernetes" / "cronjob.yaml"
DOC = ROOT / "docs" / "scheduling.md"
INSTANCE = "orders"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(path: Path) -> list[tuple[str, str, str, int]]:
    """(section, key, value, line number) of every directive of a unit file, in order."""
    found, section = [], ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip(), number))
    return found


def values(path: Path, key: str) -> list[str]:
    return [value for _, k, value, _ in directives(path) if k == key]


def only(path: Path, key: str) -> str:
    (value,) = values(path, key)
    return value


def exec_start(service: Path = SERVICE) -> list[str]:
    """The service's command for the instance, as argv."""
    return shlex.split(only(service, "ExecStart").replace("%i", INSTANCE))


def help_text(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def listed_options(*command: str) -> set[str]:
    return set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", help_text(*command), re.MULTILINE))


def help_exit_codes() -> set[int]:
    codes = help_text().split("Exit codes:", 1)[1]
    return {int(code) for code in re.findall(r"^\s+(\d+)\s", codes, re.MULTILINE)}


def doc_blocks(language: str | None = None) -> list[list[str]]:
    """The fenced code blocks of docs/scheduling.md (of one language), as lines."""
    blocks = re.findall(r"^ *```(\w*)\n(.*?)^ *```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
    return [body.splitlines() for lang, body in blocks if language is None or lang == language]


def analyze(*args: str, level: str = "info") -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": level, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """contrib/systemd copied, ExecStart= pointed at this environment's splitmirror, plus the unit
    files docs/scheduling.md shows (each ``ini`` block that starts ``# /etc/systemd/system/...``)."""
    here = tmp_path / "units"
    shutil.copytree(UNITS, here)
    program = Path(sys.executable).with_name("splitmirror")
    assert program.exists(), program
    for service in (here / SERVICE.name, here / DRILL_SERVICE.name):
        text = service.read_text()
        assert text.count("ExecStart=/usr/local/bin/splitmirror ") == 1
        service.write_text(text.replace("ExecStart=/usr/local/bin/splitmirror ", f"ExecStart={program} "))
    for block in doc_blocks("ini"):
        head = re.fullmatch(r"# /etc/systemd/system/(\S+)", block[0])
        if head:
            (here / head.group(1)).parent.mkdir(parents=True, exist_ok=True)
            (here / head.group(1)).write_text("\n".join(block[1:]) + "\n")
    return here


def verify(here: Path) -> subprocess.CompletedProcess[str]:
    """Verify the instance's services and timers (backup and drill), and the doc's alert unit as
    OnFailure= starts it; only them, not the host's other units."""
    units = ("splitmirror", "splitmirror-drill")
    names = [f"{unit}@{INSTANCE}.{kind}" for unit in units for kind in ("service", "timer")]
    if (here / "splitmirror-alert@.service").exists():
        names += [f"splitmirror-alert@{unit}@{INSTANCE}.service.service" for unit in units]
    return analyze("verify", "--man=no", "--recursive-errors=no", *(str(here / name) for name in names))


# -- systemd ---------------------------------------------------------------------------------


@needs_analyze
def test_the_units_verify_without_a_word(unit_dir: Path) -> None:
    """Any output is a finding: an unknown key is only a warning, and the exit status stays 0."""
    result = verify(unit_dir)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_the_drop_ins_are_verified_too(unit_dir: Path) -> None:
    """The contrib drop-in and the doc's OnFailure= drop-in are read with the service."""
    dump = analyze(
        "verify",
        "--man=no",
        str(unit_dir / "splitmirror@orders.service"),
        level="debug",
    )
    output = dump.stdout + dump.stderr
    assert f"DropIn Path: {unit_dir / DROP_IN.relative_to(UNITS)}" in output
    assert f"DropIn Path: {unit_dir / 'splitmirror@.service.d' / 'alert.conf'}" in output
    assert "OnFailure: splitmirror-alert@splitmirror@orders.service.service" in output


@needs_analyze
@pytest.mark.parametrize(
    ("unit", "directive", "misspelt"),
    [
        (SERVICE.name, "ProtectSystem=strict", "ProtectSytem=strict"),
        (SERVICE.name, "DeviceAllow=block-* rw", "DeviceAlow=block-* rw"),
        (TIMER.name, "Persistent=true", "Persistant=true"),
        (DROP_IN.relative_to(UNITS).as_posix(), "After=postgresql.service", "Afterr=postgresql.service"),
        ("splitmirror-alert@.service", "Type=oneshot", "Typ=oneshot"),
        (DRILL_SERVICE.name, "PrivateTmp=no", "PrivateTpm=no"),
        (DRILL_SERVICE.name, "NoNewPrivileges=yes", "NoNewPrivilege=yes"),
        (DRILL_TIMER.name, "FixedRandomDelay=true", "FixedRandomDelya=true"),
        (
            DRILL_DROP_IN.relative_to(UNITS).as_posix(),
            "ReadWritePaths=-/var/lib/prometheus/node-exporter",
            "ReadWritePath=-/var/lib/prometheus/node-exporter",
        ),
        ("splitmirror@orders.service.d/drill.conf", "PrivateTmp=no", "PrivateTemp=no"),
    ],
)
def test_a_misspelt_directive_fails_verification(
    unit_dir: Path, unit: str, directive: str, misspelt: str
) -> None:
    path = unit_dir / unit
    assert path.read_text().count(f"\n{directive}\n") == 1
    path.write_text(path.read_text().replace(f"\n{directive}\n", f"\n{misspelt}\n"))
    result = verify(unit_dir)
    assert misspelt.split("=")[0] in result.stdout + result.stderr


def test_the_service_runs_backup_with_options_backup_has() -> None:
    program, command, *arguments = exec_start()
    assert (Path(program).name, command) == ("splitmirror", "backup")
    options = [argument for argument in arguments if argument.startswith("-")]
    assert set(options) <= listed_options("backup"), f"not in `splitmirror backup --help`: {options}"
    positional = [argument for argument in arguments if not argument.startswith("-")]
    assert positional == [f"/etc/splitmirror/{INSTANCE}.toml"]
    assert "--prune" in options


def test_the_service_fails_on_every_error_and_keeps_the_watchdog() -> None:
    assert only(SERVICE, "Type") == "oneshot"
    assert values(SERVICE, "SuccessExitStatus") == []  # exit 1-7 leave the unit failed
    assert values(SERVICE, "Restart") in ([], ["no"])  # a failed backup is not retried blindly
    assert only(SERVICE, "KillMode") == "process"
    capabilities = set(only(SERVICE, "CapabilityBoundingSet").split())
    assert {"CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_CHOWN"} <= capabilities
    assert "PrivateDevices=yes" not in SERVICE.read_text()


@needs_analyze
def test_the_timer_is_nightly_persistent_and_spread() -> None:
    calendar = only(TIMER, "OnCalendar")
    result = analyze("calendar", calendar)
    assert result.returncode == 0, result.stderr
    assert f"Normalized form: {calendar}" in result.stdout
    assert only(TIMER, "Persistent") == "true"
    assert only(TIMER, "RandomizedDelaySec")
    assert only(TIMER, "Unit") == "splitmirror@%i.service"
    assert only(TIMER, "WantedBy") == "timers.target"


@pytest.mark.parametrize(
    "path",
    [SERVICE, TIMER, DROP_IN, DRILL_SERVICE, DRILL_TIMER, DRILL_DROP_IN],
    ids=lambda p: p.relative_to(UNITS).as_posix(),
)
def test_every_directive_says_why(path: Path) -> None:
    lines = path.read_text().splitlines()
    bare = [
        f"{path.name}:{number}: {key}"
        for _, key, _, number in directives(path)
        if key != "Description" and not lines[number - 2].startswith("#")
    ]
    assert not bare, "a directive without a comment above it:\n" + "\n".join(bare)


# -- the drill's units ---------------------------------------------------------------------------


@needs_analyze
def test_the_drill_drop_ins_are_verified_too(unit_dir: Path) -> None:
    """The contrib drill drop-in and the doc's OnFailure= drop-in are read with the drill service,
    and the doc's drop-in for [drill] every with the backup service."""
    dump = analyze(
        "verify", "--man=no", str(unit_dir / f"splitmirror-drill@{INSTANCE}.service"), level="debug"
    )
    output = dump.stdout + dump.stderr
    assert f"DropIn Path: {unit_dir / DRILL_DROP_IN.relative_to(UNITS)}" in output
    assert f"DropIn Path: {unit_dir / 'splitmirror-drill@.service.d' / 'alert.conf'}" in output
    assert f"OnFailure: splitmirror-alert@splitmirror-drill@{INSTANCE}.service.service" in output
    dump = analyze("verify", "--man=no", str(unit_dir / f"splitmirror@{INSTANCE}.service"), level="debug")
    assert (
        f"DropIn Path: {unit_dir / 'splitmirror@orders.service.d' / 'drill.conf'}"
        in dump.stdout + dump.stderr
    )


def test_the_drill_service_runs_drill_with_options_drill_has() -> None:
    program, command, *arguments = exec_start(DRILL_SERVICE)
    assert (Path(program).name, command) == ("splitmirror", "drill")
    assert program == exec_start()[0], "the backup's program"
    options = [argument for argument in arguments if argument.startswith("-")]
    assert set(options) <= listed_options("drill"), f"not in `splitmirror drill --help`: {options}"
    assert arguments == ["--config", f"/etc/splitmirror/{INSTANCE}.toml"], "no ID: the newest kept archive"


def test_the_drill_sandbox_is_not_the_backups() -> None:
    """What a drill needs (the catalog as the backup keeps it, set-uid for runuser, the host's
    /var/tmp as scratch), and none of the backup's freezing, tracing or disks."""
    assert only(DRILL_SERVICE, "Type") == "oneshot"
    assert values(DRILL_SERVICE, "SuccessExitStatus") == []
    assert values(DRILL_SERVICE, "Restart") == []
    assert only(DRILL_SERVICE, "KillMode") == "control-group"
    for key in ("StateDirectory", "StateDirectoryMode", "ProtectSystem", "NoNewPrivileges", "User"):
        assert only(DRILL_SERVICE, key) == only(SERVICE, key), key
    catalog = [v for v in values(SERVICE, "Environment") if v.startswith("SPLITMIRROR_CATALOG=")]
    assert catalog and catalog[0] in values(DRILL_SERVICE, "Environment")
    capabilities = set(only(DRILL_SERVICE, "CapabilityBoundingSet").split())
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL"} <= capabilities
    assert "CAP_SYS_ADMIN" not in capabilities
    assert only(DRILL_SERVICE, "PrivateDevices") == "yes"
    assert values(DRILL_SERVICE, "DeviceAllow") == []
    assert "@mount" not in only(DRILL_SERVICE, "SystemCallFilter")
    assert "AF_UNIX" in only(DRILL_SERVICE, "RestrictAddressFamilies").split()  # /run/docker.sock
    # The scratch: $TMPDIR, writable, the host's own (the Docker daemon mounts it by its path).
    assert only(DRILL_SERVICE, "PrivateTmp") == "no"
    assert "TMPDIR=/var/tmp" in values(DRILL_SERVICE, "Environment")
    assert "-/var/tmp" in values(DRILL_SERVICE, "ReadWritePaths")
    # Ordered after the backup of the same configuration, never stopping it.
    assert "splitmirror@%i.service" in " ".join(values(DRILL_SERVICE, "After")).split()
    assert values(DRILL_SERVICE, "Conflicts") == []
    assert values(DRILL_SERVICE, "Wants") == ["network-online.target"]


def test_the_default_scratch_follows_tmpdir(tmp_path: Path) -> None:
    """[drill] scratch defaults to tempfile.gettempdir(), which the unit points with TMPDIR."""
    probe = "import tempfile; print(tempfile.gettempdir())"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == str(tmp_path)


@needs_analyze
def test_the_drill_timer_is_weekly_persistent_and_spread() -> None:
    calendar = only(DRILL_TIMER, "OnCalendar")
    result = analyze("calendar", "--iterations=2", calendar)
    assert result.returncode == 0, result.stderr
    assert f"Normalized form: {calendar}" in result.stdout
    elapses = re.findall(r"(?:Next elapse|Iter\. #2): \w+ (\d{4}-\d\d-\d\d) ", result.stdout)
    assert len(elapses) == 2
    first, second = (dt.date.fromisoformat(day) for day in elapses)
    assert (second - first).days == 7
    assert only(DRILL_TIMER, "Persistent") == "true"
    assert only(DRILL_TIMER, "RandomizedDelaySec")
    assert only(DRILL_TIMER, "Unit") == "splitmirror-drill@%i.service"
    assert only(DRILL_TIMER, "WantedBy") == "timers.target"


# -- Kubernetes --------------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    documents = [document for document in yaml.safe_load_all(CRONJOB.read_text()) if document]
    kinds = {document["kind"]: document for document in documents}
    assert len(kinds) == len(documents), "one object of each kind"
    return kinds


def test_the_cronjob_never_overlaps_nor_retries() -> None:
    cronjob = manifests()["CronJob"]
    assert cronjob["apiVersion"] == "batch/v1"
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int)
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_the_cronjob_runs_what_the_service_runs() -> None:
    (container,) = manifests()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    program, *arguments = exec_start()
    assert container["command"] == [Path(program).name, *arguments]
    assert container["securityContext"]["privileged"] is True


def test_the_cronjob_mounts_what_its_configuration_names() -> None:
    objects = manifests()
    pod = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    config_path = Path(container["command"][-1])
    config_map = mounts[str(config_path.parent)]["configMap"]
    assert config_map["name"] == objects["ConfigMap"]["metadata"]["name"]
    assert not config_map["defaultMode"] & 0o002, "splitmirror refuses a config anyone may write"
    text = objects["ConfigMap"]["data"][config_path.name]
    config = parse_config(tomllib.loads(text), str(config_path))
    assert config.retention is not None, "--prune needs [retention]"
    hooks = Hooks()
    engine = hooks.engine_for_url(config.database.url)
    assert config.database.mode in engine.modes
    plugin_options(config, "database", engine.options_model)
    plugin_options(config, "mirror", hooks.mirrors.get(config.mirror.provider).options_model)
    # The primary's mount point and both devices come from the node; the catalog and the archives
    # lie on the claim.
    assert mounts[str(config.mirror.primary)]["hostPath"]["type"] == "Directory"
    for device in (config.extras("mirror")["device"], str(config.mirror.mirror)):
        assert mounts[device]["hostPath"] == {"path": device, "type": "BlockDevice"}
    claim = mounts["/var/lib/splitmirror"]["persistentVolumeClaim"]["claimName"]
    assert claim == objects["PersistentVolumeClaim"]["metadata"]["name"]
    assert config.session.catalog is not None
    assert config.session.catalog.is_relative_to("/var/lib/splitmirror")
    assert Path(config.target.path).is_relative_to("/var/lib/splitmirror")


# -- docs/scheduling.md ------------------------------------------------------------------------


def commands_in_doc() -> list[list[str]]:
    """Every splitmirror command line the doc shows, as argv, shell redirections left off."""
    found = []
    for block in doc_blocks():
        for line in block:
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            tokens = [token.removeprefix("ExecStart=") for token in tokens]
            for index, token in enumerate(tokens):
                starts = (
                    index == 0 or tokens[index - 1] in {"$", "root"} or line.find(f"ExecStart={token}") >= 0
                )
                if Path(token).name == "splitmirror" and starts and index + 1 < len(tokens):
                    argv = []
                    for argument in tokens[index:]:
                        if argument[0] in "|>&" or argument.startswith("2>"):
                            break
                        argv.append(argument)
                    found.append(argv)
    return found


def test_the_docs_commands_are_the_command_lines() -> None:
    commands = commands_in_doc()
    assert len(commands) >= 5
    known = set(re.findall(r"^  (\w+)\s", help_text().split("Commands:", 1)[1], re.MULTILINE))
    for argv in commands:
        assert argv[1] in known, argv
        options = {argument.split("=")[0] for argument in argv[2:] if argument.startswith("-")}
        assert options <= listed_options(argv[1]), argv
    assert exec_start()[1:] in [argv[1:] for argv in commands]


def test_the_doc_names_the_units_files_and_settings_as_they_are() -> None:
    text = DOC.read_text()
    for path in re.findall(r"(?<![\w/])((?:contrib|docs/examples)/[\w@./-]+\w)", text):
        assert (ROOT / path).exists(), path
    for command in (
        f"systemctl enable --now splitmirror@{INSTANCE}.timer",
        f"journalctl -u splitmirror@{INSTANCE}",
        "systemctl list-timers",
        f"splitmirror backup --prune /etc/splitmirror/{INSTANCE}.toml",
    ):
        assert command in text, command
    program = only(SERVICE, "ExecStart").split()[0]
    assert f"ln -s /opt/splitmirror/.venv/bin/splitmirror {program}" in text
    for key in ("OnCalendar", "RandomizedDelaySec", "FixedRandomDelay", "Persistent"):
        assert f"`{key}={only(TIMER, key)}`" in text, key


def drill_section() -> str:
    return DOC.read_text().split("## Restore drills on their own timer", 1)[1].split("\n## ", 1)[0]


def test_the_docs_drill_section_names_the_units_and_commands_as_they_are() -> None:
    section = drill_section()
    for name in (DRILL_SERVICE, DRILL_TIMER, DRILL_DROP_IN):
        assert name.relative_to(ROOT).as_posix() in section, name
    for command in (
        f"systemctl enable --now splitmirror-drill@{INSTANCE}.timer",
        f"systemctl start splitmirror-drill@{INSTANCE}.service",
        f"journalctl -u splitmirror-drill@{INSTANCE}",
        "systemctl list-timers 'splitmirror-drill@*'",
        f"splitmirror list --config /etc/splitmirror/{INSTANCE}.toml",
        " ".join(["splitmirror", *exec_start(DRILL_SERVICE)[1:]]),
        "splitmirror_last_drill_success",
        "[drill] every",
    ):
        assert command in section, command
    assert exec_start(DRILL_SERVICE)[1:] in [argv[1:] for argv in commands_in_doc()]
    for key in ("OnCalendar", "RandomizedDelaySec", "FixedRandomDelay", "Persistent"):
        assert f"`{key}={only(DRILL_TIMER, key)}`" in section, key
    assert f"`After={values(DRILL_SERVICE, 'After')[0]}`" in section
    assert f"`ReadWritePaths={only(DRILL_DROP_IN, 'ReadWritePaths')}`" in section


def test_the_docs_drill_sandbox_table_is_the_drill_service() -> None:
    """Each setting the table names is the drill service's, and each of the service's is in it."""
    section = drill_section().split("### The drill's sandbox is not the backup's", 1)[1].split("\n### ", 1)[0]
    assert_table_is_the_service(section, DRILL_SERVICE)


def test_the_docs_exit_codes_are_splitmirrors() -> None:
    section = DOC.read_text().split("### How a failed run shows", 1)[1]
    table = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert table == help_exit_codes()


def test_the_docs_sandbox_table_is_the_service() -> None:
    """Each setting the table names is the service's, and each of the service's is in it."""
    section = DOC.read_text().split("### The sandbox, option by option", 1)[1].split("\n## ", 1)[0]
    assert_table_is_the_service(section, SERVICE)


def assert_table_is_the_service(section: str, unit: Path) -> None:
    """The table's settings (its rows' first column) are ``unit``'s, and it names each of
    ``unit``'s [Service] settings but Type=, ExecStart= and User=."""
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    lines = {f"{key}={value}" for _, key, value, _ in directives(unit)}
    named = set()
    for row in rows:
        for setting in re.findall(r"`(\w+=[^`]*)`", row.split(" | ")[0]):
            key, _, value = setting.partition("=")
            named.add(key)
            if value:
                assert setting in lines, setting
            else:  # CapabilityBoundingSet=: the capabilities are in the next column
                assert set(re.findall(r"`(CAP_\w+)`", row)) == set(only(unit, key).split())
    service = {key for section, key, _, _ in directives(unit) if section == "Service"}
    assert service - named == {"Type", "ExecStart", "User"}
