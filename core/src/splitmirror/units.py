"""Human units in configuration: durations such as ``"30s"``, sizes such as ``"256KiB"``, rates
such as ``"200MiB/s"``."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``"250ms"``, ``"30s"``, ``"2m"``, ``"1h"``, ``"7d"``, ``"4w"`` or a bare number
    of seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as "30s" or "500ms"')
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f'{value!r} is not a duration; write it like "30s", "500ms", "2m" or "7d"')
        seconds = float(match.group(1)) * _DURATION_FACTORS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be a finite number greater than zero")
    return seconds


def parse_size(value: str | int) -> int:
    """Bytes from ``"256KiB"``, ``"1MB"``, ``"512B"`` or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as "256KiB"')
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f'{value!r} is not a size; write it like "256KiB", "1MiB" or "65536"')
        size = int(match.group(1)) * _SIZE_FACTORS[(match.group(2) or "B").lower()]
    if size <= 0:
        raise ValueError("a size must be greater than zero")
    return size


def parse_rate(value: str | int) -> int:
    """Bytes per second from ``"200MiB/s"``, ``"200MiB"`` or a number of bytes."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('expected a rate such as "200MiB/s"')
    if isinstance(value, str):
        text = value.strip().removesuffix("/s")
        match = _SIZE.match(text.removeprefix("-"))
        if not match:
            raise ValueError(f'{value!r} is not a rate; write it like "200MiB/s" or 1048576')
        rate = int(match.group(1)) * _SIZE_FACTORS[(match.group(2) or "B").lower()]
        rate = -rate if text.startswith("-") else rate
    else:
        rate = value
    if rate <= 0:
        raise ValueError("a rate must be more than zero bytes per second; leave the key out for no limit")
    return rate


def format_size(size: float) -> str:
    """``1536`` → ``"1.5 KiB"``: for summaries, not for config round trips."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
