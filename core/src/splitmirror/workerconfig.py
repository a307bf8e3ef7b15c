"""A backup host's configuration: which catalog to take handed-over splits from, which disks it
may read them from, and where their archives go (``splitmirror archive``, docs/fleet.md).

It names no database and no primary: a backup host never reaches either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import pydantic

from .config import (
    Duration,
    TargetConfig,
    catalog_url,
    describe_error,
    read_toml,
    url_has_password,
)
from .errors import ConfigError

_STRICT = pydantic.ConfigDict(extra="forbid", frozen=True)


def _catalog(value: object) -> object:
    if isinstance(value, str) and catalog_url(value) and url_has_password(value):
        raise ValueError(
            "the catalog URL carries a password; remove it, and give it in $SPLITMIRROR_CATALOG_PASSWORD "
            "or a pgpass file (docs/fleet.md)"
        )
    return value


class ArchiveSection(pydantic.BaseModel):
    model_config = _STRICT

    #: The catalog the database hosts hand their splits over in (a path or a URL).
    catalog: Annotated[str | None, pydantic.BeforeValidator(_catalog)] = None
    #: The mirror disks this host sees; a split is taken only from the one it was split on.
    devices: Annotated[list[Path], pydantic.Field(min_length=1)]
    #: How long a claim holds without renewal: a worker that dies leaves its split to the next
    #: after this long (renewed every third of it while the worker lives).
    lease: Annotated[Duration, pydantic.Field(ge=3)] = 120.0
    #: With ``--wait``, how often the catalog is asked for new splits.
    poll: Annotated[Duration, pydantic.Field(gt=0)] = 30.0
    #: Where the bytes handed over with a split wait while it is archived (a temporary directory).
    spool: Path | None = None


class WorkerConfig(pydantic.BaseModel):
    model_config = _STRICT

    archive: ArchiveSection
    target: TargetConfig
    source: Path = Path("<memory>")

    @pydantic.model_validator(mode="after")
    def _not_standard_output(self) -> WorkerConfig:
        """A worker archives split after split: each archive under a name of its own (``{session}``),
        where the next worker finds what one that died left; never on standard output, which
        carries the worker's report."""
        target = self.target
        a_file = target.command is None and target.path != "-"
        a_tape = os.path.exists(target.path) and not os.path.isfile(target.path)
        if a_file and not a_tape and "{session}" not in target.path:
            raise ValueError(
                "[target] path needs {session}: a worker writes one archive per split, and the next "
                "worker finds what one that died left by it"
            )
        if self.target.path == "-":
            raise ValueError(
                "[target] path \"-\" would mix every split's archive and the worker's report on standard "
                "output; give a file, a tape or a command"
            )
        return self


def load_worker_config(path: str | os.PathLike[str]) -> WorkerConfig:
    """Read and validate a backup host's configuration; every failure is one ConfigError."""
    data, where = read_toml(path)
    try:
        return WorkerConfig.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(describe_error(error.errors()[0], WorkerConfig, where)) from None
