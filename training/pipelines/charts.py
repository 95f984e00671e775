"""Geometry of the loss curve the admin draws as inline SVG: training and validation loss by step.

A chat model trains in phases (pre-training, then supervised fine-tuning); their steps are laid end to end
on one axis, with a dashed line where a phase begins. Plain Python: the template draws what this computes.
"""

import html
import math
import re
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


# Intent evaluation pictures: finished SVG strings (a heatmap's hundreds of cells are easier built here than
# in a template). Every label is escaped: intent names are typed by editors.
CORRECT_COLOR = TRAIN_COLOR
ERROR_COLOR = VALIDATION_COLOR
OTHER_LABEL = "(other)"
LABEL_CHARS = 28  # longer labels are cut, in full in the tooltip
CHAR_W = 6.0  # width of a character at font-size 10, near enough for margins
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _esc(text: object) -> str:
    return html.escape(_NOT_XML.sub("", str(text)), quote=True)


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}" width="{width:g}" '
        f'style="max-width:100%;height:auto;font-size:10px;font-family:sans-serif" role="img" '
        f'aria-label="{_esc(title)}"><title>{_esc(title)}</title>' + "".join(body) + "</svg>"
    )


def _confusion_fold(labels: list[str], matrix: list[list[int]], max_labels: int) -> tuple[list[str], list[list[int]]]:
    """The `max_labels` labels with the most off-diagonal mass (in their order) and an OTHER_LABEL summing
    the rest, or everything unchanged when it fits."""
    grid = [[int(c) for c in row] for row in matrix]
    n = len(labels)
    if n <= max_labels:
        return list(labels), grid
    mass = [sum(grid[i]) + sum(row[i] for row in grid) - 2 * grid[i][i] for i in range(n)]
    kept = sorted(sorted(range(n), key=lambda i: (-mass[i], i))[:max_labels])
    slot = {i: at for at, i in enumerate(kept)}
    size = len(kept) + 1
    folded = [[0] * size for _ in range(size)]
    for i in range(n):
        for j in range(n):
            folded[slot.get(i, size - 1)][slot.get(j, size - 1)] += grid[i][j]
    return [labels[i] for i in kept] + [OTHER_LABEL], folded


def confusion_matrix_svg(labels: list[str], matrix: list[list[int]], *, max_labels: int = 30, title: str = "") -> str:
    """A confusion-matrix heatmap: rows true labels, columns predicted, each cell shaded by its share of
    its row (the diagonal in blue, errors in red), with its count written when cells are big enough and in
    a tooltip always. With more than `max_labels` labels, those with the most confusion are shown and the
    rest summed in an "(other)" row and column, as the title says."""
    shown, grid = _confusion_fold(list(labels), matrix, max_labels)
    caption = title or "Confusion matrix"
    if len(labels) > max_labels:
        caption += f" ({max_labels} most confused of {len(labels)} labels; the rest as {OTHER_LABEL})"
    if not shown:
        return _svg(320, 40, caption, [f'<text x="8" y="24" fill="#666">{_esc(caption)}: no predictions</text>'])
    n = len(shown)
    cell = max(10.0, min(28.0, 560.0 / n))
    margin = CHAR_W * max(len(_short(label)) for label in shown) + 24
    left, top = margin, margin + 18
    width, height = max(left + cell * n + 10, CHAR_W * len(caption) + 8), top + cell * n + 24
    body = [
        f'<text x="{left + cell * n / 2:.1f}" y="12" text-anchor="middle" font-weight="bold">predicted</text>',
        f'<text x="12" y="{top + cell * n / 2:.1f}" text-anchor="middle" font-weight="bold" '
        f'transform="rotate(-90 12 {top + cell * n / 2:.1f})">true</text>',
    ]
    body.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{cell * n:.1f}" height="{cell * n:.1f}" fill="#f8f8f8"/>')
    for i, label in enumerate(shown):
        y = top + cell * i + cell / 2 + 3.5
        x = left + cell * i + cell / 2 + 3.5
        body.append(f'<text x="{left - 4:.1f}" y="{y:.1f}" text-anchor="end">{_esc(_short(label))}</text>')
        body.append(
            f'<text x="{x:.1f}" y="{top - 4:.1f}" text-anchor="start" transform="rotate(-90 {x:.1f} {top - 4:.1f})">'
            f"{_esc(_short(label))}</text>"
        )
    for i, row in enumerate(grid):
        total = sum(row)
        for j, count in enumerate(row):
            if not count:
                continue  # an empty cell is the background: a 150-label matrix is mostly empty
            share = count / total if total else 0.0
            color = CORRECT_COLOR if i == j else ERROR_COLOR
            x, y = left + cell * j, top + cell * i
            tip = f"{shown[i]} → {shown[j]}: {count} ({share:.0%} of {shown[i]})"
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" fill="{color}" '
                f'fill-opacity="{0.08 + 0.92 * share:.3f}" stroke="#fff">'
                f"<title>{_esc(tip)}</title></rect>"
            )
            if cell >= 16 and len(str(count)) * CHAR_W <= cell:
                ink = "#fff" if share > 0.55 else "#333"
                body.append(
                    f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 3.5:.1f}" text-anchor="middle" '
                    f'fill="{ink}" pointer-events="none">{count}</text>'
                )
    body.append(f'<text x="4" y="{height - 6:.1f}" fill="#666">{_esc(caption)}</text>')
    return _svg(width, height, caption, body)


def reliability_svg(bins: list[dict], *, title: str = "Reliability", size: int = 280) -> str:
    """A calibration diagram of `bins` (calibration_summary's): per confidence bin a bar as high as its
    accuracy, a red tick at its mean confidence, and the diagonal a calibrated model would follow."""
    left, top, bottom = 34.0, 10.0, 28.0
    plot = float(size) - left - 10
    base = top + plot

    def y(value: float) -> float:
        return base - plot * value

    body = [
        f'<rect x="{left}" y="{top}" width="{plot}" height="{plot}" fill="none" stroke="#666"/>',
        f'<line x1="{left}" y1="{base}" x2="{left + plot}" y2="{top}" stroke="#999" stroke-dasharray="4 3"/>',
    ]
    for bin_ in bins:
        lower, upper = float(bin_["lower"]), float(bin_["upper"])
        if not bin_.get("count") or bin_.get("accuracy") is None:
            continue
        x, w = left + plot * lower, plot * (upper - lower)
        acc, conf = float(bin_["accuracy"]), float(bin_["confidence"])
        tip = f"confidence {lower:.1f} to {upper:.1f}: {bin_['count']} predictions, accuracy {acc:.2f}, mean {conf:.2f}"
        body.append(
            f'<rect x="{x + 1:.1f}" y="{y(acc):.1f}" width="{w - 2:.1f}" height="{base - y(acc):.1f}" '
            f'fill="{CORRECT_COLOR}" fill-opacity="0.8"><title>{_esc(tip)}</title></rect>'
        )
        body.append(
            f'<line x1="{x + 1:.1f}" y1="{y(conf):.1f}" x2="{x + w - 1:.1f}" y2="{y(conf):.1f}" '
            f'stroke="{ERROR_COLOR}" stroke-width="2"/>'
        )
    for value in (0.0, 0.5, 1.0):
        body.append(f'<text x="{left - 4}" y="{y(value) + 3.5:.1f}" text-anchor="end" fill="#666">{value:g}</text>')
        body.append(
            f'<text x="{left + plot * value:.1f}" y="{base + 12:.1f}" text-anchor="middle" fill="#666">{value:g}</text>'
        )
    body.append(
        f'<text x="{left + plot / 2:.1f}" y="{base + bottom - 4:.1f}" text-anchor="middle">'
        "confidence (bar: accuracy, red: mean)</text>"
    )
    return _svg(size, base + bottom, title, body)


def f1_bars_svg(
    per_intent: dict,
    *,
    compare: dict | None = None,
    names: tuple[str, str] = ("this model", "compared"),
    limit: int | None = None,
    title: str = "F1 by intent",
) -> str:
    """Horizontal F1 bars per intent (evaluation_report's per_intent), lowest first; with `compare` (another
    pipeline's per_intent) a second bar under each, and a legend with `names`. `limit` keeps the lowest."""
    ordered = sorted(per_intent, key=lambda label: (float(per_intent[label].get("f1") or 0.0), label))
    caption = title if limit is None or limit >= len(ordered) else f"{title} (lowest {limit} of {len(ordered)})"
    ordered = ordered[:limit] if limit is not None else ordered
    series = [(names[0], per_intent, CORRECT_COLOR)] + ([(names[1], compare, ERROR_COLOR)] if compare else [])
    bar, gap = 9.0, 5.0
    row = bar * len(series) + gap
    left = CHAR_W * max([len(_short(label)) for label in ordered] + [4]) + 10
    plot, top = 300.0, 22.0
    width, height = left + plot + 40, top + row * len(ordered) + 20
    body = []
    x = left
    for name, _, color in series:
        body.append(f'<rect x="{x:.1f}" y="4" width="10" height="8" fill="{color}"/>')
        body.append(f'<text x="{x + 14:.1f}" y="12">{_esc(name)}</text>')
        x += 24 + CHAR_W * len(name)
    for i, label in enumerate(ordered):
        y0 = top + row * i
        body.append(
            f'<text x="{left - 4:.1f}" y="{y0 + bar * len(series) / 2 + 3.5:.1f}" text-anchor="end">'
            f"{_esc(_short(label))}</text>"
        )
        for s, (name, figures, color) in enumerate(series):
            f1 = (figures.get(label) or {}).get("f1")
            y = y0 + bar * s
            if f1 is None:
                body.append(f'<text x="{left + 2:.1f}" y="{y + bar - 1:.1f}" fill="#999">n/a</text>')
                continue
            tip = f"{label} ({name}): F1 {float(f1):.3f}"
            body.append(
                f'<rect x="{left:.1f}" y="{y:.1f}" width="{plot * float(f1):.1f}" height="{bar - 1:.1f}" '
                f'fill="{color}"><title>{_esc(tip)}</title></rect>'
            )
            body.append(f'<text x="{left + plot * float(f1) + 3:.1f}" y="{y + bar - 1:.1f}">{float(f1):.2f}</text>')
    body.append(f'<line x1="{left:.1f}" y1="{top - 2}" x2="{left:.1f}" y2="{height - 16:.1f}" stroke="#666"/>')
    body.append(f'<text x="{left:.1f}" y="{height - 4:.1f}" fill="#666">0</text>')
    body.append(f'<text x="{left + plot:.1f}" y="{height - 4:.1f}" text-anchor="end" fill="#666">1</text>')
    return _svg(width, height, caption, body)
