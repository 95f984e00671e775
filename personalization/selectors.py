"""Reads behind the REST API: the published catalog (filters and search) and a reader's own history.

Every reader-scoped helper filters by `ReaderRef.owner_q()`, so one reader's rows never reach another;
a missing row and someone else's row look the same (None), which the API answers with 404.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import Count, Prefetch, QuerySet
from django.utils import timezone

from mediachat.models import Conversation, Message

from .identity import ReaderRef
from .models import Content, CustomerMessage, Interaction
from .search import MAX_CANDIDATES, catalog_search

CONTENT_REF_FIELDS = ("id", "slug", "title", "kind", "url")


@dataclass(frozen=True)
class ContentFilters:
    """Catalog filters; empty strings and None mean "any"."""

    section: str = ""
    tag: str = ""
    author: str = ""
    kind: str = ""
    language: str = ""
    published_after: date | None = None  # inclusive, by calendar day in TIME_ZONE
    published_before: date | None = None  # inclusive, by calendar day in TIME_ZONE

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def content_published(now: datetime | None = None) -> QuerySet[Content]:
    """Published content with what the API shows loaded in bulk (section, tags, authors)."""
    return Content.objects.published(now).select_related("section").prefetch_related("tags", "authors")


def content_list(*, filters: ContentFilters, now: datetime | None = None) -> QuerySet[Content]:
    """Published content matching `filters`, newest first."""
    qs = content_published(now)
    if filters.section:
        qs = qs.filter(section__slug=filters.section)
    if filters.tag:
        qs = qs.filter(tags__slug=filters.tag)
    if filters.author:
        qs = qs.filter(authors__slug=filters.author)
    if filters.kind:
        qs = qs.filter(kind=filters.kind)
    if filters.language:
        qs = qs.filter(language=filters.language)
    if filters.published_after:
        qs = qs.filter(published_at__gte=_start_of(filters.published_after))
    if filters.published_before and filters.published_before < date.max:
        # Range on the column itself (not __date) keeps the (status, published_at) index usable.
        qs = qs.filter(published_at__lt=_start_of(filters.published_before + timedelta(days=1)))
    return qs


def content_search(*, query: str, filters: ContentFilters, now: datetime | None = None) -> list[Content]:
    """Published content for `query`, most relevant first (personalization.search), narrowed by `filters`."""
    hits = catalog_search(query, limit=MAX_CANDIDATES, now=now)
    if not filters or not hits:
        return [hit.content for hit in hits]
    allowed = set(
        content_list(filters=filters, now=now)
        .filter(pk__in=[hit.content.pk for hit in hits])
        .values_list("pk", flat=True)
    )
    return [hit.content for hit in hits if hit.content.pk in allowed]


def content_get(*, slug: str) -> Content | None:
    """The published item with this slug, or None."""
    return content_published().filter(slug=slug).first()


def reader_conversations(*, reader: ReaderRef) -> QuerySet[Conversation]:
    """The reader's conversations, most recently active first, each with its `message_count`."""
    if reader.user_id is None and not reader.session_key:
        return Conversation.objects.none()
    return (
        Conversation.objects.filter(reader.owner_q())
        .annotate(message_count=Count("messages"))
        .order_by("-updated_at", "-id")
    )


def reader_conversation(*, reader: ReaderRef, conversation_id: int) -> Conversation | None:
    """One of the reader's conversations, or None (for a missing one and for anyone else's alike)."""
    return reader_conversations(reader=reader).filter(pk=conversation_id).first()


def reader_messages(
    *, reader: ReaderRef, conversation_id: int, after_id: int = 0, limit: int = 100
) -> list[Message] | None:
    """The messages after `after_id` (oldest first, at most `limit`) of one of the reader's conversations.

    Each message carries its feedback and `published_cited`: the cited items still published. None when
    the conversation is not the reader's.
    """
    if reader.user_id is None and not reader.session_key:
        return None
    if not Conversation.objects.filter(reader.owner_q(), pk=conversation_id).exists():
        return None
    cited = Content.objects.published().only(*CONTENT_REF_FIELDS)
    return list(
        Message.objects.filter(conversation_id=conversation_id, pk__gt=after_id)
        .select_related("feedback")
        .prefetch_related(Prefetch("cited", queryset=cited, to_attr="published_cited"))
        .order_by("id")[:limit]
    )


def reader_interactions(*, reader: ReaderRef) -> QuerySet[Interaction]:
    """The reader's own reading signals, newest first, with their content."""
    if reader.user_id is None and not reader.session_key:
        return Interaction.objects.none()
    return Interaction.objects.filter(reader.owner_q()).select_related("content").order_by("-occurred_at", "-id")


def customer_training_texts() -> QuerySet[CustomerMessage]:
    """Customer messages whose senders consented to training use, oldest first (for the LM corpus)."""
    return CustomerMessage.objects.filter(training_consent=True).order_by("received_at", "id")


def customer_intent_examples(*, labels: Iterable[str] | None = None) -> Iterator[tuple[str, str]]:
    """(text, label) pairs from consented, labelled customer messages: one pair per label a message has.

    `labels` keeps only those labels (e.g. the intents the classifier knows); None keeps every label.
    """
    wanted = set(labels) if labels is not None else None
    rows = customer_training_texts().exclude(labels=[]).values_list("text", "labels")
    for text, message_labels in rows.iterator(chunk_size=2000):
        for label in message_labels:
            if wanted is None or label in wanted:
                yield text, label
