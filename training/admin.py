"""Admin for the model registry and training runs: staff launch runs, cancel them and activate versions.

A chat model's page reads its evaluation as a table and its training as a loss curve (inline SVG); a run's
page follows its progress live.
"""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, JsonResponse
from django.template.loader import render_to_string
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .admin_intents import intent_report_html
from .models import ModelKind, ModelVersion, TrainingRun
from .pipelines.charts import loss_chart
from .services import runs
from .services.registry import model_version_activate

LOG_TAIL_LINES = 12
# (metrics key, label, how to read it, digits) of a chat model's evaluation, in the order shown.
CHAT_METRICS = [
    (
        "val_perplexity",
        "Validation perplexity",
        "lower is better; the vocabulary size is a model that knows nothing",
        2,
    ),
    ("val_loss", "Validation loss", "mean next-token loss per token, in nats", 4),
    ("distinct_1", "Distinct-1", "unique words over all words of the replies; higher is more varied", 3),
    ("distinct_2", "Distinct-2", "unique word pairs over all pairs of the replies", 3),
    ("repetition_rate", "Repetition rate", "share of a reply's word pairs that repeat within it; lower is better", 3),
    ("coherence", "Coherence", "cosine similarity of reply to question and context (all-MiniLM-L6-v2)", 3),
    ("groundedness", "Groundedness", "share of held-out replies citing only context items and a relevant one", 3),
    ("citing_share", "Replies that cite", "share of held-out replies with at least one citation", 3),
    ("ungrounded_citation_share", "Citations outside the context", "share of replies citing an item not given", 3),
    ("heldout_questions", "Held-out questions", "catalog questions the model answered for the figures above", 0),
    ("mean_reply_words", "Mean reply length", "words per reply", 1),
]


def _pretty_json(value: object) -> str:
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', json.dumps(value, indent=2))


def _number(value: object, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return f"{value:,.{digits}f}"


def chat_evaluation_html(metrics: dict, config: dict) -> str:
    """A chat model's evaluation as a table people read: each figure, its value and what it means."""
    rows = [(label, _number(metrics.get(key), digits), meaning) for key, label, meaning, digits in CHAT_METRICS]
    dataset_hash = config.get("dataset_hash") or metrics.get("dataset_hash") or ""
    rows += [
        ("Preset", config.get("preset") or "—", "model size and training schedule"),
        ("Dataset hash", dataset_hash or "—", "sha256 of the corpus it was trained on"),
    ]
    training = metrics.get("training") or {}
    if isinstance(training.get("parameters"), int):
        rows.append(("Parameters", f"{training['parameters']:,}", "trainable weights"))
    body = format_html_join("", '<tr><th scope="row">{}</th><td class="chat-metric">{}</td><td>{}</td></tr>', rows)
    table = format_html('<table class="chat-evaluation"><tbody>{}</tbody></table>', body)
    samples = metrics.get("samples") or []
    if samples:
        items = format_html_join(
            "", "<li><strong>{}</strong><br>{}</li>", ((s.get("question", ""), s.get("reply", "")) for s in samples)
        )
        table += format_html(
            '<details><summary>Sample replies</summary><ol class="chat-samples">{}</ol></details>', items
        )
    return table


def loss_curve_html(metrics: dict) -> str:
    """The loss curve of `metrics["loss_history"]` as inline SVG, or a dash when there is none."""
    history = metrics.get("loss_history")
    chart = loss_chart(history) if isinstance(history, dict) else None
    if chart is None:
        return "—"
    return render_to_string("admin/training/includes/loss_chart.html", {"chart": chart})


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "status", "training_run", "created_by", "created_at", "activated_at"]
    list_filter = ["kind", "status"]
    list_select_related = ["training_run", "created_by"]
    search_fields = ["name", "artifact_path"]
    date_hierarchy = "created_at"
    autocomplete_fields = ["training_run"]
    readonly_fields = [
        "status",
        "created_by",
        "created_at",
        "activated_at",
        "metrics_pretty",
        "evaluation",
        "loss_curve",
        "intent_report",
    ]
    fields = ["kind", "name", "status", "artifact_path", "training_run", "config", "metrics"]
    actions = ["activate"]

    def get_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> list[str]:
        if obj is None:
            return self.fields
        shown = {ModelKind.CHAT_LM: ["evaluation", "loss_curve"], ModelKind.INTENT: ["intent_report"]}
        return [
            *self.fields[:3],
            *shown.get(obj.kind, []),
            *self.fields[3:],
            "metrics_pretty",
            "created_by",
            "created_at",
            "activated_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> list[str]:
        # The kind of a stored version is fixed: moving an active one would break "one active per kind".
        return [*self.readonly_fields, "kind"] if obj is not None else self.readonly_fields

    @admin.display(description="Metrics (formatted)")
    def metrics_pretty(self, version: ModelVersion) -> str:
        return _pretty_json(version.metrics)

    @admin.display(description="Evaluation")
    def evaluation(self, version: ModelVersion) -> str:
        return chat_evaluation_html(version.metrics or {}, version.config or {})

    @admin.display(description="Loss curve")
    def loss_curve(self, version: ModelVersion) -> str:
        return loss_curve_html(version.metrics or {})

    @admin.display(description="Evaluation")
    def intent_report(self, version: ModelVersion) -> str:
        return intent_report_html(version.metrics or {})

    def save_model(self, request: HttpRequest, obj: ModelVersion, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.activate_modelversion")

    @admin.action(
        description="Activate the selected version (retires the active one of its kind)", permissions=["activate"]
    )
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        ids = list(queryset.values_list("pk", flat=True)[:2])
        if len(ids) != 1:
            self.message_user(request, "Select exactly one model version to activate.", messages.ERROR)
            return
        try:
            version = model_version_activate(version_id=ids[0], user_id=request.user.pk)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return
        self.message_user(request, f"{version.name} is now the active {version.get_kind_display()}.", messages.SUCCESS)


class TrainingRunAddForm(forms.ModelForm):
    class Meta:
        model = TrainingRun
        fields = ["kind", "parameters"]

    def clean(self) -> dict:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind is None:
            return cleaned
        pipeline = runs.PIPELINES.get(kind)
        if pipeline is None:
            raise ValidationError(
                {"kind": f"No training pipeline for this kind yet; available: {sorted(runs.PIPELINES)}."}
            )
        try:
            pipeline.check(cleaned.get("parameters") or {})
        except ValueError as exc:
            raise ValidationError({"parameters": str(exc)}) from None
        return cleaned


def run_progress(run: TrainingRun) -> dict[str, object]:
    """What a run's live panel shows, as its progress endpoint returns it."""
    duration = None
    if run.started_at is not None:
        duration = ((run.finished_at or timezone.now()) - run.started_at).total_seconds()
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "finished": run.is_finished,
        "progress": run.progress,
        "percent": round(100 * run.progress),
        "log_tail": "\n".join(run.log.rstrip("\n").split("\n")[-LOG_TAIL_LINES:]) if run.log else "",
        "duration_s": duration,
    }


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    change_form_template = "admin/training/trainingrun/change_form.html"
    list_display = ["id", "kind", "status", "progress_bar", "created_by", "created_at", "started_at", "finished_at"]
    list_filter = ["kind", "status"]
    list_select_related = ["created_by"]
    search_fields = ["=id", "celery_task_id"]
    date_hierarchy = "created_at"
    actions = ["cancel"]
    # A run is launched with a kind and parameters; everything after is written by the job.
    readonly_fields = [
        "kind",
        "parameters_pretty",
        "status",
        "progress_bar",
        "loss_curve",
        "intent_report",
        "metrics_pretty",
        "log_text",
        "celery_task_id",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    ]

    def get_form(self, request: HttpRequest, obj: TrainingRun | None = None, change: bool = False, **kwargs):
        if obj is None:
            kwargs["form"] = TrainingRunAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: TrainingRun | None = None) -> list[str]:
        if obj is None:
            return ["kind", "parameters"]
        return [f for f in self.readonly_fields if f != "intent_report" or obj.kind == ModelKind.INTENT]

    def get_readonly_fields(self, request: HttpRequest, obj: TrainingRun | None = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def get_urls(self):
        progress = self.admin_site.admin_view(self.progress_view)
        return [path("<path:object_id>/progress/", progress, name="training_trainingrun_progress"), *super().get_urls()]

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        run = self.get_object(request, object_id)
        if run is None:
            raise Http404
        if not self.has_view_or_change_permission(request, run):
            raise PermissionDenied
        return JsonResponse(run_progress(run))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        run = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if run is not None and self.has_view_or_change_permission(request, run):
            extra_context["live"] = run_progress(run)
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: TrainingRun, form, change: bool) -> None:
        if change:  # nothing on a stored run is editable
            return
        run = runs.training_run_launch(kind=obj.kind, parameters=obj.parameters or {}, user_id=request.user.pk)
        # The admin goes on with `obj` (its messages and redirect): make it the launched row.
        obj.pk = run.pk
        obj._state.adding = False
        obj.refresh_from_db()

    @admin.display(description="Progress", ordering="progress")
    def progress_bar(self, run: TrainingRun) -> str:
        percent = round(100 * run.progress)
        bar = '<progress max="100" value="{0}" aria-label="{0}% done">{0}%</progress> {0}%'
        return format_html('<span style="white-space:nowrap">' + bar + "</span>", percent)

    @admin.display(description="Parameters")
    def parameters_pretty(self, run: TrainingRun) -> str:
        return _pretty_json(run.parameters)

    @admin.display(description="Evaluation")
    def intent_report(self, run: TrainingRun) -> str:
        return intent_report_html(run.metrics or {})

    @admin.display(description="Metrics")
    def metrics_pretty(self, run: TrainingRun) -> str:
        return _pretty_json(run.metrics)

    @admin.display(description="Loss curve")
    def loss_curve(self, run: TrainingRun) -> str:
        return loss_curve_html(run.metrics or {})

    @admin.display(description="Log")
    def log_text(self, run: TrainingRun) -> str:
        return format_html(
            '<pre style="margin:0;max-height:30rem;overflow:auto;white-space:pre-wrap">{}</pre>', run.log or "(empty)"
        )

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.cancel_trainingrun")

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        cancelled, refused = [], []
        for run_id in queryset.values_list("pk", flat=True):
            try:
                runs.training_run_cancel(run_id=run_id, user_id=request.user.pk)
            except runs.TrainingRunError as exc:
                refused.append(str(exc))
            else:
                cancelled.append(f"#{run_id}")
        if cancelled:
            self.message_user(request, f"Cancelled runs {', '.join(cancelled)}.", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)
