"""Admin for the intents editors own: intents with their examples and keyword rules, the "Import examples"
page (CSV, CLINC150 JSON, Rasa NLU YAML) and export actions in the same formats."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from training.models import ModelKind
from training.pipelines.intent_data import EXTENSION_FORMATS, format_for_filename
from training.services.runs import TrainingRunError, training_run_launch

from .models import Intent, IntentExample, KeywordRule
from .understanding.defaults import DEFAULT_INTENTS
from .understanding.examples import (
    IntentImportError,
    TooLittleDataError,
    intent_examples_export,
    intent_examples_import,
    intent_training_set,
)
from .understanding.rules import RuleSet, rule_pattern_check

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# An intent with more examples than this lists them on the examples page instead of inline: a form of
# hundreds of rows would pass Django's DATA_UPLOAD_MAX_NUMBER_FIELDS (1000) and could not be saved.
MAX_INLINE_EXAMPLES = 100
FORMAT_CHOICES = [("csv", "CSV (text,label)"), ("clinc", "CLINC150 JSON"), ("rasa", "Rasa NLU YAML")]
# Export format → (file extension, content type).
DOWNLOADS = {
    "csv": ("csv", "text/csv; charset=utf-8"),
    "clinc": ("json", "application/json; charset=utf-8"),
    "rasa": ("yml", "application/yaml; charset=utf-8"),
}


# --- Keyword rules --------------------------------------------------------------------------------------


class KeywordRuleForm(forms.ModelForm):
    """A rule whose pattern `rule_pattern_check` accepts; optionally tried on a sample message first."""

    sample = forms.CharField(
        required=False,
        max_length=1000,
        label="Test message",
        help_text="Optional: a message the rule must match; the rule is saved only if it does.",
    )

    class Meta:
        model = KeywordRule
        fields = ["intent", "kind", "pattern", "case_sensitive", "priority", "enabled"]

    def clean(self) -> dict:
        cleaned = super().clean()
        kind, pattern = cleaned.get("kind"), cleaned.get("pattern")
        if kind is None or pattern is None:
            return cleaned
        try:
            rule_pattern_check(kind=kind, pattern=pattern)
        except ValidationError as exc:
            self.add_error("pattern", exc)
            return cleaned
        sample = cleaned.get("sample")
        if sample:
            rule = KeywordRule(
                id=self.instance.pk,
                intent=Intent(name="sample"),
                kind=kind,
                pattern=pattern,
                case_sensitive=cleaned.get("case_sensitive", False),
            )
            if RuleSet.from_rules([rule]).match(sample) is None:
                self.add_error("sample", "The rule does not match this message.")
        return cleaned


class KeywordRuleInline(admin.TabularInline):
    model = KeywordRule
    form = KeywordRuleForm
    fields = ["kind", "pattern", "case_sensitive", "priority", "enabled"]
    extra = 0


@admin.register(KeywordRule)
class KeywordRuleAdmin(admin.ModelAdmin):
    form = KeywordRuleForm
    list_display = ["pattern", "kind", "intent", "priority", "enabled", "case_sensitive", "updated_at"]
    list_filter = ["kind", "enabled", "intent"]
    list_select_related = ["intent"]
    search_fields = ["pattern", "intent__name"]
    autocomplete_fields = ["intent"]
    readonly_fields = ["created_at", "updated_at"]
    fields = ["intent", "kind", "pattern", "case_sensitive", "priority", "enabled", "sample", *readonly_fields]


# --- Examples -------------------------------------------------------------------------------------------


class IntentExampleInline(admin.TabularInline):
    model = IntentExample
    fields = ["text", "source", "created_at"]
    readonly_fields = ["created_at"]
    extra = 1


@admin.register(IntentExample)
class IntentExampleAdmin(admin.ModelAdmin):
    list_display = ["text", "intent", "source", "created_at"]
    list_filter = ["source", "intent"]
    list_select_related = ["intent"]
    search_fields = ["text", "intent__name"]
    autocomplete_fields = ["intent"]
    readonly_fields = ["created_at"]
    fields = ["intent", "text", "source", "created_at"]


# --- Intents, import and export -------------------------------------------------------------------------


class IntentImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with text and label columns, CLINC150 JSON, or Rasa NLU YAML.")
    format = forms.ChoiceField(
        choices=[("", "Guess from the file name"), *FORMAT_CHOICES],
        required=False,
        help_text=".csv, .json and .yml/.yaml are recognised; choose here for any other name.",
    )
    create_intents = forms.BooleanField(
        required=False, initial=True, help_text="Create intents the file names that do not exist yet."
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is None:
            return cleaned
        if not cleaned.get("format"):
            cleaned["format"] = format_for_filename(upload.name)
            if cleaned["format"] is None:
                known = ", ".join(sorted(EXTENSION_FORMATS))
                self.add_error("format", f"Cannot tell the format of {upload.name!r} (known: {known}); choose one.")
        if upload.size > MAX_UPLOAD_BYTES:
            self.add_error("file", f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
            return cleaned
        try:
            cleaned["text"] = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            self.add_error("file", "The file is not UTF-8 text.")
        return cleaned


@admin.register(Intent)
class IntentAdmin(admin.ModelAdmin):
    change_list_template = "admin/personalization/intent/change_list.html"
    list_display = ["name", "action", "is_active", "example_count", "rule_count", "updated_at"]
    list_filter = ["is_active", "action"]
    search_fields = ["name", "description"]
    readonly_fields = ["examples_link", "created_at", "updated_at"]
    fields = ["name", "action", "description", "is_active", "examples_link", "created_at", "updated_at"]
    inlines = [KeywordRuleInline, IntentExampleInline]
    actions = ["train_intent_model", "export_csv", "export_clinc", "export_rasa"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Intent]:
        return (
            super()
            .get_queryset(request)
            .annotate(example_total=Count("examples", distinct=True), rule_total=Count("rules", distinct=True))
        )

    @admin.display(description="Examples", ordering="example_total")
    def example_count(self, intent: Intent) -> int:
        return intent.example_total

    @admin.display(description="Rules", ordering="rule_total")
    def rule_count(self, intent: Intent) -> int:
        return intent.rule_total

    @admin.display(description="Examples")
    def examples_link(self, intent: Intent) -> str:
        if intent.pk is None:
            return "-"
        link = reverse("admin:personalization_intentexample_changelist") + f"?intent__id__exact={intent.pk}"
        return format_html('<a href="{}">{} examples</a>', link, intent.examples.count())

    def get_inline_instances(self, request: HttpRequest, obj: Intent | None = None) -> list:
        inlines = super().get_inline_instances(request, obj)
        if obj is not None and obj.examples.count() > MAX_INLINE_EXAMPLES:
            inlines = [inline for inline in inlines if not isinstance(inline, IntentExampleInline)]
        return inlines

    def get_urls(self):
        view = self.admin_site.admin_view(self.import_view)
        return [path("import/", view, name="personalization_intent_import"), *super().get_urls()]

    def _can_import(self, request: HttpRequest) -> bool:
        return request.user.has_perm("personalization.add_intentexample")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_import": self._can_import(request)}
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """A file of examples in; the intent list with a summary out, or the form with its errors."""
        if not self._can_import(request):
            raise PermissionDenied
        form = IntentImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            create = data["create_intents"]
            if create and not self.has_add_permission(request):
                form.add_error("create_intents", "You may not create intents; untick this to add examples only.")
            else:
                try:
                    summary = intent_examples_import(
                        text=data["text"], fmt=data["format"], create_intents=create, intent_specs=DEFAULT_INTENTS
                    )
                except IntentImportError as exc:
                    form.add_error("file", str(exc))
                else:
                    new = f" ({', '.join(summary.intents_created)})" if summary.intents_created else ""
                    self.message_user(request, f"{data['file'].name}: {summary}{new}.", messages.SUCCESS)
                    return redirect("admin:personalization_intent_changelist")
        fieldsets = [(None, {"fields": ["file", "format", "create_intents"]})]
        context = {
            **self.admin_site.each_context(request),
            "title": "Import intent examples",
            "opts": self.opts,
            "form": form,
            "adminform": helpers.AdminForm(form, fieldsets, {}),
            "errors": helpers.AdminErrorList(form, []),
            "has_view_permission": self.has_view_permission(request),
            "extensions": sorted(EXTENSION_FORMATS.items()),
        }
        return TemplateResponse(request, "admin/personalization/intent/import.html", context)

    def has_train_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.add_trainingrun")

    @admin.action(description="Train intent model (on every active intent)", permissions=["train"])
    def train_intent_model(self, request: HttpRequest, queryset: QuerySet[Intent]) -> HttpResponse | None:
        """Launch an intent training run on the active intents' examples and open its page (live progress)."""
        # Imported here: the training pipeline pulls scikit-learn, which web processes need only for this.
        from training.services.intent_model import IntentParameters

        try:
            intent_training_set(min_examples=IntentParameters().min_examples)
        except TooLittleDataError as exc:
            self.message_user(request, f"Nothing was launched: {exc}.", messages.ERROR)
            return None
        try:
            run = training_run_launch(kind=ModelKind.INTENT, parameters={}, user_id=request.user.pk)
        except TrainingRunError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        self.message_user(request, f"Intent training run {run.pk} is queued; its progress shows here.")
        return redirect("admin:training_trainingrun_change", run.pk)

    def _export(self, queryset: QuerySet[Intent], fmt: str) -> HttpResponse:
        extension, content_type = DOWNLOADS[fmt]
        body = intent_examples_export(fmt=fmt, intent_ids=list(queryset.values_list("pk", flat=True)))
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="intent-examples.{extension}"'
        return response

    @admin.action(description="Export examples as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Intent]) -> HttpResponse:
        return self._export(queryset, "csv")

    @admin.action(description="Export examples as CLINC JSON", permissions=["view"])
    def export_clinc(self, request: HttpRequest, queryset: QuerySet[Intent]) -> HttpResponse:
        return self._export(queryset, "clinc")

    @admin.action(description="Export examples as Rasa YAML", permissions=["view"])
    def export_rasa(self, request: HttpRequest, queryset: QuerySet[Intent]) -> HttpResponse:
        return self._export(queryset, "rasa")
