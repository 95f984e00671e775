"""Admin for the model registry and training runs: staff launch runs, cancel them and activate versions."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from .models import ModelVersion, TrainingRun
from .services import runs
from .services.registry import model_version_activate


def _pretty_json(value: object) -> str:
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', json.dumps(value, indent=2))


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "status", "training_run", "created_by", "created_at", "activated_at"]
    list_filter = ["kind", "status"]
    list_select_related = ["training_run", "created_by"]
    search_fields = ["name", "artifact_path"]
    date_hierarchy = "created_at"
    autocomplete_fields = ["training_run"]
    readonly_fields = ["status", "created_by", "created_at", "activated_at", "metrics_pretty"]
    fields = ["kind", "name", "status", "artifact_path", "training_run", "config", "metrics"]
    actions = ["activate"]

    def get_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> list[str]:
        if obj is None:
            return self.fields
        return [*self.fields, "metrics_pretty", "created_by", "created_at", "activated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> list[str]:
        # The kind of a stored version is fixed: moving an active one would break "one active per kind".
        return [*self.readonly_fields, "kind"] if obj is not None else self.readonly_fields

    @admin.display(description="Metrics (formatted)")
    def metrics_pretty(self, version: ModelVersion) -> str:
        return _pretty_json(version.metrics)

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


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
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
        return ["kind", "parameters"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: TrainingRun | None = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

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

    @admin.display(description="Metrics")
    def metrics_pretty(self, run: TrainingRun) -> str:
        return _pretty_json(run.metrics)

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
