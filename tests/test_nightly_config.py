"""Bad keys in the nightly sections ([retention], [metrics], [notify], [drill]): one sentence
each, naming the section and the key, as every configuration error is."""

from __future__ import annotations

import pytest

from splitmirror.config import parse_config
from splitmirror.errors import ConfigError

BASE = {
    "session": {"name": "orders"},
    "database": {"url": "sqlite:///srv/orders.db"},
    "mirror": {"primary": "/srv", "mirror": "/backup/mirror"},
    "target": {"path": "/backup/orders-{session}.tar"},
}

CASES = [
    ("retention", {}, "[retention] has no rule, so it would keep only the newest archive"),
    ("retention", {"keep_last": 0}, "[retention] keep_last: 0 is not a count"),
    ("retention", {"keep_daily": "seven"}, "[retention] keep_daily: 'seven' is not a count"),
    ("retention", {"keep_within": "a week"}, "[retention] keep_within: 'a week' is not a duration"),
    ("retention", {"keep_yearly": 3}, "[retention] has no key 'keep_yearly'; did you mean 'keep_daily'?"),
    ("metrics", {}, "[metrics] needs the key 'textfile'"),
    (
        "metrics",
        {"textfile": "/var/lib/node/splitmirror.txt"},
        "[metrics] textfile: textfile '/var/lib/node/splitmirror.txt' must end in .prom",
    ),
    (
        "metrics",
        {"textfile": "/var/lib/node/{session}.prom"},
        "[metrics] textfile: textfile uses {session}, which is not known; use {name}",
    ),
    ("metrics", {"textfile": "/x.prom", "port": 9100}, "[metrics] has no key 'port'"),
    ("notify", {}, "[notify] needs the key 'command'"),
    ("notify", {"command": []}, "[notify] command: the list is empty; give the program and its arguments"),
    (
        "notify",
        {"command": "mail -s backup dba"},
        "[notify] command: 'mail -s backup dba' is one string; write",
    ),
    (
        "notify",
        {"command": ["mail"], "on": ["SUCCESS"]},
        "[notify] on[0]: input should be 'DONE' or 'FAILED'",
    ),
    (
        "notify",
        {"command": ["mail"], "timeout": "2h"},
        "[notify] timeout: input should be less than or equal to 3600",
    ),
    ("drill", {"every": 0}, "[drill] every: 0 is not a count"),
    ("drill", {"timeout": "2d"}, "[drill] timeout: input should be less than or equal to 86400"),
    ("drill", {"querry": "SELECT 1"}, "[drill] has no key 'querry'; did you mean 'query'?"),
]


@pytest.mark.parametrize(
    ("target", "sentence"),
    [
        ({"path": "-"}, '[drill] every: needs an archive splitmirror can read back, and [target] path = "-"'),
        ({"command": ["zstd", "-o", "/b/x.zst"]}, "[drill] every: needs [target] read_command to read"),
    ],
)
def test_drills_after_backups_need_an_archive_they_can_read(target: dict[str, object], sentence: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**BASE, "target": target, "drill": {"every": 3}}, "orders.toml")
    assert str(raised.value).startswith(f"orders.toml: {sentence}"), str(raised.value)


@pytest.mark.parametrize(("section", "value", "sentence"), CASES)
def test_bad_keys_are_one_sentence(section: str, value: dict[str, object], sentence: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**BASE, section: value}, "orders.toml")
    assert str(raised.value).startswith(f"orders.toml: {sentence}"), str(raised.value)
