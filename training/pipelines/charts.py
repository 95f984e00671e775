"""Geometry of the loss curve the admin draws as inline SVG: training and validation loss by step.

A chat model trains in phases (pre-training, then supervised fine-tuning); their steps are laid end to end
on one axis, with a dashed line where a phase begins. Plain Python: the template draws what this computes.
"""

import math
from dataclasses import dataclass, field

LEFT, RIGHT, TOP, BOTTOM = 44.0, 10.0, 12.0, 24.0
TRAIN_COLOR = "#417690"
VALIDATION_COLOR = "#c62828"

# {"pretrain": {"train": [[step, loss], ...], "validation": [[step, loss], ...]}, "sft": {...}}
LossHistory = dict[str, dict[str, list[list[float]]]]


@dataclass(frozen=True)
class Line:
    label: str
    color: str
    points: str  # "x,y x,y …" for <polyline points>
    dots: list[tuple[float, float, str]] = field(default_factory=list)  # (x, y, tooltip) where markers go


@dataclass(frozen=True)
class Marker:
    x: float
    label: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True)
class LineChart:
    title: str
    width: float
    height: float
    lines: list[Line]
    markers: list[Marker]
    labels: list[Label]
    left: float = LEFT
    right: float = 0.0
    top: float = TOP
    baseline: float = 0.0


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def loss_chart(
    history: LossHistory, *, title: str = "Loss by step", width: int = 640, height: int = 200
) -> LineChart | None:
    """The chart of `history`'s phases laid end to end, or None when it holds no finite point."""
    offset = 0.0
    series: dict[str, list[tuple[float, float, str]]] = {"train": [], "validation": []}
    starts: list[tuple[float, str]] = []
    for phase, curves in history.items():
        points = {name: [(s, v) for s, v in curves.get(name, []) if _finite(s) and _finite(v)] for name in series}
        if not points["train"] and not points["validation"]:
            continue
        starts.append((offset, phase))
        last = 0.0
        for name, rows in points.items():
            for step, loss in rows:
                series[name].append((offset + step, loss, f"{phase} step {int(step)}: {name} loss {loss:.3f}"))
                last = max(last, step)
        offset += last
    everything = series["train"] + series["validation"]
    if not everything:
        return None
    x_max = max(max(x for x, _, _ in everything), 1.0)
    y_low = min(y for _, y, _ in everything)
    y_high = max(y for _, y, _ in everything)
    y_low, y_high = (y_low - 0.5, y_high + 0.5) if y_high - y_low < 1e-9 else (y_low, y_high)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    baseline = TOP + plot_h

    def xy(x: float, y: float) -> tuple[float, float]:
        return round(LEFT + plot_w * x / x_max, 2), round(baseline - plot_h * (y - y_low) / (y_high - y_low), 2)

    lines = []
    for name, color in (("train", TRAIN_COLOR), ("validation", VALIDATION_COLOR)):
        rows = sorted(series[name], key=lambda row: row[0])  # stable: a phase boundary keeps its order
        if not rows:
            continue
        placed = [(*xy(x, y), tip) for x, y, tip in rows]
        lines.append(
            Line(
                label=f"{name} loss",
                color=color,
                points=" ".join(f"{x},{y}" for x, y, _ in placed),
                dots=placed if name == "validation" else [],
            )
        )
    markers = [Marker(xy(x, y_low)[0], phase) for x, phase in starts if x > 0]
    labels = [
        Label(LEFT - 6, baseline + 4, f"{y_low:.2f}", "end"),
        Label(LEFT - 6, TOP + 4, f"{y_high:.2f}", "end"),
        Label(LEFT, height - 6, "0", "start"),
        Label(width - RIGHT, height - 6, f"step {int(x_max)}", "end"),
    ]
    return LineChart(
        title=title,
        width=width,
        height=height,
        lines=lines,
        markers=markers,
        labels=labels,
        right=width - RIGHT,
        baseline=baseline,
    )
