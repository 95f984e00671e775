"""Admin for data collection: feeds, mapping rules, revisions, social posts, customer messages and embeddings.

The Import page and import jobs live in `admin_import`, imported here so that one import line in
`admin.py` registers the whole data-collection admin.
"""

import datetime as dt
from urllib.parse import urlsplit

import numpy as np
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from mediachat.admin import ReadOnlyAdminMixin

from . import admin_import  # noqa: F401  (registers the Import page and import jobs)
from .admin_import import shorten
from .ingest import feed_services
from .ingest.feed_tasks import feed_poll
from .models import ContentEmbedding, ContentRevision, CustomerMessage, FeedSource, MappingRule, SocialPost

# --- Feeds, rules -------------------------------------------------------------------------------


class FeedSourceForm(forms.ModelForm):
    """The bounds `feed_source_create` enforces, as form errors."""

    url = forms.URLField(label="URL", max_length=1000, assume_scheme="https", widget=forms.URLInput(attrs={"size": 80}))

    class Meta:
        model = FeedSource
        fields = ["name", "url", "section", "is_active", "poll_interval_minutes", "publish"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "name" in self.fields:  # absent when the admin shows the feed read-only
            self.fields["name"].required = False
            self.fields["name"].help_text = "Left empty, the feed's host name."

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        if not url.lower().startswith(("http://", "https://")):
            raise ValidationError("Give a full http:// or https:// address.")
        return url

    def clean_poll_interval_minutes(self) -> int:
        minutes = self.cleaned_data["poll_interval_minutes"]
        if not 1 <= minutes <= feed_services.MAX_POLL_INTERVAL_MINUTES:
            raise ValidationError(f"From 1 to {feed_services.MAX_POLL_INTERVAL_MINUTES} minutes (a week).")
        return minutes

    def clean(self) -> dict:
        cleaned = super().clean()
        if not cleaned.get("name") and cleaned.get("url"):
            cleaned["name"] = urlsplit(cleaned["url"]).hostname or cleaned["url"]
        return cleaned


@admin.register(FeedSource)
class FeedSourceAdmin(admin.ModelAdmin):
    form = FeedSourceForm
    change_form_template = "admin/personalization/feedsource/change_form.html"
    list_display = [
        "name",
        "is_active",
        "last_success_at",
        "short_last_error",
        "consecutive_failures",
        "next_poll_at",
        "items_created",
        "items_updated",
        "items_skipped",
    ]
    list_filter = ["is_active", "section"]
    list_select_related = ["section"]
    search_fields = ["name", "url"]
    autocomplete_fields = ["section"]
    actions = ["poll_now", "activate", "deactivate"]
    fieldsets = [
        (None, {"fields": ["name", "url", "section", "is_active", "poll_interval_minutes", "publish"]}),
        (
            "Polling",
            {
                "fields": [
                    "last_polled_at",
                    "last_success_at",
                    "last_error",
                    "last_error_at",
                    "consecutive_failures",
                    "next_poll_at",
                    "etag",
                    "last_modified",
                ]
            },
        ),
        ("Items", {"fields": ["items_created", "items_updated", "items_skipped", "recent_jobs", "created_at"]}),
    ]
    readonly_fields = [
        "last_polled_at",
        "last_success_at",
        "last_error",
        "last_error_at",
        "consecutive_failures",
        "next_poll_at",
        "etag",
        "last_modified",
        "items_created",
        "items_updated",
        "items_skipped",
        "recent_jobs",
        "created_at",
    ]

    def get_urls(self):
        poll = self.admin_site.admin_view(self.poll_view)
        return [path("<path:object_id>/poll/", poll, name="personalization_feedsource_poll"), *super().get_urls()]

    @admin.display(description="Last error")
    def short_last_error(self, feed: FeedSource) -> str:
        return shorten(feed.last_error, 60) or "-"

    @admin.display(description="Recent imports")
    def recent_jobs(self, feed: FeedSource) -> str:
        if feed.pk is None:
            return "-"
        jobs = list(feed.jobs.order_by("-created_at")[:5])
        if not jobs:
            return "None yet."
        items = format_html_join(
            "",
            '<li><a href="{}">{}</a>: {} created, {} updated, {} skipped, {} failed</li>',
            (
                (
                    reverse("admin:personalization_importjob_change", args=[job.pk]),
                    job,
                    job.created_count,
                    job.updated_count,
                    job.skipped_count,
                    job.failed_count,
                )
                for job in jobs
            ),
        )
        every = reverse("admin:personalization_importjob_changelist") + f"?feed__id__exact={feed.pk}"
        return format_html('<ul style="margin:0">{}</ul><a href="{}">Every import of this feed</a>', items, every)

    def save_model(self, request: HttpRequest, obj: FeedSource, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        feed = feed_services.feed_source_create(
            url=obj.url,
            name=obj.name,
            section_id=obj.section_id,
            poll_interval_minutes=obj.poll_interval_minutes,
            publish=obj.publish,
        )
        if not obj.is_active:
            FeedSource.objects.filter(pk=feed.pk).update(is_active=False)
        # The admin goes on with `obj` (its messages and redirect): make it the created row.
        obj.pk = feed.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def _poll(self, feed_ids: list[int]) -> None:
        for feed_id in feed_ids:
            transaction.on_commit(lambda feed_id=feed_id: feed_poll.delay(feed_id))

    @method_decorator(require_POST)
    def poll_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        feed = self.get_object(request, object_id)
        if feed is None:
            raise Http404(f"No feed with id {object_id!r}.")
        if not self.has_change_permission(request, feed):
            raise PermissionDenied
        self._poll([feed.pk])
        self.message_user(request, f"Polling {feed.name!r} now; its import appears below.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:personalization_feedsource_change", args=[feed.pk]))

    @admin.action(description="Poll the selected feeds now", permissions=["change"])
    def poll_now(self, request: HttpRequest, queryset: QuerySet[FeedSource]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._poll(ids)
        self.message_user(request, f"Polling {len(ids)} feeds now.", messages.SUCCESS)

    # One flag, as the change form would write it; the beat polls an active feed once its next_poll_at is due.
    @admin.action(description="Activate the selected feeds (poll them on schedule)", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[FeedSource]) -> None:
        count = queryset.filter(is_active=False).update(is_active=True)
        self.message_user(request, f"{count} feeds activated.", messages.SUCCESS)

    @admin.action(description="Deactivate the selected feeds (stop polling)", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[FeedSource]) -> None:
        count = queryset.filter(is_active=True).update(is_active=False)
        self.message_user(request, f"{count} feeds deactivated.", messages.SUCCESS)


@admin.register(MappingRule)
class MappingRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "field", "match_type", "pattern", "section", "tag", "priority", "is_active"]
    list_editable = ["priority", "is_active"]
    list_filter = ["is_active", "field", "match_type", "section"]
    list_select_related = ["section", "tag"]
    search_fields = ["name", "pattern"]
    autocomplete_fields = ["section", "tag"]
    readonly_fields = ["created_at", "updated_at"]
    fields = ["name", "field", "match_type", "pattern", "section", "tag", "priority", "is_active", *readonly_fields]


# --- Catalog additions: revisions, social posts, embeddings ------------------------------------------


class ContentRevisionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ContentRevision
    fields = ["created_at", "title", "summary", "content_hash", "job"]
    readonly_fields = fields
    ordering = ["-created_at"]
    extra = 0
    show_change_link = True
    verbose_name_plural = "Earlier versions (replaced by corrections)"

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the history of an item is kept whole (a superuser may still delete it from its own page)


class SocialPostInline(admin.StackedInline):
    model = SocialPost
    fields = ["platform", "handle", "likes", "shares", "comments", "views"]
    max_num = 1
    extra = 0
    verbose_name_plural = "Social post (for content of kind “Social post”)"


@admin.register(ContentRevision)
class ContentRevisionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["content", "title", "job", "created_at"]
    list_select_related = ["content", "job"]
    search_fields = ["content__title", "title", "=content__id"]
    date_hierarchy = "created_at"
    fields = ["content", "title", "summary", "body", "content_hash", "job", "created_at"]
    readonly_fields = fields


@admin.register(SocialPost)
class SocialPostAdmin(admin.ModelAdmin):
    list_display = ["content", "platform", "handle", "likes", "shares", "comments", "views", "published_at"]
    list_filter = ["platform"]
    list_select_related = ["content"]
    search_fields = ["handle", "content__title"]
    autocomplete_fields = ["content"]
    fields = ["content", "platform", "handle", "likes", "shares", "comments", "views"]

    @admin.display(description="Posted at", ordering="content__published_at")
    def published_at(self, post: SocialPost) -> dt.datetime | None:
        return post.content.published_at

    def get_readonly_fields(self, request: HttpRequest, obj: SocialPost | None = None) -> list[str]:
        # The content is the post's primary key: moving it to another item would make a new row.
        return ["content"] if obj is not None else []


@admin.register(ContentEmbedding)
class ContentEmbeddingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["content", "model_name", "dimensions", "text_hash", "updated_at"]
    list_filter = ["model_name"]
    list_select_related = ["content"]
    search_fields = ["content__title", "=content__id"]
    fields = ["content", "model_name", "dimensions", "vector_preview", "text_hash", "updated_at"]
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description="Vector")
    def vector_preview(self, embedding: ContentEmbedding) -> str:
        vector = np.frombuffer(bytes(embedding.vector), dtype="<f4")
        head = ", ".join(f"{value:.4f}" for value in vector[:6])
        return f"[{head}, …] ({vector.size} values, norm {float(np.linalg.norm(vector)):.3f})"


# --- Customer messages ---------------------------------------------------------------------------


class CustomerMessageForm(forms.ModelForm):
    labels = forms.CharField(required=False, max_length=1000, help_text="Comma-separated, e.g. billing, refund.")

    class Meta:
        model = CustomerMessage
        fields = ["labels", "training_consent"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial["labels"] = ", ".join(self.instance.labels or [])

    def clean_labels(self) -> list[str]:
        labels = [label.strip() for label in self.cleaned_data["labels"].split(",")]
        too_long = [label for label in labels if len(label) > 100]
        if too_long:
            raise ValidationError(f"A label has at most 100 characters: {shorten(too_long[0], 40)!r}.")
        return list(dict.fromkeys(label for label in labels if label))


@admin.register(CustomerMessage)
class CustomerMessageAdmin(admin.ModelAdmin):
    """Messages come only from imports; editors correct labels and consent, the rest is the record."""

    form = CustomerMessageForm
    list_display = ["__str__", "channel", "source", "short_subject", "received_at", "label_list", "training_consent"]
    list_filter = ["channel", "training_consent", "source", "language"]
    search_fields = ["subject", "text", "=external_id"]
    date_hierarchy = "received_at"
    fields = [
        "channel",
        "source",
        "external_id",
        "subject",
        "text",
        "received_at",
        "language",
        "labels",
        "training_consent",
        "content_hash",
        "job",
        "created_at",
    ]
    readonly_fields = [
        "channel",
        "source",
        "external_id",
        "subject",
        "text",
        "received_at",
        "language",
        "content_hash",
        "job",
        "created_at",
    ]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Subject")
    def short_subject(self, message: CustomerMessage) -> str:
        return shorten(message.subject or message.text, 60)

    @admin.display(description="Labels")
    def label_list(self, message: CustomerMessage) -> str:
        return ", ".join(message.labels or []) or "-"
