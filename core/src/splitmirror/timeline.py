"""The session as a picture: its phases on one bar across the terminal, the window marked.

::

    time line 3 min 12 s; the window between ╫ drawn ×2,462
         SYNC 2 min 0 s                     ╫    SPLIT         ╫BACKUP 1 min 0 s
    ██▒▒▒███████████████████████████████████╫▒▒█▒███████████▒▒█╫▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒▒██
                                            └─ window 23.4 ms ─┘

Drawn to scale, the window (QUIESCE to UNQUIESCE, while the database is held) is tens of
milliseconds in a session of minutes: under a hundredth of a cell, invisible. So the bar breaks
its scale once, where a DBA looks first: the window gets the width of the bracket that names its
length (``window_ms``) or a fifth of the bar, whichever is more (a third at the most), its own
phases drawn inside it to the window's scale, and break marks ``╫`` at its edges say that what
lies between them is magnified (the first line says how much). Where the window is long enough
to be seen to scale, it is drawn to scale and its edges are ``┃``. Every other phase is to the
session's scale, at least one cell, so none disappears and the order stays readable.

One bar rather than a second, zoomed line under it: the eye finds in one place where the window
fell in the session and which of its phases held the database (usually SPLIT's final pass),
with no second scale to map back. Adjacent phases alternate ``█`` and ``▒`` (they stay apart
without colour, in a log or a mail); a phase is named above its span when the name fits; the
phase that failed is red and ends in ``✗``, where the session stopped; a session that failed
before QUIESCE has no window and no bracket. Every line fits the console's width, so nothing
wraps mid-bar; a console narrower than a cell a phase gets no picture (the table says it all).
"""

from __future__ import annotations

import dataclasses
import math

from rich.console import Console
from rich.markup import escape

from .catalog.base import FAILED, SessionSummary
from .phases import Phase

_FILL = ("█", "▒")  # alternate phases
_STYLE_OUTSIDE, _STYLE_WINDOW, _STYLE_FAILED = "blue", "yellow", "bold red"
_MAGNIFIED, _TO_SCALE = "╫", "┃"


@dataclasses.dataclass(frozen=True)
class _Span:
    name: str
    ms: float
    failed: bool
    in_window: bool


def duration(ms: float) -> str:
    """A phase's or session's length, in the largest unit that keeps it short."""
    if ms < 1000:
        return f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = int(ms // 1000)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _in_window(name: str) -> bool:
    return name in Phase.__members__ and Phase[name].in_window


def _spans(summary: SessionSummary) -> list[_Span]:
    """The recorded phases in order; a failed phase the catalog has no record of (the session was
    killed in it) is added, with no length, so the picture still says where it ended."""
    failed = summary.failed_phase if summary.status == FAILED else None
    spans = [
        _Span(p.name, max(p.duration_ms, 0.0), p.error is not None or p.name == failed, _in_window(p.name))
        for p in summary.phases
    ]
    if failed and not any(s.failed for s in spans):
        spans.append(_Span(failed, 0.0, True, _in_window(failed)))
    return spans


def _share(values: list[float], cells: int) -> list[int]:
    """``cells`` split over ``values``: one each, the rest in proportion (largest remainders)."""
    if not values:
        return []
    rest, total = cells - len(values), sum(values)
    exact = [rest * v / total if total > 0 else rest / len(values) for v in values]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(values)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: rest - sum(counts)]:
        counts[i] += 1
    return [1 + c for c in counts]


def _magnification(interior: int, window_ms: float, outside: int, outside_ms: float) -> str:
    """How many times the window's scale is the rest's: ``×2,117``, or ``magnified`` where the
    window took no measurable time."""
    if window_ms <= 0 or outside_ms <= 0 or outside <= 0:
        return "magnified"
    factor = (interior / window_ms) / (outside / outside_ms)
    return f"×{factor:,.0f}" if factor >= 10 else f"×{factor:.1f}"


class _Canvas:
    """One line of cells, each a character and a style, written out as rich markup."""

    def __init__(self, width: int) -> None:
        self.cells: list[tuple[str, str]] = [(" ", "")] * width

    def put(self, column: int, text: str, style: str = "") -> None:
        for offset, char in enumerate(text):
            if 0 <= column + offset < len(self.cells):
                self.cells[column + offset] = (char, style)

    def markup(self) -> str:
        parts: list[str] = []
        run, style = "", ""
        for char, cell_style in [*self.cells, ("", "\0")]:
            if cell_style != style and run:
                parts.append(f"[{style}]{escape(run)}[/]" if style else escape(run))
                run = ""
            run, style = run + char, cell_style
        return "".join(parts).rstrip()


def timeline(summary: SessionSummary, width: int) -> list[str]:
    """The picture as lines of rich markup, none wider than ``width``; none if it cannot fit."""
    spans = _spans(summary)
    inside = [i for i, s in enumerate(spans) if s.in_window]
    if not spans or width < len(spans) + 2:
        return []
    total_ms = sum(s.ms for s in spans)
    layout, edges, scale = _layout(summary, spans, inside, width)

    labels, bar = _Canvas(width), _Canvas(width)
    column = 0
    for index, (span, cells) in enumerate(zip(spans, layout, strict=True)):
        if inside and index == inside[0]:
            labels.put(column, edges, _STYLE_WINDOW)
            bar.put(column, edges, _STYLE_WINDOW)
            column += 1
        style = _STYLE_FAILED if span.failed else _STYLE_WINDOW if span.in_window else _STYLE_OUTSIDE
        fill = _FILL[index % 2] * cells
        bar.put(column, (fill[:-1] + "✗") if span.failed else fill, style)  # where it stopped
        last = index == len(spans) - 1 or (bool(inside) and index == inside[-1])
        for label in (f"{span.name} {duration(span.ms)}", span.name):
            if len(label) < cells or (last and len(label) == cells):
                labels.put(column, label, style)
                break
        column += cells
        if inside and index == inside[-1]:
            labels.put(column, edges, _STYLE_WINDOW)
            bar.put(column, edges, _STYLE_WINDOW)
            column += 1

    header = f"time line {duration(total_ms)}"
    notes = (f"; the window between {_MAGNIFIED} drawn {scale}", f"; window {scale}") if scale else ()
    header += next((note for note in notes if len(header) + len(note) <= width), "")
    lines = [escape(header[:width]), labels.markup(), bar.markup()]
    if inside:
        start = sum(layout[: inside[0]])
        lines.append(_bracket(summary, start, sum(layout[i] for i in inside) + 2, width))
    return lines


def _layout(
    summary: SessionSummary, spans: list[_Span], inside: list[int], width: int
) -> tuple[list[int], str, str]:
    """Cells per span, the window's edge mark, and how much the window is magnified (``×2,117``;
    empty when it is drawn to scale)."""
    if not inside:
        return _share([s.ms for s in spans], width), "", ""
    available = width - 2  # the window's two edges
    window = [spans[i].ms for i in inside]
    outside = [s.ms for i, s in enumerate(spans) if i not in inside]
    window_ms, total_ms = sum(window), sum(s.ms for s in spans)
    to_scale = available * (window_ms / total_ms if total_ms > 0 else len(window) / len(spans))
    wanted = len(_window_label(summary)) + 2  # room for └─ and ─┘
    interior = max(len(window), min(max(wanted, available // 5), available // 3), round(to_scale))
    interior = available if not outside else min(interior, available - len(outside))
    magnified = interior - to_scale >= 1
    cells_in, cells_out = iter(_share(window, interior)), iter(_share(outside, available - interior))
    layout = [next(cells_in) if i in inside else next(cells_out) for i in range(len(spans))]
    if not magnified:
        return layout, _TO_SCALE, ""
    return layout, _MAGNIFIED, _magnification(interior, window_ms, available - interior, sum(outside))


def _window_label(summary: SessionSummary) -> str:
    """The window's length as measured; in a row without it (written before the column existed),
    its phases' sum; ``-`` for a session killed in the window, whose phases were never recorded."""
    recorded = [p.duration_ms for p in summary.phases if _in_window(p.name)]
    measured = summary.window_ms if summary.window_ms is not None else sum(recorded) if recorded else None
    return f" window {'-' if measured is None else duration(measured)} "


def _bracket(summary: SessionSummary, start: int, span: int, width: int) -> str:
    """``└─ window 23.4 ms ─┘`` under the window's cells; where it is narrower than its words,
    the words go beside it (right, else left), cut to the width as a last resort."""
    text = _window_label(summary)
    line = _Canvas(width)
    if span >= len(text) + 2:
        dashes = span - 2 - len(text)
        line.put(start, "└" + "─" * (dashes // 2) + text + "─" * (dashes - dashes // 2) + "┘", _STYLE_WINDOW)
        return line.markup()
    line.put(start, "└" + "─" * (span - 2) + "┘", _STYLE_WINDOW)
    words = text.strip()
    if start + span + 1 + len(words) <= width or len(words) + 1 > start:
        line.put(start + span + 1, words, _STYLE_WINDOW)  # past the edge is cut by put
    else:
        line.put(start - 1 - len(words), words, _STYLE_WINDOW)
    return line.markup()


def print_timeline(console: Console, summary: SessionSummary) -> None:
    """The picture, across the console's width (200 columns when the output is not a terminal)."""
    for line in timeline(summary, console.width):
        console.print(line, no_wrap=True, overflow="crop", highlight=False, soft_wrap=False)
