"""The admin dashboard's reads: activity per day, ratings, serving models, recent runs, top content.

Every figure is aggregated by the database (TruncDate + Count, filtered Counts); Python only fills in
the days that had nothing.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Avg, Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from personalization.models import Interaction
from training.models import ModelKind, ModelVersion, TrainingRun

from .models import Conversation, Message, MessageFeedback

HELPFUL = MessageFeedback.Rating.UP
NOT_HELPFUL = MessageFeedback.Rating.DOWN


@dataclass(frozen=True)
class Window:
    """The last `days` days up to and including today, in the current time zone."""

    days: list[dt.date]
    start: dt.datetime

    @classmethod
    def last(cls, days: int, today: dt.date | None = None) -> "Window":
        today = today or timezone.localdate()
        first = today - dt.timedelta(days=days - 1)
        start = timezone.make_aware(dt.datetime.combine(first, dt.time.min))
        return cls(days=[first + dt.timedelta(days=i) for i in range(days)], start=start)


@dataclass(frozen=True)
class RatingDay:
    day: dt.date
    helpful: int
    not_helpful: int


@dataclass(frozen=True)
class RatingTotals:
    helpful: int
    not_helpful: int

    @property
    def total(self) -> int:
        return self.helpful + self.not_helpful

    @property
    def helpful_rate(self) -> float | None:
        """Share of ratings that were helpful, 0 to 1; None without ratings."""
        return self.helpful / self.total if self.total else None

    @property
    def helpful_percent(self) -> str:
        """The helpful rate for people: "75.0%", or "-" without ratings."""
        rate = self.helpful_rate
        return "-" if rate is None else f"{100 * rate:.1f}%"


def _per_day(queryset: QuerySet, field: str, window: Window, **counts: Count) -> dict[dt.date, dict[str, int]]:
    rows = (
        queryset.filter(**{f"{field}__gte": window.start})
        .annotate(day=TruncDate(field))
        .values("day")
        .annotate(**counts)
        .order_by("day")
    )
    return {row["day"]: row for row in rows}


def counts_per_day(queryset: QuerySet, field: str, window: Window) -> list[tuple[dt.date, int]]:
    """Rows of `queryset` per day of the window by the datetime `field`, zero for days without any."""
    found = _per_day(queryset, field, window, n=Count("pk"))
    return [(day, found[day]["n"] if day in found else 0) for day in window.days]


def conversations_per_day(window: Window) -> list[tuple[dt.date, int]]:
    return counts_per_day(Conversation.objects.all(), "started_at", window)


def messages_per_day(window: Window) -> list[tuple[dt.date, int]]:
    return counts_per_day(Message.objects.all(), "created_at", window)


def _rating_counts() -> dict[str, Count]:
    return {"helpful": Count("pk", filter=Q(rating=HELPFUL)), "not_helpful": Count("pk", filter=Q(rating=NOT_HELPFUL))}


def ratings_per_day(window: Window) -> list[RatingDay]:
    """Helpful and not-helpful ratings per day of the window, by when they were given."""
    found = _per_day(MessageFeedback.objects.all(), "created_at", window, **_rating_counts())
    empty = {"helpful": 0, "not_helpful": 0}
    return [
        RatingDay(day=day, helpful=found.get(day, empty)["helpful"], not_helpful=found.get(day, empty)["not_helpful"])
        for day in window.days
    ]


def rating_totals(since: dt.datetime | None = None) -> RatingTotals:
    """Helpful and not-helpful ratings given since `since` (all of them without it)."""
    queryset = MessageFeedback.objects.all()
    if since is not None:
        queryset = queryset.filter(created_at__gte=since)
    return RatingTotals(**queryset.aggregate(**_rating_counts()))


def active_models() -> list[ModelVersion]:
    """The active version of each kind, ordered by kind."""
    return list(ModelVersion.objects.active().select_related("training_run").order_by("kind"))


@dataclass(frozen=True)
class AssistantStatus:
    available: bool
    detail: str  # for editors: which model answers, or why the assistant answers with search results only


def assistant_status() -> AssistantStatus:
    """Whether a chat model can answer readers, and if not, why (what the engine falls back from)."""
    configured = settings.MEDIACHAT.get("CHAT_MODEL", "")
    if configured:
        if Path(configured, "config.json").is_file():
            return AssistantStatus(True, f"The chat model at {configured} (MEDIACHAT_CHAT_MODEL) answers readers.")
        return AssistantStatus(False, f"MEDIACHAT_CHAT_MODEL is {configured}, which holds no model (no config.json).")
    version = ModelVersion.objects.active().filter(kind=ModelKind.CHAT_LM).first()
    if version is None:
        failed = TrainingRun.objects.filter(kind=ModelKind.CHAT_LM, status=TrainingRun.Status.FAILED).first()
        why = "No chat model is active"
        if failed is not None:
            last_line = (failed.log.strip().splitlines() or [""])[-1][:200]
            why += f"; the last chat-model training run (#{failed.pk}) failed: {last_line}"
        return AssistantStatus(False, why + ". Replies are catalog search results until one is trained and activated.")
    if not Path(version.artifact_path, "config.json").is_file():
        return AssistantStatus(
            False, f"The active chat model {version.name} has no files at {version.artifact_path or '(no path)'}."
        )
    from .engine.serving import State, engine_status  # the engine's own account, published by the serving process

    serving = engine_status()
    if serving.get("state") == State.ERROR and serving.get("model_version_id") == version.pk:
        return AssistantStatus(False, f"Chat model {version.name} failed to load: {serving.get('last_error', '')}")
    if serving.get("state") == State.LOADING and serving.get("model_version_id") == version.pk:
        return AssistantStatus(True, f"Chat model {version.name} (version {version.pk}) is loading.")
    return AssistantStatus(True, f"Chat model {version.name} (version {version.pk}) answers readers.")


def recent_runs(limit: int = 10) -> list[TrainingRun]:
    return list(TrainingRun.objects.select_related("created_by").order_by("-created_at")[:limit])


@dataclass(frozen=True)
class TopContent:
    content_id: int
    title: str
    status: str
    interactions: int
    clicks: int
    completions: int


def top_content(window: Window, limit: int = 10) -> list[TopContent]:
    """The contents with the most reading signals in the window, with their clicks and completions."""
    rows = (
        Interaction.objects.filter(occurred_at__gte=window.start)
        .values("content_id", "content__title", "content__status")
        .annotate(
            n=Count("pk"),
            clicks=Count("pk", filter=Q(kind=Interaction.Kind.CLICK)),
            completions=Count("pk", filter=Q(kind=Interaction.Kind.COMPLETE)),
        )
        .order_by("-n", "content_id")[:limit]
    )
    return [
        TopContent(
            content_id=row["content_id"],
            title=row["content__title"],
            status=row["content__status"],
            interactions=row["n"],
            clicks=row["clicks"],
            completions=row["completions"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class IntentCount:
    intent: str  # "" for messages nothing classified yet
    messages: int
    share: float  # of the reader messages in the window
    mean_confidence: float | None
    by_rule: int  # decided by an editor's keyword or regex rule

    @property
    def share_percent(self) -> str:
        return f"{100 * self.share:.1f}%"


def intents_asked(window: Window, limit: int = 12) -> list[IntentCount]:
    """What readers asked for in the window: their messages by intent, most asked first."""
    readers = Message.objects.filter(role=Message.Role.USER, created_at__gte=window.start)
    total = readers.count()
    rows = (
        readers.values("intent")
        .annotate(n=Count("pk"), confidence=Avg("confidence"), rules=Count("pk", filter=Q(intent_source="rule")))
        .order_by("-n", "intent")[:limit]
    )
    return [
        IntentCount(row["intent"], row["n"], row["n"] / total if total else 0.0, row["confidence"], row["rules"])
        for row in rows
    ]
