"""Writes to conversations: receiving a reader's message, storing the assistant's reply, feedback.

The group commit's batch versions of these, many sockets' writes at once, are in `batches.py`.

Every function validates with the `check_*` helpers first, so the websocket and the REST API reject
the same bad input with the same codes, and nothing invalid reaches the database.
"""

from collections.abc import Iterable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from personalization.identity import ReaderRef

from ..models import Conversation, Message, MessageFeedback

FEEDBACK_REASONS = frozenset({"helpful", "accurate", "off_topic", "wrong", "too_long", "too_short", "unsafe", "other"})
MAX_COMMENT_CHARS = 2000


class ChatError(Exception):
    """A refusal the client can act on: `code` is stable, `detail` is for people."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def check_text(text: object, *, field: str = "text", limit: int | None = None, allow_empty: bool = False) -> str:
    """Return `text` stripped, or raise ChatError for a wrong type, empty, too long, NUL or lone surrogates."""
    if not isinstance(text, str):
        raise ChatError("invalid_field", f"'{field}' must be a string.")
    if limit is None:
        limit = settings.MEDIACHAT["MAX_MESSAGE_CHARS"]
    if "\x00" in text:
        raise ChatError("invalid_text", f"'{field}' contains a NUL character.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ChatError("invalid_text", f"'{field}' contains a lone surrogate.") from None
    text = text.strip()
    if not text and not allow_empty:
        raise ChatError("empty_text", f"'{field}' is empty.")
    if len(text) > limit:
        raise ChatError("text_too_long", f"'{field}' has {len(text)} characters; the limit is {limit}.")
    return text


def check_client_id(client_id: object) -> str:
    if client_id is None:
        return ""
    if not isinstance(client_id, str) or len(client_id) > 64 or "\x00" in client_id:
        raise ChatError("invalid_field", "'client_id' must be a string of at most 64 characters.")
    return client_id


def conversation_for_reader(*, reader: ReaderRef, conversation_id: int | None) -> Conversation:
    """The reader's conversation `conversation_id`; raises ChatError("not_found") for anyone else's."""
    if not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
        raise ChatError("invalid_field", "'conversation_id' must be an integer.")
    conversation = Conversation.objects.filter(reader.owner_q(), pk=conversation_id).first()
    if conversation is None:
        raise ChatError("not_found", f"No conversation {conversation_id} for this reader.")
    return conversation


def message_receive(
    *, reader: ReaderRef, text: object, client_id: object = None, conversation_id: int | None = None
) -> tuple[Message, bool]:
    """Persist a reader's message (a new conversation if none is given).

    Idempotent on `client_id` within a conversation: a resend returns the stored message and False.
    """
    text = check_text(text)
    client_id = check_client_id(client_id)
    if not reader.user_id and not reader.session_key:
        raise ChatError("no_reader", "This connection has no session; load the chat page first.")
    with transaction.atomic():
        if conversation_id is None:
            conversation = Conversation.objects.create(title=text[:80], **reader.owner_fields())
        else:
            conversation = conversation_for_reader(reader=reader, conversation_id=conversation_id)
            if client_id:
                existing = conversation.messages.filter(client_id=client_id).first()
                if existing is not None:
                    return existing, False
        try:
            with transaction.atomic():
                message = Message.objects.create(
                    conversation=conversation, role=Message.Role.USER, text=text, client_id=client_id
                )
        except IntegrityError:  # the same client_id raced in from a second socket
            return conversation.messages.get(client_id=client_id), False
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    return message, True


def reply_start(*, question: Message, engine: str, model_version_id: int | None = None) -> Message:
    """Create the assistant's reply row, streaming, so tokens can name its id."""
    return Message.objects.create(
        conversation_id=question.conversation_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        reply_to=question,
        engine=engine,
        model_version_id=model_version_id,
    )


def reply_finish(
    *,
    message_id: int,
    text: str,
    status: str = Message.Status.COMPLETE,
    cited_ids: Iterable[int] = (),
    decoding: dict | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    latency_ms: int | None = None,
    intent: str = "",
    confidence: float | None = None,
    entities: list | None = None,
) -> None:
    """Store the reply as it ended: complete, interrupted (with what was streamed) or failed."""
    with transaction.atomic():
        Message.objects.filter(pk=message_id).update(
            text=text,
            status=status,
            decoding=decoding or {},
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
            intent=intent,
            confidence=confidence,
            entities=entities or [],
        )
        cited = list(cited_ids)
        if cited:
            Message.cited.through.objects.bulk_create(
                [Message.cited.through(message_id=message_id, content_id=c) for c in cited], ignore_conflicts=True
            )


def messages_after(*, reader: ReaderRef, conversation_id: int, after_id: int = 0, limit: int = 200) -> list[Message]:
    """The reader's messages in a conversation after `after_id`, oldest first, with citations loaded."""
    conversation = conversation_for_reader(reader=reader, conversation_id=conversation_id)
    if not isinstance(after_id, int) or isinstance(after_id, bool) or after_id < 0:
        raise ChatError("invalid_field", "'after_id' must be a non-negative integer.")
    return list(
        conversation.messages.filter(pk__gt=after_id)
        .select_related("feedback")
        .prefetch_related("cited")
        .order_by("id")[:limit]
    )


def feedback_set(
    *, reader: ReaderRef, message_id: object, rating: object, reasons: object = None, comment: object = ""
) -> MessageFeedback:
    """Rate an assistant message of the reader's own; a second rating replaces the first."""
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ChatError("invalid_field", "'message_id' must be an integer.")
    if rating not in (MessageFeedback.Rating.UP, MessageFeedback.Rating.DOWN) or isinstance(rating, bool):
        raise ChatError("invalid_field", "'rating' must be 1 (helpful) or -1 (not helpful).")
    reasons = reasons or []
    if not isinstance(reasons, list) or any(r not in FEEDBACK_REASONS for r in reasons):
        raise ChatError("invalid_field", f"'reasons' must be a list drawn from {sorted(FEEDBACK_REASONS)}.")
    comment = check_text(comment or "", field="comment", limit=MAX_COMMENT_CHARS, allow_empty=True)
    message = (
        Message.objects.filter(reader.owner_q("conversation__"), pk=message_id, role=Message.Role.ASSISTANT)
        .only("id")
        .first()
    )
    if message is None:
        raise ChatError("not_found", f"No assistant message {message_id} for this reader.")
    feedback, _ = MessageFeedback.objects.update_or_create(
        message=message, defaults={"rating": rating, "reasons": sorted(set(reasons)), "comment": comment}
    )
    return feedback


def replies_interrupt_streaming(*, conversation_ids: Iterable[int]) -> int:
    """Mark replies left streaming (a server that died mid-reply) as interrupted."""
    return Message.objects.filter(conversation_id__in=list(conversation_ids), status=Message.Status.STREAMING).update(
        status=Message.Status.INTERRUPTED
    )
