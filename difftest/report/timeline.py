"""A :class:`~difftest.verdict.timeline.Timeline` laid out as SVG shapes that the Jinja template draws.

The template escapes every label; this module only places rectangles, lines and text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from difftest.verdict.timeline import Timeline

# --- layout: a Timeline as SVG shapes -------------------------------------------------------

GUTTER = 78  # label column
PLOT_W = 900
KEY_ROW_H = 8
LEVEL_H = 9
MARK_H = 14
BLOCK_GAP = 14
AXIS_H = 20

RIGHTS_CLASS = {0: "k-rw", 1: "k-ad", 2: "k-wd", 3: "k-ad"}
RIGHTS_TEXT = {0: "read/write", 1: "access disabled (AD)", 2: "write disabled (WD)", 3: "access disabled (AD+WD)"}


@dataclass(frozen=True)
class Shape:
    """One SVG element: ``tag`` is rect, line, text or path; ``title`` becomes a tooltip."""

    tag: str
    cls: str
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    text: str = ""
    title: str = ""
    d: str = ""


@dataclass
class SvgTimeline:
    width: int
    height: int
    shapes: list[Shape]


def rights(value: int, key: int) -> int:
    """The AD/WD pair of ``key`` in a PKRS/PKRU value (bit 0 AD, bit 1 WD)."""
    return (value >> (2 * key)) & 3


def _segments(series: list[tuple[int, int | None]], rows: int) -> list[tuple[int, int, int | None]]:
    return [(i, series[n + 1][0] if n + 1 < len(series) else rows, v) for n, (i, v) in enumerate(series)]


def layout(tl: Timeline) -> SvgTimeline:
    """Place the tracks of ``tl``: per vCPU a level band, key rows of PKRS and PKRU, a marker lane."""
    shapes: list[Shape] = []
    rows = tl.rows

    def x(i: float) -> float:
        return round(GUTTER + PLOT_W * i / rows, 2)

    def span(a: int, b: int) -> tuple[float, float]:
        return x(a), max(round(x(b) - x(a), 2), 0.8)

    y = 4.0
    div_blocks: list[tuple[float, float]] = []
    for vcpu in sorted(tl.vcpus):
        track = tl.vcpus[vcpu]
        top = y
        shapes.append(Shape("text", "vlabel", 2, y + 9, text=f"vCPU{vcpu}"))
        y += 13
        # nesting level band
        shapes.append(Shape("text", "rlabel", GUTTER - 4, y + LEVEL_H - 1, text="level"))
        for a, b, lv in _segments(track.level, rows):  # type: ignore[arg-type]
            x0, w = span(a, b)
            shapes.append(Shape("rect", f"lv-{lv}", x0, y, w, LEVEL_H,
                                title=f"vCPU{vcpu} in {str(lv).upper()} from event {a} to {b - 1}"))
        y += LEVEL_H + 3
        for reg, series in (("PKRS", track.pkrs), ("PKRU", track.pkru)):
            segs = _segments(series, rows)
            if all(v is None for _, _, v in segs):
                shapes.append(Shape("text", "rlabel", GUTTER - 4, y + KEY_ROW_H - 1, text=reg))
                shapes.append(Shape("rect", "k-na", GUTTER, y, PLOT_W, KEY_ROW_H, title=f"{reg}: not modelled by this policy"))
                y += KEY_ROW_H + 3
                continue
            keys = [k for k in range(16) if any(v is not None and rights(v, k) for _, _, v in segs)]
            if not keys:
                shapes.append(Shape("text", "rlabel", GUTTER - 4, y + KEY_ROW_H - 1, text=f"{reg} all"))
                shapes.append(Shape("rect", "k-rw", GUTTER, y, PLOT_W, KEY_ROW_H,
                                    title=f"{reg} = 0 throughout: every key read/write"))
                y += KEY_ROW_H + 3
                continue
            for k in keys:
                shapes.append(Shape("text", "rlabel", GUTTER - 4, y + KEY_ROW_H - 1, text=f"{reg} k{k}"))
                start, cur = segs[0][0], _rk(segs[0][2], k)
                value_at = segs[0][2]
                for a, _b, v in [*segs[1:], (rows, rows, None)]:
                    r = _rk(v, k) if a < rows else -2
                    if r == cur:
                        continue
                    x0, w = span(start, a)
                    cls = "k-na" if cur == -1 else RIGHTS_CLASS[cur]
                    text = "not modelled" if cur == -1 else RIGHTS_TEXT[cur]
                    val = f" ({reg}={value_at:#x})" if value_at is not None else ""
                    shapes.append(Shape("rect", cls, x0, y, w, KEY_ROW_H,
                                        title=f"vCPU{vcpu} {reg} key {k}: {text}, events {start}-{a - 1}{val}"))
                    start, cur, value_at = a, r, v
                y += KEY_ROW_H + 1
            y += 2
        # markers
        shapes.append(Shape("text", "rlabel", GUTTER - 4, y + MARK_H - 3, text="events"))
        shapes.append(Shape("rect", "lane", GUTTER, y, PLOT_W, MARK_H))
        for kind in ("ioctl", "exit", "fault"):
            for m in track.markers.get(kind, []):
                more = f" (+{m.count - 1} more here)" if m.count > 1 else ""
                cx = x(m.index)
                if kind == "ioctl":
                    shapes.append(Shape("rect", "m-ioctl", cx - 1, y + 10, 2.5, 3, title=m.label + more))
                elif kind == "exit":
                    shapes.append(Shape("path", "m-exit", d=f"M{cx - 3},{y + 1}L{cx + 3},{y + 1}L{cx},{y + 7}Z",
                                        title=m.label + more))
                else:
                    shapes.append(Shape("rect", "m-fault", cx - 1, y + 2, 2.5, 10, title=m.label + more))
        y += MARK_H
        for m in track.markers.get("diverge", []):
            div_blocks.append((x(m.index), 0))
            more = f" (+{m.count - 1} more here)" if m.count > 1 else ""
            shapes.append(Shape("rect", "m-div", x(m.index) - 2, top, 4.5, y - top, title="DIVERGENCE " + m.label + more))
        y += BLOCK_GAP
    # axis
    shapes.append(Shape("line", "axis", GUTTER, y, GUTTER + PLOT_W, y))
    for t in _ticks(rows):
        shapes.append(Shape("line", "axis", x(t), y, x(t), y + 4))
        shapes.append(Shape("text", "tick", x(t), y + 14, text=str(t)))
    shapes.append(Shape("text", "rlabel", GUTTER - 4, y + 14, text="event"))
    if tl.first_divergence is not None:
        fx = x(tl.first_divergence)
        shapes.append(Shape("path", "m-first", d=f"M{fx - 5},{y}L{fx + 5},{y}L{fx},{y - 7}Z",
                            title=f"first divergence: event {tl.first_divergence}"))
    return SvgTimeline(GUTTER + PLOT_W + 12, int(y + AXIS_H), shapes)


def _rk(v: int | None, k: int) -> int:
    return -1 if v is None else rights(v, k)


def _ticks(rows: int) -> list[int]:
    """About six round tick positions in 0..rows."""
    if rows <= 1:
        return [0]
    raw = rows / 6
    mag = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return list(range(0, rows, max(1, int(step))))
