"""Admin for conversations (read-only: they are the record of what readers said) and the dashboard."""

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from . import dashboard
from .charts import Series, bar_chart
from .models import Conversation, DecodingProfile, Message, MessageFeedback

admin.site.site_header = "mediachat administration"
admin.site.site_title = "mediachat admin"

DASHBOARD_DAYS = 30


class ReadOnlyAdminMixin:
    """View only: nobody adds or edits the record through the admin; superusers may delete (erasure)."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser


def _rating_label(message: Message) -> str:
    try:
        return message.feedback.get_rating_display()
    except MessageFeedback.DoesNotExist:
        return "-"


class MessageInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Message
    fields = ["id", "created_at", "role", "status", "text", "intent", "model_version", "rating"]
    readonly_fields = fields
    ordering = ["id"]
    extra = 0
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return super().get_queryset(request).select_related("feedback", "model_version").order_by("id")

    @admin.display(description="Rating")
    def rating(self, message: Message) -> str:
        return _rating_label(message)


class ReaderFilter(admin.SimpleListFilter):
    title = "reader"
    parameter_name = "reader"

    def lookups(self, request, model_admin):
        return [("signed_in", "Signed in"), ("anonymous", "Anonymous")]

    def queryset(self, request, queryset):
        if self.value() == "signed_in":
            return queryset.filter(user__isnull=False)
        if self.value() == "anonymous":
            return queryset.filter(user__isnull=True)
        return queryset


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "user", "session_key", "message_count", "started_at", "updated_at"]
    list_filter = [ReaderFilter]
    list_select_related = ["user"]
    search_fields = ["title", "user__username", "session_key"]
    date_hierarchy = "started_at"
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return super().get_queryset(request).annotate(message_count=Count("messages"))

    @admin.display(description="Messages", ordering="message_count")
    def message_count(self, conversation: Conversation) -> int:
        return conversation.message_count


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "status", "short_text", "intent", "model_version", "created_at"]
    list_filter = ["role", "status", "engine"]
    list_select_related = ["conversation", "model_version"]
    search_fields = ["text", "intent"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="Text")
    def short_text(self, message: Message) -> str:
        return message.text if len(message.text) <= 80 else message.text[:79] + "…"


@admin.register(MessageFeedback)
class MessageFeedbackAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["message", "rating", "reasons", "comment", "created_at"]
    list_filter = ["rating"]
    list_select_related = ["message"]
    search_fields = ["comment", "message__text"]
    date_hierarchy = "created_at"


@admin.register(DecodingProfile)
class DecodingProfileAdmin(admin.ModelAdmin):
    """Named decoding settings; `clean()` refuses values outside the engine's bounds with a form error."""

    list_display = ["name", "is_default", "strategy", "max_new_tokens", "temperature", "top_k", "top_p", "updated_at"]
    list_filter = ["strategy", "is_default"]
    search_fields = ["name", "description"]
    date_hierarchy = "updated_at"
    fieldsets = [
        (None, {"fields": ["name", "description", "is_default", "strategy", "max_new_tokens"]}),
        ("Sampling", {"fields": ["temperature", "top_k", "top_p"]}),
        ("Repetition and beams", {"fields": ["repetition_penalty", "num_beams"]}),
    ]

    def save_model(self, request: HttpRequest, obj: DecodingProfile, form, change: bool) -> None:
        # One default at a time: making this one the default takes it from the other.
        if obj.is_default:
            DecodingProfile.objects.exclude(pk=obj.pk).filter(is_default=True).update(is_default=False)
        super().save_model(request, obj, form, change)


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Activity, ratings and models at a glance; training panels only for those who may see training."""
    window = dashboard.Window.last(DASHBOARD_DAYS)
    conversations = dashboard.conversations_per_day(window)
    messages = dashboard.messages_per_day(window)
    ratings = dashboard.ratings_per_day(window)
    activity = [
        {"day": day, "conversations": c, "messages": m, "helpful": r.helpful, "not_helpful": r.not_helpful}
        for (day, c), (_, m), r in zip(conversations, messages, ratings, strict=True)
    ]
    charts = [
        bar_chart(
            title="Conversations per day",
            days=window.days,
            series=[Series("conversations", "#417690", [n for _, n in conversations])],
        ),
        bar_chart(
            title="Messages per day", days=window.days, series=[Series("messages", "#79aec8", [n for _, n in messages])]
        ),
        bar_chart(
            title="Ratings per day",
            days=window.days,
            series=[
                Series("helpful", "#2e7d32", [r.helpful for r in ratings]),
                Series("not helpful", "#c62828", [r.not_helpful for r in ratings]),
            ],
        ),
    ]
    user = request.user
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "days": DASHBOARD_DAYS,
        "time_zone": timezone.get_current_timezone_name(),
        "charts": charts,
        "activity": reversed(activity),
        "totals": {
            "conversations": sum(n for _, n in conversations),
            "messages": sum(n for _, n in messages),
        },
        "ratings_window": dashboard.rating_totals(since=window.start),
        "ratings_all": dashboard.rating_totals(),
        "top_content": dashboard.top_content(window),
        "intents": dashboard.intents_asked(window),
        "assistant": dashboard.assistant_status(),
        "show_models": user.has_perm("training.view_modelversion"),
        "show_runs": user.has_perm("training.view_trainingrun"),
    }
    if context["show_models"]:
        context["active_models"] = dashboard.active_models()
    if context["show_runs"]:
        context["recent_runs"] = dashboard.recent_runs()
    return TemplateResponse(request, "admin/dashboard.html", context)
