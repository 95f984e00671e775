"""Geometry of the dashboard's bar charts, drawn by the template as inline SVG (no JavaScript, no CDN)."""

import datetime as dt
from dataclasses import dataclass, field

LEFT, RIGHT, TOP, BOTTOM = 40.0, 8.0, 12.0, 22.0


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: list[int]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True)
class BarChart:
    title: str
    width: float
    height: float
    series: list[Series]
    bars: list[Bar] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    # The plot's frame: baseline y, left and right x, top y (the maximum's gridline).
    baseline: float = 0.0
    left: float = LEFT
    right: float = 0.0
    top: float = TOP


def _nice_max(value: int) -> int:
    """The smallest of 1, 2 or 5 times a power of ten at or above `value`, so the axis reads in round numbers."""
    if value <= 1:
        return 1
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def bar_chart(
    *, title: str, days: list[dt.date], series: list[Series], width: int = 640, height: int = 170
) -> BarChart:
    """Stacked bars, one per day: each series is stacked on the ones before it."""
    plot_width = width - LEFT - RIGHT
    plot_height = height - TOP - BOTTOM
    baseline = TOP + plot_height
    totals = [sum(s.values[i] for s in series) for i in range(len(days))]
    top_value = _nice_max(max(totals, default=0))
    slot = plot_width / max(len(days), 1)
    bar_width = round(slot * 0.75, 2)
    bars = []
    for i, day in enumerate(days):
        x = round(LEFT + i * slot + (slot - bar_width) / 2, 2)
        stacked = 0
        for s in series:
            value = s.values[i]
            if value:
                bar_height = plot_height * value / top_value
                y = baseline - plot_height * stacked / top_value - bar_height
                bars.append(
                    Bar(x, round(y, 2), bar_width, round(bar_height, 2), s.color, f"{day:%b %-d}: {value} {s.label}")
                )
            stacked += value
    labels = [
        Label(LEFT - 6, baseline + 4, "0", "end"),
        Label(LEFT - 6, TOP + 4, str(top_value), "end"),
    ]
    if days:
        for i in sorted({0, len(days) // 2, len(days) - 1}):
            labels.append(Label(round(LEFT + (i + 0.5) * slot, 2), height - 6, f"{days[i]:%b %-d}"))
    return BarChart(
        title=title,
        width=width,
        height=height,
        series=series,
        bars=bars,
        labels=labels,
        baseline=baseline,
        right=width - RIGHT,
    )
