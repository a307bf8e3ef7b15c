"""The sections for running splitmirror every night: ``[retention]``, ``[metrics]``, ``[notify]``,
``[drill]``.

They sit apart from the session's own sections (:mod:`.config`) because none of them changes what
a session reads or writes: they say what happens around sessions, afterwards (docs/operations.md).
Each section is optional; a section present with nothing to do in it is refused, since a DBA who
wrote ``[retention]`` and no rule meant some rule.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Literal

import pydantic

from .units import parse_duration

_STRICT = pydantic.ConfigDict(extra="forbid", frozen=True)
Duration = Annotated[float, pydantic.BeforeValidator(parse_duration)]


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a count; write a whole number of archives, 1 or more")
    return value


Count = Annotated[int, pydantic.BeforeValidator(_count)]


class RetentionConfig(pydantic.BaseModel):
    """Which archives ``splitmirror prune`` keeps: every archive that any rule keeps stays."""

    model_config = _STRICT

    keep_last: Count | None = None
    keep_within: Duration | None = None
    keep_daily: Count | None = None
    keep_weekly: Count | None = None
    keep_monthly: Count | None = None

    @pydantic.model_validator(mode="after")
    def _some_rule(self) -> RetentionConfig:
        if all(value is None for value in self.model_dump().values()):
            raise ValueError(
                "has no rule, so it would keep only the newest archive; add keep_last, keep_within, "
                "keep_daily, keep_weekly or keep_monthly (or remove the section)"
            )
        return self


def known_fields(value: str, allowed: tuple[str, ...], key: str | None) -> str:
    """``value`` itself when the only ``{fields}`` it uses are ``allowed`` (``[target] path``'s,
    a command's argument's, ``[metrics] textfile``'s); one sentence naming ``key`` otherwise."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as error:
        raise ValueError(
            f"{key or 'the argument'} {value!r} has an unbalanced brace ({error}); write {{{{ and }}}} "
            "for a literal one"
        ) from None
    unknown = fields - set(allowed)
    if unknown:
        named = [f"{{{name}}}" for name in allowed]
        known = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} or {named[-1]}"
        raise ValueError(
            f"{key or repr(value)} uses {{{sorted(unknown)[0]}}}, which is not known; use {known}"
        )
    return value


class MetricsConfig(pydantic.BaseModel):
    """A Prometheus textfile for node_exporter's textfile collector (:mod:`.metrics`)."""

    model_config = _STRICT

    textfile: Path

    @pydantic.field_validator("textfile")
    @classmethod
    def _prom_file(cls, value: Path) -> Path:
        known_fields(str(value), ("name",), "textfile")
        if not value.name.endswith(".prom"):
            raise ValueError(
                f"textfile {str(value)!r} must end in .prom: node_exporter's textfile collector reads "
                "only those"
            )
        return value


def program_and_arguments(value: object) -> object:
    """A program and its arguments as a TOML list of strings (no shell reads it): the site's
    programs are written so wherever splitmirror runs one (``[target] command``, ``[notify]``)."""
    if isinstance(value, str):
        raise ValueError(
            f"{value!r} is one string; write the program and its arguments as a list, "
            'e.g. ["zstd", "-q", "-o", "/backup/{name}-{session}.tar.zst"] (no shell is used)'
        )
    if isinstance(value, list) and (not value or value[0] == ""):
        raise ValueError("the list is empty; give the program and its arguments")
    return value


class NotifyConfig(pydantic.BaseModel):
    """A program told of every session's end (:mod:`.notify`)."""

    model_config = _STRICT

    command: Annotated[list[str], pydantic.BeforeValidator(program_and_arguments)]
    #: The outcomes worth a message; by default every one.
    on: list[Literal["DONE", "FAILED"]] = ["DONE", "FAILED"]
    timeout: Annotated[Duration, pydantic.Field(le=3600)] = 60.0


class DrillConfig(pydantic.BaseModel):
    """How ``splitmirror drill`` restores, starts and checks an archive (:mod:`.drill`)."""

    model_config = _STRICT

    #: ``backup`` drills its own archive after every Nth DONE session of the configuration.
    every: Count | None = None
    #: The server's image: the copy starts by the container route (else by the host route).
    image: str | None = None
    #: The server's programs (``/usr/lib/postgresql/17/bin``), put first on ``PATH``.
    binaries: Path | None = None
    #: The DBA's own question to the copy; it must run without error.
    query: str | None = None
    #: Where the drill restores (a directory of its own is made inside, and removed).
    scratch: Path | None = None
    #: For the copy to start and be checked.
    timeout: Annotated[Duration, pydantic.Field(le=86400)] = 600.0
