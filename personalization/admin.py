"""Admin for the catalog (editors write it) and for readers and their signals (read-only)."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from . import admin_entities  # noqa: F401  (registers the synonym and gazetteer admin)
from .admin_ingest import ContentRevisionInline, SocialPostInline  # also registers the data-collection admin
from .admin_intents import IntentAdmin  # noqa: F401  (registers the intents admin: intents, examples, keyword rules)
from .models import Author, Content, Interaction, ReaderProfile, Section, Tag
from .publishing import content_archive, content_publish, content_unpublish


@admin.register(Section)
class SectionAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "position"]
    list_editable = ["position"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Author)
class AuthorAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Content)
class ContentAdmin(admin.ModelAdmin):
    change_form_template = "admin/personalization/content/change_form.html"
    list_display = ["title", "kind", "status", "section", "language", "published_at", "updated_at"]
    list_filter = ["status", "kind", "section", "language"]
    list_select_related = ["section"]
    search_fields = ["title", "slug", "summary"]
    date_hierarchy = "published_at"
    prepopulated_fields = {"slug": ["title"]}
    autocomplete_fields = ["section", "tags", "authors"]
    readonly_fields = ["created_at", "updated_at"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ["publish", "unpublish", "archive"]
    inlines = [SocialPostInline, ContentRevisionInline]
    fieldsets = [
        (None, {"fields": ["title", "slug", "kind", "status", "section", "summary", "body", "url"]}),
        ("Classification", {"fields": ["tags", "authors", "language", "duration_seconds"]}),
        ("Schedule", {"fields": ["published_at", "embargo_until", "created_at", "updated_at"]}),
    ]

    def view_on_site(self, obj: Content) -> str | None:
        # Only published content has a reader page; drafts go through the preview instead.
        return obj.get_absolute_url() if obj.status == Content.Status.PUBLISHED else None

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [path("<path:object_id>/preview/", preview, name="personalization_content_preview"), *super().get_urls()]

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The item as readers would see it, whatever its status (drafts included)."""
        content = self.get_object(request, object_id)
        if content is None:
            raise Http404(f"No content with id {object_id!r}.")
        if not self.has_view_permission(request, content):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "content": content,
            "change_url": reverse("admin:personalization_content_change", args=[content.pk]),
            "is_visible": Content.objects.published().filter(pk=content.pk).exists(),
        }
        return TemplateResponse(request, "admin/personalization/content/preview.html", context)

    def _report(self, request: HttpRequest, changed: int, selected: int, verb: str) -> None:
        self.message_user(request, f"{changed} of {selected} selected items {verb}.", messages.SUCCESS)

    @admin.action(description="Publish selected content", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[Content]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._report(request, content_publish(content_ids=ids), len(ids), "published")

    @admin.action(description="Unpublish selected content (back to draft)", permissions=["change"])
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Content]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._report(request, content_unpublish(content_ids=ids), len(ids), "unpublished")

    @admin.action(description="Archive selected content", permissions=["change"])
    def archive(self, request: HttpRequest, queryset: QuerySet[Content]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._report(request, content_archive(content_ids=ids), len(ids), "archived")


@admin.register(ReaderProfile)
class ReaderProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "training_consent", "created_at", "last_seen_at"]
    list_filter = ["training_consent"]
    list_select_related = ["user"]
    search_fields = ["user__username", "user__email"]
    date_hierarchy = "created_at"
    autocomplete_fields = ["user"]
    readonly_fields = ["created_at", "last_seen_at"]


@admin.register(Interaction)
class InteractionAdmin(admin.ModelAdmin):
    list_display = ["occurred_at", "kind", "content", "user", "session_key", "value", "source"]
    list_filter = ["kind", "source"]
    list_select_related = ["content", "user"]
    search_fields = ["content__title", "user__username", "session_key"]
    date_hierarchy = "occurred_at"
    autocomplete_fields = ["content", "user"]
    readonly_fields = ["created_at"]
    # The changelist counts a table that grows with every page view: show "more" instead of a total.
    show_full_result_count = False
