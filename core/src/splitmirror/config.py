"""Loading and validating the TOML session configuration (docs/configuration.md).

Every problem becomes one :class:`~splitmirror.errors.ConfigError` sentence that names the file,
the section and the key, and says what to do, e.g.::

    orders.toml: [session] has no key 'max_windw'; did you mean 'max_window'?

Engines and mirror providers may accept keys of their own in ``[database]`` and ``[mirror]``;
they are validated against the plugin's ``options_model`` by :func:`plugin_options`.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import stat
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pydantic_core

from . import placement, priority
from .errors import ConfigError
from .operations import (
    DrillConfig,
    MetricsConfig,
    NotifyConfig,
    RetentionConfig,
    known_fields,
    program_and_arguments,
)
from .phases import Mode
from .units import parse_duration, parse_rate, parse_size

Duration = Annotated[float, pydantic.BeforeValidator(parse_duration)]
Size = Annotated[int, pydantic.BeforeValidator(parse_size)]

#: The fields ``[target]`` fills in, in the order error messages name them.
TARGET_FIELDS = ("session", "name", "timestamp")
_STRICT = pydantic.ConfigDict(extra="forbid", frozen=True)
_OPEN = pydantic.ConfigDict(extra="allow", frozen=True)


def _io_priority(value: str) -> str:
    if priority.ioprio_of(value) is not None and not priority.supported():
        raise ValueError(f"I/O priorities need Linux on {' or '.join(priority.SYSCALLS)}; remove io_priority")
    return value


def _nice(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise ValueError(f"{value!r} is not a nice value; write a whole number from 0 (as the server) to 19")
    return value


def _catalog(value: object) -> object:
    """A path (the SQLite catalog), or a URL a catalog plugin opens, kept as written; a URL never
    carries a password, which would end up in files, process lists and logs."""
    if not isinstance(value, str) or not value:
        return value
    if not catalog_url(value):
        return Path(value)
    if url_has_password(value):
        raise ValueError(
            "the catalog URL carries a password; remove it, and give it in "
            "$SPLITMIRROR_CATALOG_PASSWORD or a pgpass file (docs/fleet.md)"
        )
    return value


def catalog_url(text: str) -> bool:
    """``scheme://...``: a catalog behind a URL, never a file name."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text))


class SessionConfig(pydantic.BaseModel):
    model_config = _STRICT

    name: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    max_window: Annotated[Duration, pydantic.Field(le=3600)] = 30.0
    #: Where BACKUP runs: "here", or "off-host": this host splits and hands the split over to a
    #: backup host (``splitmirror archive``, docs/fleet.md).
    backup: Literal["here", "off-host"] = "here"
    #: A path (the SQLite catalog) or a URL (``postgresql://...``, docs/fleet.md).
    catalog: Annotated[Path | str | None, pydantic.BeforeValidator(_catalog)] = None
    # What SYNC and BACKUP may take from the server (:mod:`.budget`).
    io_limit: Annotated[int | None, pydantic.BeforeValidator(parse_rate)] = None
    io_priority: Annotated[str, pydantic.AfterValidator(_io_priority)] = "normal"
    cpu_nice: Annotated[int, pydantic.BeforeValidator(_nice)] = 0


class DatabaseConfig(pydantic.BaseModel):
    """``url`` and ``mode``; any other key belongs to the engine (see :func:`plugin_options`)."""

    model_config = _OPEN

    url: str
    mode: Mode = Mode.FREEZE


class MirrorConfig(pydantic.BaseModel):
    """``provider``, ``primary``, ``mirror``; any other key belongs to the provider."""

    model_config = _OPEN

    provider: str = "directory"
    primary: Path
    mirror: Path


def _fields_of(value: str, key: str | None) -> str:
    """``value`` (``[target] key``, or an argument of a command) itself when the only
    ``{fields}`` it uses are :data:`TARGET_FIELDS`."""
    return known_fields(value, TARGET_FIELDS, key)


#: A ``[target]`` argument: one string, whose ``{fields}`` are filled in per session.
_Arg = Annotated[str, pydantic.AfterValidator(lambda value: _fields_of(value, None))]
#: ``[target] command`` and its kin: a program and its arguments.
Argv = Annotated[list[_Arg], pydantic.BeforeValidator(program_and_arguments)]
#: What the catalog and ``[target] path`` say of a command target: ``command: zstd -q ...``.
COMMAND_LABEL = "command: "


def _key_error(key: str | tuple[str, str], message: str) -> pydantic_core.ValidationError:
    """A rule across keys, said of one: ``key`` in ``[target]`` (``[target] read_command: ...``),
    or ``(section, key)`` (``[drill] every: ...``)."""
    loc = key if isinstance(key, tuple) else (key,)
    detail = pydantic_core.InitErrorDetails(
        type=pydantic_core.PydanticCustomError("value_error", message), loc=loc, input=None
    )
    return pydantic_core.ValidationError.from_exception_data("Config", [detail])


class TargetConfig(pydantic.BaseModel):
    """Where the archive goes: ``path`` (a file, a tape, ``-``) or ``command`` (a program that
    takes it on its standard input, :mod:`.targets.command`).  For a command target ``kind`` is
    ``"command"`` and ``path`` is filled in as its label (:data:`COMMAND_LABEL`)."""

    model_config = _STRICT

    path: str = ""
    block_size: Size = 256 * 1024
    kind: str | None = None
    command: Argv | None = None
    read_command: Argv | None = None
    delete_command: Argv | None = None
    command_timeout: Duration = 3600.0

    @pydantic.field_validator("block_size")
    @classmethod
    def _whole_tar_blocks(cls, value: int) -> int:
        if value % 512 or value > 16 * 1024 * 1024:
            raise ValueError("block_size must be a multiple of 512 bytes and at most 16MiB")
        return value

    @pydantic.field_validator("path")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        return _fields_of(value, "path")

    @pydantic.model_validator(mode="after")
    def _path_or_command(self) -> TargetConfig:
        given = self.model_fields_set
        if "command" not in given:
            if "path" not in given:
                raise _key_error(
                    "path",
                    'missing; set it to an archive file, a tape device or "-" (standard output), or set '
                    "command instead (a program that takes the archive on its standard input)",
                )
            for key in ("read_command", "delete_command", "command_timeout"):
                if key in given:
                    raise _key_error(
                        key, f"it goes with command (a command target); set command or remove {key}"
                    )
            if self.kind == "command":
                raise _key_error(
                    "kind", '"command" needs [target] command, the program to pipe the archive into'
                )
            return self
        if "path" in given:
            raise _key_error(
                "command",
                "path and command are alternatives; keep one (path writes the archive to a file, a tape "
                "or standard output, command pipes it into a program)",
            )
        if self.kind not in (None, "command"):
            raise _key_error("kind", f"is {self.kind!r} but command is set; remove kind")
        assert self.command is not None
        return self.model_copy(update={"path": COMMAND_LABEL + shlex.join(self.command), "kind": "command"})


class Config(pydantic.BaseModel):
    model_config = _STRICT

    session: SessionConfig
    database: DatabaseConfig
    mirror: MirrorConfig
    #: None only with ``[session] backup = "off-host"``: the backup host's configuration has it.
    target: TargetConfig | None = None
    retention: RetentionConfig | None = None
    metrics: MetricsConfig | None = None
    notify: NotifyConfig | None = None
    drill: DrillConfig | None = None
    source: Path = Path("<memory>")

    def extras(self, section: Literal["database", "mirror"]) -> dict[str, Any]:
        model = self.database if section == "database" else self.mirror
        return dict(model.model_extra or {})

    @pydantic.model_validator(mode="after")
    def _a_target_unless_off_host(self) -> Config:
        if self.target is None and self.session.backup != "off-host":
            raise ValueError(
                "the [target] section is missing; add it with path (where the archives go), or set "
                '[session] backup = "off-host" for a backup host to archive the split (docs/fleet.md)'
            )
        return self

    @pydantic.model_validator(mode="after")
    def _drills_can_read_the_archive(self) -> Config:
        """``backup`` drills its own archive with ``[drill] every``: one it can read back."""
        if self.drill is None or self.drill.every is None:
            return self
        if self.target is None:
            raise _key_error(
                ("drill", "every"),
                'needs the archive, which a backup host writes with [session] backup = "off-host"; drill '
                "it there or with `splitmirror drill ID`",
            )
        if self.target.path == "-":
            raise _key_error(
                ("drill", "every"),
                'needs an archive splitmirror can read back, and [target] path = "-" sends it to standard '
                "output; drill your copy by hand",
            )
        if self.target.command is not None and self.target.read_command is None:
            raise _key_error(("drill", "every"), "needs [target] read_command to read the archive back")
        return self


_SECTION_HINTS = {
    "session": "name (and optionally max_window, backup, catalog, io_limit, io_priority, cpu_nice)",
    "database": "url and mode",
    "mirror": "provider, primary and mirror",
    "target": "path (and optionally block_size)",
    "retention": "keep_last, keep_within, keep_daily, keep_weekly or keep_monthly",
    "metrics": "textfile",
    "notify": "command",
    "drill": "every, image, binaries, query, scratch or timeout",
    "archive": "devices (and optionally catalog, lease, poll, spool)",
}


def _model_fields(model: type[pydantic.BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        # An optional section ([retention]) is annotated ``RetentionConfig | None``.
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return []
        model = annotation
    return [name for name in model.model_fields if name != "source"]


def describe_error(
    error: Any,
    model: type[pydantic.BaseModel],
    where: str,
    prefix: tuple[str, ...] = (),
    also: tuple[str, ...] = (),
) -> str:
    """One pydantic error → one sentence naming section, key and fix."""
    loc = prefix + tuple(str(p) for p in error["loc"])
    section, key = (loc[0], loc[-1]) if len(loc) > 1 else (None, loc[0] if loc else "")
    if len(loc) > 2 and key.isdigit():  # an item of a list: split_command[1]
        key = f"{loc[-2]}[{key}]"
    kind = error["type"]
    if prefix and not error["loc"]:  # a rule across the section's keys (a model validator)
        return f"{where}: [{prefix[0]}] " + str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = [*also, *_model_fields(model, tuple(error["loc"][:-1]))]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        place = f"[{section}]" if section else "the file"
        return f"{where}: {place} has no key {key!r}; {hint}"
    if kind == "missing":
        if section is None:
            return (
                f"{where}: the [{key}] section is missing; add it with {_SECTION_HINTS.get(key, 'its keys')}"
            )
        return f"{where}: [{section}] needs the key {key!r}"
    if section is None and kind == "value_error":  # a rule across an optional section's keys
        return f"{where}: [{key}] " + str(error["msg"]).removeprefix("Value error, ")
    if section is None:  # a whole section given as a plain value
        return f"{where}: {key} must be a section: write [{key}] followed by its keys"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[0].lower() + message[1:] if message else kind
    if kind == "enum":
        return f"{where}: [{section}] {key} is {error['input']!r}; {message}"
    return f"{where}: [{section}] {key}: {message}"


def parse_config(data: dict[str, Any], where: str = "config") -> Config:
    """Validate an already-parsed TOML document, and where it puts things (:mod:`.placement`)."""
    try:
        config = Config.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(describe_error(error.errors()[0], Config, where)) from None
    misplaced = placement.config_problems(config)
    if misplaced:
        key, problem = misplaced[0]
        raise ConfigError(f"{where}: {key}: {problem.sentence()}")
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, check and validate a config file; every failure is one :class:`ConfigError`."""
    data, where = read_toml(path)
    return parse_config(data, where)


def read_toml(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """A configuration file's TOML, with ``source`` set to its resolved path, and how sentences
    name it; a file anyone may write, or one that is not TOML, is one :class:`ConfigError`."""
    source = Path(path)
    where = str(source)
    try:
        info = source.stat()
        raw = source.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the config file {where} does not exist; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not a config file") from None
    except OSError as error:
        raise ConfigError(f"cannot read the config file {where}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a regular file; point at the TOML config file")
    if info.st_mode & stat.S_IWOTH:
        raise ConfigError(
            f"the config file {where} is writable by every user, so anyone could redirect "
            f"the backup; run `chmod o-w {where}`"
        )
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text; save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{where} is not valid TOML ({error}); fix the syntax") from None
    data["source"] = str(source.resolve())
    return data, where


def plugin_options(
    config: Config, section: Literal["database", "mirror"], model: type[pydantic.BaseModel]
) -> pydantic.BaseModel:
    """Validate the plugin-specific keys of ``[database]`` or ``[mirror]``.  A key the model does
    not name is refused whatever the model's own ``extra`` setting: a misspelt option silently
    ignored is a backup that does not do what its configuration says."""
    core = tuple(DatabaseConfig.model_fields if section == "database" else MirrorConfig.model_fields)
    extras = config.extras(section)
    known = set(model.model_fields) | {field.alias for field in model.model_fields.values() if field.alias}
    for key in extras:
        if key not in known:
            unknown = {"type": "extra_forbidden", "loc": (key,), "msg": ""}
            raise ConfigError(describe_error(unknown, model, str(config.source), (section,), core))
    try:
        return model.model_validate(extras)
    except pydantic.ValidationError as error:
        raise ConfigError(
            describe_error(error.errors()[0], model, str(config.source), (section,), core)
        ) from None


def expand_target_path(template: str, *, session: int, name: str, timestamp: str) -> str:
    """Fill ``{session}``, ``{name}`` and ``{timestamp}`` in ``[target] path``."""
    return template.format(session=session, name=name, timestamp=timestamp)


_SAFE_SECRET = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@")
#: A ``password`` (or libpq's ``sslpassword``) parameter in a URL's query.
_QUERY_SECRET = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """A URL with any password replaced by ``***``, for the catalog and the manifest."""
    return _QUERY_SECRET.sub(r"\1***", _SAFE_SECRET.sub(r"\1***@", url))


def url_has_password(url: str) -> bool:
    """Whether ``url`` carries a password, after the user or as a query parameter."""
    return bool(_SAFE_SECRET.search(url) or _QUERY_SECRET.search(url))
