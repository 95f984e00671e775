"""Reads that feed training: the published catalog and the conversations and messages people consented to share.

Consent is checked here, once, for every path into a training corpus: a conversation counts only when its
reader has an account whose profile says `training_consent`; anonymous conversations never do. Customer
messages come through `personalization.selectors.customer_training_texts`, which applies their own consent.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Prefetch
from django.utils import timezone

from mediachat.models import Conversation, Message, MessageFeedback
from personalization.selectors import content_published, customer_training_texts
from training.pipelines.corpus import SourceDialogue, SourceDocument


@dataclass(frozen=True)
class ConsentedConversation:
    """A consented conversation as training reads it: turns without down-rated exchanges, and its ratings."""

    dialogue: SourceDialogue
    # Index in `dialogue.turns` of each assistant turn the reader rated up.
    rated_up_turns: tuple[int, ...]
    # Catalog items the kept assistant turns cited, by turn index.
    cited: dict[int, tuple[int, ...]]


def training_documents(now: datetime | None = None) -> list[SourceDocument]:
    """Every item published now, as the corpus reads it (title, summary, body, section, tags, authors, date…)."""
    documents = []
    for content in content_published(now).order_by("id").iterator(chunk_size=500):
        published = timezone.localdate(content.published_at) if content.published_at else None
        documents.append(
            SourceDocument(
                id=content.pk,
                title=content.title,
                summary=content.summary,
                body=content.body,
                section=content.section.name if content.section else "",
                tags=tuple(tag.name for tag in content.tags.all()),
                authors=tuple(author.name for author in content.authors.all()),
                date=published.isoformat() if published else "",
                kind=content.kind,
                url=content.reader_url,
            )
        )
    return documents


def consented_conversations() -> list[ConsentedConversation]:
    """Conversations of readers who consented to training use, oldest first.

    Only complete user and assistant messages count. An assistant reply rated down is left out together
    with the reader's message it answered, so the model never learns from it. Conversations with no
    exchange left are skipped.
    """
    messages = (
        Message.objects.filter(role__in=[Message.Role.USER, Message.Role.ASSISTANT], status=Message.Status.COMPLETE)
        .exclude(text="")
        .select_related("feedback")
        .prefetch_related("cited")
        .order_by("id")
    )
    conversations = (
        Conversation.objects.filter(user__reader_profile__training_consent=True)
        .prefetch_related(Prefetch("messages", queryset=messages, to_attr="training_messages"))
        .order_by("started_at", "id")
    )
    result = []
    for conversation in conversations.iterator(chunk_size=200):
        consented = _conversation_turns(conversation)
        if consented is not None:
            result.append(consented)
    return result


def _rating(message: Message) -> int | None:
    try:
        return message.feedback.rating
    except MessageFeedback.DoesNotExist:
        return None


def _conversation_turns(conversation: Conversation) -> ConsentedConversation | None:
    rows: list[Message] = conversation.training_messages
    answered_badly = {m.reply_to_id for m in rows if m.role == Message.Role.ASSISTANT and _rating(m) == -1}
    turns: list[tuple[str, str]] = []
    rated_up: list[int] = []
    cited: dict[int, tuple[int, ...]] = {}
    for message in rows:
        if message.pk in answered_badly:
            continue  # the question of an exchange whose reply was rated down
        rating = _rating(message)
        if message.role == Message.Role.ASSISTANT:
            if rating == -1:
                continue
            if rating == 1:
                rated_up.append(len(turns))
            cited[len(turns)] = tuple(sorted(item.pk for item in message.cited.all()))
        turns.append((message.role, message.text))
    if not any(role == Message.Role.ASSISTANT for role, _ in turns):
        return None
    return ConsentedConversation(
        dialogue=SourceDialogue(id=f"conversation:{conversation.pk}", turns=tuple(turns)),
        rated_up_turns=tuple(rated_up),
        cited=cited,
    )


def customer_dialogues() -> list[SourceDialogue]:
    """Consented customer messages, each as a one-turn dialogue (text for pre-training only)."""
    rows = customer_training_texts().values_list("pk", "text")
    return [SourceDialogue(id=f"customer:{pk}", turns=(("user", text),)) for pk, text in rows.iterator(2000) if text]
