"""Admin for imports: the Import page (a file or a feed URL), import jobs with live progress, their row
errors on the page and as CSV, and "Run again"."""

import csv
import datetime as dt
from collections.abc import Iterator
from pathlib import PurePath

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from mediachat.admin import ReadOnlyAdminMixin
from mediachat.charts import BOTTOM, LEFT, RIGHT, TOP, Bar, BarChart, Label, Series

from .ingest import feed_services, services
from .ingest.feed_tasks import feed_poll
from .models import CustomerMessage, FeedSource, ImportJob, ImportRowError, Section

# Upload formats an editor may pick; feeds come in by URL instead.
FILE_FORMATS = [choice for choice in ImportJob.Format.choices if choice[0] != ImportJob.Format.FEED]
EXTENSION_FORMATS = {
    ".jsonl": ImportJob.Format.JSONL,
    ".ndjson": ImportJob.Format.JSONL,
    ".json": ImportJob.Format.JSON,
    ".csv": ImportJob.Format.CSV,
    ".xml": ImportJob.Format.WXR,
    ".wxr": ImportJob.Format.WXR,
}
FINISHED = {ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED}
ROW_ERRORS_PER_PAGE = 50
# Cells a spreadsheet would run as a formula; the CSV prefixes them with a quote (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
COUNT_COLORS = (("created", "#2e7d32"), ("updated", "#417690"), ("skipped", "#9e9e9e"), ("failed", "#c62828"))


def _progress_html(progress: float) -> str:
    percent = round(100 * progress)
    bar = '<progress max="100" value="{0}" aria-label="{0}% done">{0}%</progress> {0}%'
    return format_html('<span style="white-space:nowrap">' + bar + "</span>", percent)


def shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(job: ImportJob) -> dt.timedelta | None:
    if job.started_at is None:
        return None
    end = job.finished_at or timezone.now()
    return dt.timedelta(seconds=round((end - job.started_at).total_seconds()))


def job_progress(job: ImportJob) -> dict[str, object]:
    """What the job page's live panel shows, as the progress endpoint returns it."""
    duration = _duration(job)
    return {
        "id": job.pk,
        "status": job.status,
        "status_display": job.get_status_display(),
        "finished": job.status in FINISHED,
        "progress": job.progress,
        "percent": round(100 * job.progress),
        "rows_seen": job.rows_seen,
        "created": job.created_count,
        "updated": job.updated_count,
        "skipped": job.skipped_count,
        "failed": job.failed_count,
        "error": job.error,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "duration_s": duration.total_seconds() if duration is not None else None,
    }


def counts_chart(job: ImportJob, *, width: int = 360, height: int = 150) -> BarChart:
    """One bar per outcome (created, updated, skipped, failed), the value written above each."""
    values = [(label, color, getattr(job, f"{label}_count")) for label, color in COUNT_COLORS]
    top_value = max(max(value for _, _, value in values), 1)
    plot_width = width - LEFT - RIGHT
    plot_height = height - TOP - BOTTOM
    baseline = TOP + plot_height
    slot = plot_width / len(values)
    bar_width = round(slot * 0.6, 2)
    bars, labels = [], [Label(LEFT - 6, baseline + 4, "0", "end"), Label(LEFT - 6, TOP + 4, str(top_value), "end")]
    for i, (label, color, value) in enumerate(values):
        center = LEFT + (i + 0.5) * slot
        bar_height = round(plot_height * value / top_value, 2)
        bars.append(
            Bar(
                round(center - bar_width / 2, 2),
                round(baseline - bar_height, 2),
                bar_width,
                bar_height,
                color,
                f"{value} {label}",
            )
        )
        labels.append(Label(round(center, 2), height - 6, label))
        labels.append(Label(round(center, 2), round(baseline - bar_height - 3, 2), str(value)))
    return BarChart(
        title="Rows by outcome",
        width=width,
        height=height,
        series=[Series(label, color, [value]) for label, color, value in values],
        bars=bars,
        labels=labels,
        baseline=baseline,
        right=width - RIGHT,
    )


# --- The Import page -----------------------------------------------------------------------------


def parse_column_mapping(text: str) -> dict[str, str]:
    """`field=column` lines (blank lines and # comments skipped) as {field: column}."""
    mapping: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        field, sep, column = (part.strip() for part in line.partition("="))
        if not sep or not field or not column:
            raise ValidationError(f"Line {number}: write field=column, e.g. title=headline (got {line!r}).")
        if field in mapping:
            raise ValidationError(f"Line {number}: the field {field!r} is mapped twice.")
        mapping[field] = column
    return mapping


def guess_format(filename: str) -> str | None:
    return EXTENSION_FORMATS.get(PurePath(filename.lower()).suffix)


class ImportForm(forms.Form):
    file = forms.FileField(
        required=False, help_text="JSON Lines, JSON, CSV or a WordPress export (WXR); large files are fine."
    )
    format = forms.ChoiceField(
        choices=[("", "Guess from the file name"), *FILE_FORMATS],
        required=False,
        help_text=".jsonl/.ndjson, .json, .csv and .xml/.wxr are recognised; choose here for any other name.",
    )
    target = forms.ChoiceField(choices=ImportJob.Target.choices, initial=ImportJob.Target.CONTENT)
    column_mapping = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40, "placeholder": "title=headline\nbody=text"}),
        help_text="CSV and JSON: one field=column per line, for columns whose names differ from the fields.",
    )
    source_name = forms.CharField(
        required=False,
        max_length=100,
        help_text="Where the rows come from, e.g. archive-2019 or zendesk; for a feed, its name.",
    )
    platform = forms.CharField(
        required=False, max_length=32, help_text="Social posts: the platform of rows that name none, e.g. mastodon."
    )
    channel = forms.ChoiceField(
        choices=[("", "From the file"), *CustomerMessage.Channel.choices],
        required=False,
        help_text="Customer messages: the channel of rows that name none.",
    )
    delimiter = forms.ChoiceField(
        choices=[("", "Guess"), (",", "Comma"), (";", "Semicolon"), ("\t", "Tab"), ("|", "Vertical bar")],
        required=False,
        label="CSV delimiter",
    )
    feed_url = forms.URLField(
        required=False,
        max_length=1000,
        assume_scheme="https",
        label="Feed URL",
        help_text="An RSS or Atom feed: it is added to the feeds and polled now, then on its schedule.",
    )
    section = forms.ModelChoiceField(
        queryset=Section.objects.all(), required=False, help_text="Feeds: the section of items that name none."
    )
    publish = forms.BooleanField(
        required=False, initial=True, help_text="Feeds: publish new items at once (or keep them as drafts)."
    )

    FILE_FIELDS = ["file", "format", "target", "column_mapping", "source_name", "platform", "channel", "delimiter"]
    # Import options the services take, by form field.
    OPTION_FIELDS = {"source_name": "source", "platform": "platform", "channel": "channel", "delimiter": "delimiter"}
    FEED_FIELDS = ["feed_url", "section", "publish"]

    def __init__(self, *args, allow_feeds: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allow_feeds = allow_feeds
        if not allow_feeds:
            for name in self.FEED_FIELDS:
                del self.fields[name]

    @property
    def fieldsets(self) -> list[tuple[str, dict]]:
        sets = [("A file", {"fields": self.FILE_FIELDS})]
        if self.allow_feeds:
            sets.append(("Or a feed", {"fields": self.FEED_FIELDS}))
        return sets

    def clean_column_mapping(self) -> dict[str, str]:
        return parse_column_mapping(self.cleaned_data.get("column_mapping") or "")

    def clean(self) -> dict:
        cleaned = super().clean()
        upload, feed_url = cleaned.get("file"), cleaned.get("feed_url")
        if self.errors:
            return cleaned
        if upload and feed_url:
            raise ValidationError("Give a file or a feed URL, not both.")
        if not upload and not feed_url:
            raise ValidationError("Give a file to import, or a feed URL." if self.allow_feeds else "Give a file.")
        if upload and not cleaned.get("format"):
            guessed = guess_format(upload.name)
            if guessed is None:
                known = ", ".join(sorted(EXTENSION_FORMATS))
                self.add_error(
                    "file",
                    f"Cannot tell the format of {upload.name!r} from its name (known: {known}); choose a format.",
                )
            cleaned["format"] = guessed
        return cleaned


# --- Import jobs ---------------------------------------------------------------------------------


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    change_form_template = "admin/personalization/importjob/change_form.html"
    change_list_template = "admin/personalization/importjob/change_list.html"
    list_display = [
        "id",
        "format",
        "target",
        "source",
        "status",
        "progress_bar",
        "counts",
        "created_by",
        "created_at",
        "duration",
    ]
    list_display_links = ["id", "source"]
    list_filter = ["status", "format", "target"]
    list_select_related = ["feed", "created_by"]
    search_fields = ["=id", "filename", "feed__name", "feed__url", "error"]
    date_hierarchy = "created_at"
    actions = ["run_again"]
    fieldsets = [
        (None, {"fields": ["format", "target", "source", "stored_file", "column_mapping", "options", "created_by"]}),
        ("Details", {"fields": ["celery_task_id", "created_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["source", "stored_file"]

    # A job is the record of what ran: the pipeline writes it, nobody edits it; "Run again" makes a new one.
    def has_change_permission(self, request: HttpRequest, obj: ImportJob | None = None) -> bool:
        return False

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("import/", wrap(self.import_view), name="personalization_importjob_import"),
            path("<path:object_id>/progress/", wrap(self.progress_view), name="personalization_importjob_progress"),
            path(
                "<path:object_id>/errors.csv", wrap(self.errors_csv_view), name="personalization_importjob_errors_csv"
            ),
            path("<path:object_id>/run-again/", wrap(self.run_again_view), name="personalization_importjob_run_again"),
            *super().get_urls(),
        ]

    @admin.display(description="Source")
    def source(self, job: ImportJob) -> str:
        if job.feed_id is not None:
            return f"Feed: {job.feed.name}"
        return job.filename or "-"

    @admin.display(description="Stored file")
    def stored_file(self, job: ImportJob) -> str:
        return job.file.name or (job.options or {}).get("path") or "-"

    @admin.display(description="Progress", ordering="progress")
    def progress_bar(self, job: ImportJob) -> str:
        return _progress_html(job.progress)

    @admin.display(description="Created / updated / skipped / failed")
    def counts(self, job: ImportJob) -> str:
        return f"{job.created_count} / {job.updated_count} / {job.skipped_count} / {job.failed_count}"

    @admin.display(description="Duration")
    def duration(self, job: ImportJob) -> str:
        value = _duration(job)
        return "-" if value is None else str(value)

    def _job_or_404(self, request: HttpRequest, object_id: str) -> ImportJob:
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404(f"No import job with id {object_id!r}.")
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return job

    def _can_read_row_errors(self, request: HttpRequest) -> bool:
        return request.user.has_perm("personalization.view_importrowerror")

    # Entry points -------------------------------------------------------------------------------

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        return redirect("admin:personalization_importjob_import")

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """A file upload or a feed URL in; the new job's page (or the feed's) out, or the form with its errors."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        allow_feeds = request.user.has_perm("personalization.add_feedsource")
        form = ImportForm(request.POST or None, request.FILES or None, allow_feeds=allow_feeds)
        if request.method == "POST" and form.is_valid():
            response = self._import(request, form)
            if response is not None:
                return response
        context = {
            **self.admin_site.each_context(request),
            "title": "Import a file or a feed",
            "opts": self.opts,
            "form": form,
            "adminform": helpers.AdminForm(form, form.fieldsets, {}),
            "errors": helpers.AdminErrorList(form, []),
            "has_view_permission": self.has_view_permission(request),
            "formats": FILE_FORMATS,
            "extensions": sorted(EXTENSION_FORMATS.items()),
        }
        return TemplateResponse(request, "admin/personalization/importjob/import.html", context)

    def _import(self, request: HttpRequest, form: ImportForm) -> HttpResponse | None:
        data = form.cleaned_data
        if data.get("feed_url"):
            return self._import_feed(request, form)
        upload = data["file"]
        options = {option: data[field] for field, option in form.OPTION_FIELDS.items() if data[field]}
        try:
            with transaction.atomic():
                job = services.import_job_create(
                    format=data["format"],
                    target=data["target"],
                    file=upload,
                    filename=upload.name,
                    column_mapping=data["column_mapping"],
                    options=options,
                    user_id=request.user.pk,
                )
                services.import_job_enqueue(job_id=job.pk)
        except ValueError as exc:
            form.add_error("file", str(exc))
            return None
        self.message_user(request, f"{upload.name} is queued for import as job #{job.pk}.", messages.SUCCESS)
        return redirect("admin:personalization_importjob_change", job.pk)

    def _import_feed(self, request: HttpRequest, form: ImportForm) -> HttpResponse | None:
        data = form.cleaned_data
        try:
            with transaction.atomic():
                feed = feed_services.feed_source_create(
                    url=data["feed_url"],
                    name=data["source_name"],
                    section_id=data["section"].pk if data["section"] else None,
                    publish=data["publish"],
                )
        except feed_services.FeedError as exc:
            form.add_error("feed_url", str(exc))
            return None
        transaction.on_commit(lambda: feed_poll.delay(feed.pk))
        # The poll makes its job when a worker takes it: the feed's page lists it under "Recent imports".
        self.message_user(
            request, f"Feed {feed.name!r} added and being polled now; its import is listed below.", messages.SUCCESS
        )
        return redirect("admin:personalization_feedsource_change", feed.pk)

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        return JsonResponse(job_progress(self._job_or_404(request, object_id)))

    def errors_csv_view(self, request: HttpRequest, object_id: str) -> StreamingHttpResponse:
        """Every row error of the job as CSV, streamed (a job may hold millions)."""
        job = self._job_or_404(request, object_id)
        if not self._can_read_row_errors(request):
            raise PermissionDenied
        response = StreamingHttpResponse(_row_errors_csv(job), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="import-{job.pk}-errors.csv"'
        return response

    @staticmethod
    def _run_again(job: ImportJob, user_id: int) -> ImportJob | FeedSource:
        if job.feed_id is not None:
            transaction.on_commit(lambda: feed_poll.delay(job.feed_id))
            return job.feed
        # The same file, not a copy: an upload stays where the first job stored it, a server path stays put.
        options = dict(job.options or {})
        path = options.pop("path", "") or (job.file.path if job.file else "")
        if not path:
            raise ValueError("it has no stored file.")
        new_job = services.import_job_create(
            format=job.format,
            target=job.target,
            path=path,
            filename=job.filename,
            column_mapping=job.column_mapping,
            options=options,
            user_id=user_id,
        )
        services.import_job_enqueue(job_id=new_job.pk)
        return new_job

    @method_decorator(require_POST)
    def run_again_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._job_or_404(request, object_id)
        if not self.has_add_permission(request):
            raise PermissionDenied
        try:
            with transaction.atomic():
                again = self._run_again(job, request.user.pk)
        except ValueError as exc:
            self.message_user(request, f"Job #{job.pk} cannot run again: {exc}", messages.ERROR)
            return redirect("admin:personalization_importjob_change", job.pk)
        if isinstance(again, FeedSource):
            self.message_user(request, f"Feed {again.name!r} is being polled again.", messages.SUCCESS)
            return redirect("admin:personalization_feedsource_change", again.pk)
        self.message_user(request, f"Job #{job.pk} runs again as job #{again.pk}.", messages.SUCCESS)
        return redirect("admin:personalization_importjob_change", again.pk)

    @admin.action(description="Run the selected imports again (same file, new job)", permissions=["add"])
    def run_again(self, request: HttpRequest, queryset: QuerySet[ImportJob]) -> None:
        started, refused = [], []
        for job in queryset.select_related("feed"):
            try:
                with transaction.atomic():
                    again = self._run_again(job, request.user.pk)
            except ValueError as exc:
                refused.append(f"Job #{job.pk} cannot run again: {exc}")
            else:
                started.append(
                    f"#{job.pk} → feed poll" if isinstance(again, FeedSource) else f"#{job.pk} → #{again.pk}"
                )
        if started:
            self.message_user(request, f"Running again: {', '.join(started)}.", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        job = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if job is not None and self.has_view_permission(request, job):
            can_read_errors = self._can_read_row_errors(request)
            extra_context |= {
                "job": job,
                "live": job_progress(job),
                "chart": counts_chart(job),
                "can_run_again": self.has_add_permission(request),
                "can_read_errors": can_read_errors,
            }
            if can_read_errors:
                paginator = Paginator(job.row_errors.order_by("line", "id"), ROW_ERRORS_PER_PAGE)
                extra_context["row_errors"] = paginator.get_page(request.GET.get("errors_page"))
        return super().change_view(request, object_id, form_url, extra_context)


def _csv_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def _row_errors_csv(job: ImportJob) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(["line", "external_id", "field", "message", "raw"])
    rows = job.row_errors.order_by("line", "id").values_list("line", "external_id", "field", "message", "raw")
    for row in rows.iterator(chunk_size=2000):
        yield writer.writerow([_csv_cell(value) for value in row])


@admin.register(ImportRowError)
class ImportRowErrorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["job", "line", "field", "external_id", "short_message", "created_at"]
    list_select_related = ["job"]
    search_fields = ["=job__id", "message", "external_id"]
    list_filter = ["job__target", "job__format"]
    show_full_result_count = False

    @admin.display(description="Message")
    def short_message(self, error: ImportRowError) -> str:
        return shorten(error.message)
