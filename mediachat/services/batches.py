"""Batch writes for the websocket server's group commit (mediachat/groupcommit.py).

The server gathers what its sockets want written while the previous transaction runs and writes it
together: a few statements per batch instead of a dozen per message, with the same checks, codes and
results as `message_receive`, `reply_start` and `reply_finish`. The hot path's statements are plain
SQL where the ORM's per-call compile cost more than the statement (docs/performance.md).
"""

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from personalization.identity import ReaderRef

from ..models import Conversation, Message
from . import ChatError, check_client_id, check_text


@dataclass(frozen=True)
class IncomingMessage:
    reader: ReaderRef
    text: str
    client_id: str = ""
    conversation_id: int | None = None  # None starts a new conversation


@dataclass(frozen=True)
class ReceivedMessage:
    message: Message
    created: bool  # False for a resend of a stored client_id: it is answered no second time


@dataclass(frozen=True)
class ReplyStart:
    """A reply about to stream: its row is created as reply_start would."""

    question_id: int
    conversation_id: int
    engine: str = ""  # the engine that will write it
    model_version_id: int | None = None


@dataclass(frozen=True)
class ReplyEnding:
    message_id: int
    text: str
    status: str
    cited_ids: tuple[int, ...] = ()
    decoding: dict | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None
    intent: str = ""
    confidence: float | None = None
    entities: list | None = None
    first_token_ms: int | None = None
    model_version_id: int | None = None  # None keeps the version stored when the reply started
    engine: str = ""  # the engine that wrote it, when it differs from the one named when it started
    reply_to_id: int | None = None  # the reader message it answers
    # That message's understanding (intent, confidence, source, entities, model_version_id), stored on it.
    understanding: dict | None = None


def _owned_by(reader: ReaderRef, user_id: int | None, session_key: str) -> bool:
    """Whether a conversation with these owner fields is `reader`'s."""
    if reader.user_id is not None:
        return user_id == reader.user_id
    return user_id is None and session_key == reader.session_key


def messages_receive_many(*, incoming: Sequence[IncomingMessage]) -> list[ReceivedMessage | ChatError]:
    """Persist readers' messages in one transaction.

    Item by item the result is what message_receive gives, or the ChatError that it raises. A
    `client_id` is also matched when its message is resent without the conversation it started (the
    client never learnt its id), across that reader's conversations. No reply rows: `replies_start_many`
    creates them when replies start.
    """
    results: list[ReceivedMessage | ChatError | None] = [None] * len(incoming)
    checked: list[tuple[int, IncomingMessage, str, str]] = []
    for i, item in enumerate(incoming):
        try:
            text = check_text(item.text)
            client_id = check_client_id(item.client_id)
            if not item.reader.user_id and not item.reader.session_key:
                raise ChatError("no_reader", "This connection has no session; load the chat page first.")
            if item.conversation_id is not None and (
                not isinstance(item.conversation_id, int) or isinstance(item.conversation_id, bool)
            ):
                raise ChatError("invalid_field", "'conversation_id' must be an integer.")
        except ChatError as exc:
            results[i] = exc
            continue
        checked.append((i, item, text, client_id))
    # Optimistic: a client_id is new unless the unique index says otherwise, so the usual batch costs no
    # lookup of stored client_ids (the lookup for a conversation's first message stays: no index covers it).
    # A resend, or a client_id raced in from another process, fails it: then the batch again, matched
    # against what is stored. Should that race too: alone, a retry finds it stored; else one by one.
    if _stored(checked, results, resends=False) or _stored(checked, results, resends=True):
        return results  # type: ignore[return-value]
    if len(checked) == 1:
        with transaction.atomic():
            _receive_checked(checked, results, resends=True)
    else:
        for i, item, _, _ in checked:
            results[i] = messages_receive_many(incoming=[item])[0]
    return results  # type: ignore[return-value]


def _stored(
    checked: list[tuple[int, IncomingMessage, str, str]],
    results: list[ReceivedMessage | ChatError | None],
    *,
    resends: bool,
) -> bool:
    """`_receive_checked` in a transaction of its own; False when the unique index refused a client_id."""
    try:
        with transaction.atomic():
            _receive_checked(checked, results, resends=resends)
    except IntegrityError:
        return False
    return True


def _receive_checked(
    checked: list[tuple[int, IncomingMessage, str, str]],
    results: list[ReceivedMessage | ChatError | None],
    *,
    resends: bool,
) -> None:
    """Store `checked` in the open transaction, setting each one's result; `resends`: look stored client_ids up."""
    conversation_ids = {item.conversation_id for _, item, _, _ in checked if item.conversation_id is not None}
    conversation_owners = _conversation_owners(conversation_ids)
    client_ids = {client_id for _, _, _, client_id in checked if client_id}
    stored: dict[tuple[int, str], Message] = {}
    first_messages: dict[tuple[int | None, str, str], Message] = {}
    if client_ids:
        if resends:
            found = Message.objects.filter(conversation_id__in=conversation_ids, client_id__in=client_ids)
            for message in found.exclude(client_id=""):  # the unique index's own condition: it can be used
                stored[(message.conversation_id, message.client_id)] = message
        resent = [
            (item.reader, client_id) for _, item, _, client_id in checked if client_id and not item.conversation_id
        ]
        if resent:
            owners = Q()
            for reader, _ in resent:
                owners |= reader.owner_q("conversation__")
            earlier = Message.objects.filter(owners, role=Message.Role.USER, client_id__in={c for _, c in resent})
            for message in earlier.select_related("conversation").order_by("id"):
                conversation = message.conversation
                first_messages[(conversation.user_id, conversation.session_key, message.client_id)] = message

    new_conversations: list[Conversation] = []
    pending: list[tuple[int, IncomingMessage, Message]] = []  # (result index, item, unsaved message)
    claimed: dict[tuple, Message] = {}  # client ids taken earlier in this batch
    for i, item, text, client_id in checked:
        reader = item.reader
        if item.conversation_id is None:
            owner_key = (reader.user_id, "" if reader.user_id else reader.session_key, client_id)
            duplicate = first_messages.get(owner_key) if client_id else None
            duplicate = duplicate or (claimed.get(("first", *owner_key)) if client_id else None)
            if duplicate is not None:
                results[i] = ReceivedMessage(message=duplicate, created=False)
                continue
            conversation = Conversation(title=text[:80], **reader.owner_fields())
            new_conversations.append(conversation)
            message = Message(conversation=conversation, role=Message.Role.USER, text=text, client_id=client_id)
            if client_id:
                claimed[("first", *owner_key)] = message
        else:
            conversation_id = item.conversation_id
            owner = conversation_owners.get(conversation_id)
            if owner is None or not _owned_by(reader, *owner):
                results[i] = ChatError("not_found", f"No conversation {conversation_id} for this reader.")
                continue
            duplicate = stored.get((conversation_id, client_id)) or claimed.get((conversation_id, client_id))
            if client_id and duplicate is not None:
                results[i] = ReceivedMessage(message=duplicate, created=False)
                continue
            message = Message(conversation_id=conversation_id, role=Message.Role.USER, text=text, client_id=client_id)
            if client_id:
                claimed[(conversation_id, client_id)] = message
        pending.append((i, item, message))

    if new_conversations:
        Conversation.objects.bulk_create(new_conversations)
    if not pending:
        return
    for _, item, message in pending:
        if item.conversation_id is None:
            message.conversation_id = message.conversation.pk
    _insert_rows([message for _, _, message in pending])
    touched = {message.conversation_id for _, item, message in pending if item.conversation_id is not None}
    if touched:
        _touch_conversations(touched)
    for i, _, message in pending:
        results[i] = ReceivedMessage(message=message, created=True)


def replies_start_many(*, starts: Sequence[ReplyStart]) -> list[Message]:
    """The streaming reply rows of `starts`, created in one statement, in order."""
    replies = [
        Message(
            conversation_id=start.conversation_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            reply_to_id=start.question_id,
            engine=start.engine,
            model_version_id=start.model_version_id,
        )
        for start in starts
    ]
    _insert_rows(replies)
    return replies


REPLY_ENDING_FIELDS = [
    "text",
    "status",
    "decoding",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "first_token_ms",
    "intent",
    "confidence",
    "entities",
]


UNDERSTANDING_FIELDS = ["intent", "confidence", "entities", "intent_source", "intent_model_version"]


def understanding_message(message_id: int, understanding: dict) -> Message:
    """The reader message's row with what was understood of it (Understanding.as_dict()), for UNDERSTANDING_FIELDS."""
    return Message(
        pk=message_id,
        intent=str(understanding.get("intent") or "")[:100],
        confidence=understanding.get("confidence"),
        entities=list(understanding.get("entities") or []),
        intent_source=str(understanding.get("source") or "")[:16],
        intent_model_version_id=understanding.get("model_version_id"),
    )


def _update_rows(rows: Sequence[Message], field_names: Sequence[str]) -> None:
    """UPDATE each row's `field_names` by primary key, as one statement run for many parameter rows.

    QuerySet.bulk_update writes one CASE expression per field over all rows, which here cost more
    than a millisecond a row to build and to plan; `executemany` sends the same simple UPDATE for
    every row (pipelined by psycopg) with values prepared by the fields, as `save()` would.
    """
    connection = transaction.get_connection()
    fields = [Message._meta.get_field(name) for name in field_names]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    table, pk = quote(Message._meta.db_table), quote(Message._meta.pk.column)
    sql = f"UPDATE {table} SET {assignments} WHERE {pk} = %s"  # noqa: S608 (names from the model, values as params)
    params = [[f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields] + [row.pk] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _insert_rows(rows: Sequence[Message]) -> None:
    """INSERT unsaved `rows` and set their primary keys, as bulk_create does.

    On PostgreSQL the rows travel as one JSON parameter of a statement that stays the same whatever
    their number. QuerySet.bulk_create passes every column as an array, which psycopg quotes on the
    client value by value: on the chat hot path that cost about 0.15 ms of the web process's CPU per row,
    a quarter of a message's. Ids come back in the order of the rows, as bulk_create relies on too.
    """
    if not rows:
        return
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        Message.objects.bulk_create(rows)
        return
    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    records = [{f.column: _json_value(f.pre_save(row, True)) for f in fields} for row in rows]
    sql = _json_insert_sql(connection.alias)
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(records)])
        ids = [pk for (pk,) in cursor.fetchall()]
    for row, pk in zip(rows, ids, strict=True):
        row.pk = pk
        row._state.adding = False
        row._state.db = connection.alias


@functools.cache
def _json_insert_sql(alias: str) -> str:
    connection = connections[alias]
    meta = Message._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    types = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields)
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) SELECT {columns} "  # noqa: S608 (names from the model)
        f"FROM jsonb_to_recordset(%s::jsonb) AS r({types}) RETURNING {quote(meta.pk.column)}"
    )


# The hot path's statements on conversations, as plain SQL: the ORM spent about ten times their CPU
# compiling them, a tenth of a chat message's cost in the web process (docs/performance.md).


def _conversation_owners(ids: Iterable[int]) -> dict[int, tuple[int | None, str]]:
    """Conversation id -> (user_id, session_key), for those of `ids` that exist."""
    ids = list(ids)
    if not ids:
        return {}
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    meta = Conversation._meta
    columns = ", ".join(quote(meta.get_field(name).column) for name in ("id", "user", "session_key"))
    marks = ", ".join(["%s"] * len(ids))
    sql = f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} IN ({marks})"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, ids)
        return {pk: (user_id, session_key) for pk, user_id, session_key in cursor.fetchall()}


def _touch_conversations(ids: Iterable[int]) -> None:
    """Set `updated_at` of conversations `ids` to now."""
    ids = list(ids)
    connection = transaction.get_connection()
    field = Conversation._meta.get_field("updated_at")
    quote = connection.ops.quote_name
    table, pk = quote(Conversation._meta.db_table), quote(Conversation._meta.pk.column)
    marks = ", ".join(["%s"] * len(ids))
    sql = f"UPDATE {table} SET {quote(field.column)} = %s WHERE {pk} IN ({marks})"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [field.get_db_prep_save(timezone.now(), connection), *ids])


def _json_value(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def replies_finish_many(*, endings: Sequence[ReplyEnding]) -> None:
    """Store how many replies ended, in one transaction; each as reply_finish would."""
    if not endings:
        return
    rows = [
        Message(
            pk=e.message_id,
            text=e.text,
            status=e.status,
            decoding=e.decoding or {},
            prompt_tokens=e.prompt_tokens,
            completion_tokens=e.completion_tokens,
            latency_ms=e.latency_ms,
            first_token_ms=e.first_token_ms,
            intent=e.intent,
            confidence=e.confidence,
            entities=e.entities or [],
        )
        for e in endings
    ]
    cited = [Message.cited.through(message_id=e.message_id, content_id=c) for e in endings for c in e.cited_ids]
    versioned = [Message(pk=e.message_id, model_version_id=e.model_version_id) for e in endings if e.model_version_id]
    engines = [Message(pk=e.message_id, engine=e.engine) for e in endings if e.engine]
    understood = [
        understanding_message(e.reply_to_id, e.understanding) for e in endings if e.reply_to_id and e.understanding
    ]
    with transaction.atomic():
        _update_rows(rows, REPLY_ENDING_FIELDS)
        if versioned:
            _update_rows(versioned, ["model_version"])
        if engines:
            _update_rows(engines, ["engine"])
        if cited:
            Message.cited.through.objects.bulk_create(cited, ignore_conflicts=True)
        if understood:
            _update_rows(understood, UNDERSTANDING_FIELDS)
