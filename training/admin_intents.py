"""An intent model's evaluation in the admin: the report of `intent_eval`, its pictures, the pipelines compared."""

from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from .pipelines.charts import confusion_matrix_svg, f1_bars_svg, reliability_svg

F1_BARS_LIMIT = 40  # intents shown in the F1 picture, lowest first


def intent_report_html(metrics: dict) -> str:
    """The report stored in an intent run's or version's metrics, rendered; a dash when there is none."""
    report = dict(metrics.get("report") or {})
    if not report:
        return "—"
    svg = {}
    confusion = report.get("confusion") or {}
    if confusion.get("labels"):
        svg["confusion"] = mark_safe(confusion_matrix_svg(confusion["labels"], confusion["matrix"]))  # noqa: S308
    per_intent = report.get("per_intent") or {}
    if per_intent:
        svg["f1"] = mark_safe(f1_bars_svg(per_intent, limit=F1_BARS_LIMIT))  # noqa: S308
    calibration = report.get("calibration") or {}
    if calibration.get("bins"):
        svg["reliability"] = mark_safe(reliability_svg(calibration["bins"]))  # noqa: S308
    report["svg"] = svg
    context = {"report": report, "comparison": metrics.get("comparison"), "kfold": metrics.get("kfold")}
    return render_to_string("admin/training/intent_report.html", context)
