"""docs/configuration.md's table of each built-in mirror provider (and of ``[retention]``,
``[metrics]``, ``[notify]`` and ``[drill]``) lists every key its options model takes, and
nothing else, with the model's default (it once listed only ``block_size`` for
the directory provider, which takes ``tracking`` and the pre-copy keys too)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated

import pydantic
import pytest

from splitmirror.mirror.base import MirrorProvider
from splitmirror.mirror.block import BlockMirror
from splitmirror.mirror.btrfs_snapshot import BtrfsMirror
from splitmirror.mirror.command import CommandMirror
from splitmirror.mirror.directory import DirectoryMirror
from splitmirror.mirror.reflink import ReflinkMirror
from splitmirror.operations import DrillConfig, MetricsConfig, NotifyConfig, RetentionConfig
from splitmirror.workerconfig import ArchiveSection

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def rows(provider: str) -> dict[str, str]:
    """``key -> default cell`` of the table under ``### The `provider` provider``."""
    return table_under(f"### The `{provider}` provider")


def table_under(heading: str) -> dict[str, str]:
    """``key -> default cell`` of the key table under ``heading``."""
    text = DOC.read_text()
    assert heading in text, f"configuration.md has no {heading!r}"
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    found = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if len(cells) == 4 else None
        if match:
            found[match.group(1)] = cells[2]
    return found


@pytest.mark.parametrize(
    "provider",
    [DirectoryMirror, BlockMirror, BtrfsMirror, ReflinkMirror, CommandMirror],
    ids=lambda p: p.name,
)
def test_every_key_of_a_built_in_provider_is_documented_with_its_default(
    provider: type[MirrorProvider],
) -> None:
    documented_as_modelled(provider.options_model, rows(provider.name))


@pytest.mark.parametrize(
    ("section", "model"),
    [
        ("retention", RetentionConfig),
        ("metrics", MetricsConfig),
        ("notify", NotifyConfig),
        ("drill", DrillConfig),
        ("archive", ArchiveSection),
    ],
)
def test_every_key_of_the_nightly_sections_is_documented_with_its_default(
    section: str, model: type[pydantic.BaseModel]
) -> None:
    documented_as_modelled(model, table_under(f"## `[{section}]`"))


def documented_as_modelled(model: type[pydantic.BaseModel], documented: dict[str, str]) -> None:
    assert sorted(documented) == sorted(model.model_fields), "keys documented != keys taken"
    for key, cell in documented.items():
        field = model.model_fields[key]
        literal = re.fullmatch(r"`([^`]+)`", cell)
        if literal is None:  # a default said in words: required, or computed (None)
            assert field.is_required() or field.default is None, (key, cell)
            continue
        value = tomllib.loads(f"value = {literal.group(1)}")["value"]
        annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        try:
            said = pydantic.TypeAdapter(annotation).validate_python(value)
        except pydantic.ValidationError as error:
            pytest.fail(f"{key}'s documented default {cell} is not valid: {error}")
        assert said == field.default, (key, cell)
