"""The group commit behind the chat socket: batch services against the real database, and many sockets at once."""

import asyncio
import secrets

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from mediachat.groupcommit import group_commit
from mediachat.models import Conversation, Message
from mediachat.services import ChatError, message_receive, reply_finish, reply_start
from mediachat.services.batches import (
    IncomingMessage,
    ReceivedMessage,
    ReplyEnding,
    ReplyStart,
    messages_receive_many,
    replies_finish_many,
    replies_start_many,
)
from personalization.identity import ReaderRef
from personalization.models import Content
from tests.ws_support import seed_catalog, worker_connections_closed  # noqa: F401 (autouse)


def anonymous() -> ReaderRef:
    return ReaderRef(user_id=None, session_key=secrets.token_hex(16))


@pytest.mark.django_db
def test_a_batch_gives_each_item_what_message_receive_would():
    alice, bob = anonymous(), anonymous()
    stored, _ = message_receive(reader=alice, text="first", client_id="a-0")
    conversation = stored.conversation
    bobs, _ = message_receive(reader=bob, text="mine", client_id="b-0")
    before = Conversation.objects.get(pk=conversation.pk).updated_at

    incoming = [
        IncomingMessage(reader=alice, text="  climate  ", client_id="a-1", conversation_id=conversation.pk),
        IncomingMessage(reader=alice, text="again", client_id="a-0", conversation_id=conversation.pk),
        IncomingMessage(reader=alice, text="twice", client_id="a-2", conversation_id=conversation.pk),
        IncomingMessage(reader=alice, text="twice", client_id="a-2", conversation_id=conversation.pk),
        IncomingMessage(reader=alice, text="first", client_id="a-0"),  # a resent first message
        IncomingMessage(reader=alice, text="new topic", client_id="a-9"),
        IncomingMessage(reader=alice, text="no id", conversation_id=conversation.pk),
        IncomingMessage(reader=alice, text="not mine", client_id="a-3", conversation_id=bobs.conversation_id),
        IncomingMessage(reader=alice, text="gone", conversation_id=987654),
        IncomingMessage(reader=alice, text="   "),
        IncomingMessage(reader=alice, text="x" * 2001),
        IncomingMessage(reader=alice, text="nul\x00"),
        IncomingMessage(reader=ReaderRef(user_id=None), text="who"),
        IncomingMessage(reader=bob, text="bob's", client_id="a-1", conversation_id=bobs.conversation_id),
    ]
    results = messages_receive_many(incoming=incoming)

    created = [r for r in results if isinstance(r, ReceivedMessage) and r.created]
    assert [r.message.text for r in created] == ["climate", "twice", "new topic", "no id", "bob's"]
    for result in created:
        stored_row = Message.objects.get(pk=result.message.pk)
        assert (stored_row.role, stored_row.text, stored_row.conversation_id) == (
            "user",
            result.message.text,
            result.message.conversation_id,
        )
    assert results[1].created is False and results[1].message.pk == stored.pk
    assert results[3].created is False and results[3].message.pk == results[2].message.pk
    assert results[4].created is False and results[4].message.pk == stored.pk
    new_conversation = Conversation.objects.get(pk=results[5].message.conversation_id)
    assert new_conversation.title == "new topic" and new_conversation.session_key == alice.session_key
    codes = [r.code for r in results if isinstance(r, ChatError)]
    assert codes == ["not_found", "not_found", "empty_text", "text_too_long", "invalid_text", "no_reader"]
    assert Conversation.objects.get(pk=conversation.pk).updated_at > before
    # Nothing else was written: no message for a refused one, and no reply row before a reply starts.
    assert Message.objects.filter(role="user").count() == 2 + 5
    assert not Message.objects.filter(role="assistant").exists()

    replies = replies_start_many(
        starts=[
            ReplyStart(question_id=r.message.pk, conversation_id=r.message.conversation_id, engine="retrieval")
            for r in created
        ]
    )
    for reply, result in zip(replies, created, strict=True):
        stored_reply = Message.objects.get(pk=reply.pk)
        assert (stored_reply.role, stored_reply.status, stored_reply.reply_to_id, stored_reply.text) == (
            "assistant",
            "streaming",
            result.message.pk,
            "",
        )
        assert (stored_reply.engine, stored_reply.conversation_id) == ("retrieval", result.message.conversation_id)


@pytest.mark.django_db
def test_batch_and_single_services_store_the_same_rows():
    reader = anonymous()
    single, _ = message_receive(reader=reader, text=" Same text ", client_id="s-1")
    single_reply = reply_start(question=single, engine="retrieval")
    [batched] = messages_receive_many(incoming=[IncomingMessage(reader=reader, text=" Same text ", client_id="s-2")])
    [batched_reply] = replies_start_many(
        starts=[
            ReplyStart(
                question_id=batched.message.pk, conversation_id=batched.message.conversation_id, engine="retrieval"
            )
        ]
    )
    fields = ["role", "text", "status", "engine", "model_version_id", "intent", "entities", "decoding", "confidence"]
    fields += ["intent_source", "intent_model_version_id", "prompt_tokens", "completion_tokens", "latency_ms"]

    def row(message: Message) -> dict:
        message.refresh_from_db()
        return {f: getattr(message, f) for f in fields}

    assert row(single) == row(batched.message)
    assert row(single_reply) == row(batched_reply)
    assert (batched_reply.reply_to_id, batched.message.client_id) == (batched.message.pk, "s-2")
    # created_at as the database stores it, set on the way in as auto_now_add does
    assert abs((batched.message.created_at - single.created_at).total_seconds()) < 5
    assert Message.objects.get(pk=batched.message.pk).created_at == batched.message.created_at


@pytest.mark.django_db
def test_many_endings_are_stored_as_reply_finish_would():
    contents = seed_catalog()
    reader = anonymous()
    replies = replies_start_many(
        starts=[
            ReplyStart(question_id=r.message.pk, conversation_id=r.message.conversation_id)
            for r in messages_receive_many(incoming=[IncomingMessage(reader=reader, text=f"q{i}") for i in range(3)])
        ]
    )
    reference, _ = message_receive(reader=reader, text="reference")
    reference_reply = reply_start(question=reference, engine="")
    ending = {
        "text": "Here are 2 pieces on “climate”: ünïcode",
        "status": Message.Status.COMPLETE,
        "decoding": {"strategy": "template", "limit": 3},
        "prompt_tokens": 1,
        "completion_tokens": 9,
        "latency_ms": 42,
        "intent": "search",
        "confidence": 0.5,
        "entities": [{"type": "topic", "value": "climate"}],
    }
    reply_finish(message_id=reference_reply.pk, cited_ids=[contents[0].pk, contents[1].pk], **ending)
    replies_finish_many(
        endings=[
            ReplyEnding(message_id=replies[0].pk, cited_ids=(contents[0].pk, contents[1].pk), **ending),
            ReplyEnding(message_id=replies[1].pk, text="Here are", status=Message.Status.INTERRUPTED),
            ReplyEnding(message_id=replies[2].pk, text="", status=Message.Status.FAILED, completion_tokens=0),
        ]
    )
    fields = ["text", "status", "decoding", "prompt_tokens", "completion_tokens", "latency_ms", "intent"]
    fields += ["confidence", "entities"]
    expected = Message.objects.values(*fields).get(pk=reference_reply.pk)
    assert Message.objects.values(*fields).get(pk=replies[0].pk) == expected
    assert sorted(Message.objects.get(pk=replies[0].pk).cited.values_list("pk", flat=True)) == sorted(
        c.pk for c in contents[:2]
    )
    interrupted = Message.objects.get(pk=replies[1].pk)
    assert (interrupted.status, interrupted.text, interrupted.decoding, interrupted.entities) == (
        "interrupted",
        "Here are",
        {},
        [],
    )
    assert interrupted.latency_ms is None and interrupted.confidence is None
    failed = Message.objects.get(pk=replies[2].pk)
    assert (failed.status, failed.completion_tokens) == ("failed", 0)
    assert Content.objects.filter(cited_in=replies[1].pk).count() == 0


@pytest.mark.django_db(transaction=True)
async def test_concurrent_receives_are_all_stored_and_a_racing_resend_is_named():
    readers = [anonymous() for _ in range(20)]
    writer = group_commit()
    started = timezone.now()
    results = await asyncio.gather(
        *(
            writer.receive(IncomingMessage(reader=r, text=f"hello {i}", client_id="same"))
            for i, r in enumerate(readers)
        ),
        # The same reader resending at once: one is stored, the other names it.
        writer.receive(IncomingMessage(reader=readers[0], text="hello 0", client_id="same")),
        return_exceptions=True,
    )
    assert all(isinstance(r, ReceivedMessage) for r in results), results
    assert sum(r.created for r in results) == 20
    assert results[-1].message.pk == results[0].message.pk
    stored = await database_sync_to_async(
        lambda: sorted(Message.objects.filter(role="user", created_at__gte=started).values_list("text", flat=True))
    )()
    assert stored == sorted(f"hello {i}" for i in range(20))
    replies = await asyncio.gather(
        *(
            writer.start(ReplyStart(question_id=r.message.pk, conversation_id=r.message.conversation_id))
            for r in results[:20]
        )
    )
    assert [reply.reply_to_id for reply in replies] == [r.message.pk for r in results[:20]]
    await asyncio.gather(
        *(writer.finish(ReplyEnding(message_id=reply.pk, text="ok", status="complete")) for reply in replies)
    )
    statuses = await database_sync_to_async(
        lambda: set(Message.objects.filter(role="assistant").values_list("status", flat=True))
    )()
    assert statuses == {"complete"}


async def _drop_pool_connections(threads: int = 4) -> int:
    """Drop the connections of the loop's pool threads (where flushes run), as a PostgreSQL restart would."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(threads)

    def backend_pid() -> int | None:
        barrier.wait(timeout=10)  # one call per thread: each waits until all threads hold one
        if connection.connection is None:
            return None
        return connection.connection.info.backend_pid

    loop = asyncio.get_running_loop()
    pids = {pid for pid in await asyncio.gather(*(loop.run_in_executor(None, backend_pid) for _ in range(threads)))}
    pids.discard(None)

    def terminate() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS pid", [sorted(pids)])
            return cursor.fetchone()[0]

    return await database_sync_to_async(terminate)()


@pytest.mark.django_db(transaction=True)
async def test_a_flush_survives_a_connection_the_server_dropped():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: only a database server can drop a worker's connection")
    reader = anonymous()
    first = await group_commit().receive(IncomingMessage(reader=reader, text="before", client_id="k-1"))
    assert await _drop_pool_connections() >= 1  # the flush worker's kept connection among them

    results = await asyncio.gather(
        *(
            group_commit().receive(
                IncomingMessage(
                    reader=reader, text=f"after {i}", client_id=f"k-{i}", conversation_id=first.message.conversation_id
                )
            )
            for i in range(2, 6)
        )
    )
    assert all(r.created for r in results)
    stored = await database_sync_to_async(
        lambda: list(Message.objects.filter(role="user").order_by("id").values_list("text", flat=True))
    )()
    assert stored == ["before", "after 2", "after 3", "after 4", "after 5"]
