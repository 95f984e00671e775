"""The chat websocket through Channels' WebsocketCommunicator and the real ASGI application.

The scope is built as a browser's would be: a `Cookie` header naming a session stored in the test
database and an `Origin` header, passed through AllowedHostsOriginValidator and AuthMiddlewareStack.
"""

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore

from mediachat.asgi import application
from mediachat.engine import Engine, EngineRequest, Generation
from mediachat.models import Conversation, Message, MessageFeedback
from personalization.identity import SESSION_READER_KEY
from tests.ws_support import cookie, reader_session, seed_catalog, worker_connections_closed  # noqa: F401 (autouse)

pytestmark = pytest.mark.django_db(transaction=True)


class FailingGeneration(Generation):
    async def __aiter__(self) -> AsyncIterator[str]:
        yield "Half "
        raise RuntimeError("the engine broke")


class FailingEngine(Engine):
    """A real engine whose generation breaks after one piece, to exercise the failure path."""

    name = "failing"

    def start(self, request: EngineRequest) -> Generation:
        return FailingGeneration()


@pytest.fixture
def chat_settings(settings):
    """The retrieval engine (the protocol's tests need replies they can predict), instant streaming and a
    generous rate limit unless a test asks otherwise. The language-model engine has its own socket tests."""
    settings.MEDIACHAT = {
        **settings.MEDIACHAT,
        "ENGINE": "mediachat.engine.retrieval.RetrievalEngine",
        "STREAM_DELAY_MS": 0,
        "WS_RATE_PER_S": 50.0,
        "WS_RATE_BURST": 50,
    }
    return settings


@pytest.fixture
async def catalog(chat_settings):
    return await database_sync_to_async(seed_catalog)()


@pytest.fixture
async def session_key(chat_settings) -> str:
    return await database_sync_to_async(reader_session)()


async def open_socket(
    session_key: str | None, *, origin: str = "http://localhost", authenticated: bool = False
) -> WebsocketCommunicator:
    headers = [(b"host", b"localhost"), (b"origin", origin.encode())]
    if session_key:
        headers.append((b"cookie", cookie(session_key).encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    welcome = await communicator.receive_json_from(timeout=5)
    assert welcome == {"type": "welcome", "protocol": 1, "max_message_chars": 2000, "authenticated": authenticated}
    return communicator


async def next_event(communicator: WebsocketCommunicator, kind: str) -> tuple[dict, list[dict]]:
    """The next event of `kind`, and the events that came before it."""
    before = []
    while True:
        event = await communicator.receive_json_from(timeout=5)
        if event["type"] == kind:
            return event, before
        before.append(event)


async def send_message(communicator: WebsocketCommunicator, text: str, **fields) -> dict:
    await communicator.send_json_to({"type": "message", "text": text, **fields})
    ack, before = await next_event(communicator, "ack")
    assert not [e for e in before if e["type"] == "error"], before
    return ack


async def ask(communicator: WebsocketCommunicator, text: str, **fields) -> tuple[dict, list[dict], dict]:
    """Send a message; returns its ack, the events of the reply, and the reply's `done`."""
    ack = await send_message(communicator, text, **fields)
    done, events = await next_event(communicator, "done")
    return ack, events, done


def count(model, **filters) -> int:
    return model.objects.filter(**filters).count()


async def test_message_is_acked_streamed_recommended_and_stored(catalog, session_key):
    climate = [c for c in catalog if "climate" in c.title.lower() or "Glaciers" in c.title]
    socket = await open_socket(session_key)
    ack, events, done = await ask(socket, "  Anything on climate?  ", client_id="c-1")

    assert ack["type"] == "ack" and ack["client_id"] == "c-1" and ack["duplicate"] is False
    tokens = [e for e in events if e["type"] == "token"]
    assert [e["type"] for e in events] == ["token"] * len(tokens) + ["recommendations"]
    assert len(tokens) > 5 and all(t["message_id"] == done["message_id"] for t in tokens)
    text = "".join(t["text"] for t in tokens)
    assert text == done["text"]
    assert text.startswith("Here are 2 pieces on climate: “")
    assert "(Science, " in text and "(Podcast, Science, " in text

    items = events[-1]["items"]
    assert {i["id"] for i in items} == {c.id for c in climate}
    by_id = {c.id: c for c in climate}
    for item in items:
        content = by_id[item["id"]]
        assert item["title"] == content.title and item["url"] == content.reader_url == f"/c/{content.slug}/"
        assert item["summary"] == content.summary and item["section"] == "Science"
        assert item["kind"] in ("article", "podcast") and item["why"] == "Matches “climate”"

    assert done["status"] == "complete" and done["reply_to"] == ack["message_id"]
    assert [c["id"] for c in done["cited"]] == [i["id"] for i in items]
    assert 0 <= done["timing"]["first_token_ms"] <= done["timing"]["total_ms"]

    question = await database_sync_to_async(Message.objects.get)(pk=ack["message_id"])
    assert (question.role, question.text, question.client_id) == ("user", "Anything on climate?", "c-1")
    assert question.conversation_id == ack["conversation_id"]
    reply = await database_sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert (reply.role, reply.status, reply.text, reply.reply_to_id) == ("assistant", "complete", text, question.id)
    assert reply.engine == "retrieval" and reply.latency_ms is not None and reply.completion_tokens == len(tokens)
    cited = await database_sync_to_async(lambda: sorted(reply.cited.values_list("id", flat=True)))()
    assert cited == sorted(c.id for c in climate)
    await socket.disconnect()


async def test_follow_up_without_topic_uses_the_previous_message(catalog, session_key):
    socket = await open_socket(session_key)
    first, _, _ = await ask(socket, "climate")
    _, events, done = await ask(socket, "more like that", conversation_id=first["conversation_id"])
    assert done["text"].startswith("More on climate: “")
    titles = {i["title"] for i in events[-1]["items"]}
    assert titles == {"Glaciers in retreat", "The climate podcast: carbon markets"}
    reply = await database_sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert reply.intent == "follow_up" and reply.entities == [{"type": "topic", "value": "climate"}]
    await socket.disconnect()


async def test_nothing_found_says_so_and_offers_what_is_new(catalog, session_key):
    socket = await open_socket(session_key)
    _, events, done = await ask(socket, "quantum chromodynamics")
    assert done["text"].startswith(
        "I couldn't find anything on quantum chromodynamics in the catalog; here is what's new: “Jazz in the city”"
    )
    items = events[-1]["items"]
    assert [i["title"] for i in items] == [
        "Jazz in the city",
        "Glaciers in retreat",
        "The climate podcast: carbon markets",
    ]
    assert all(i["why"] == "Recent and popular" for i in items) and "draft" not in done["text"]
    await socket.disconnect()


async def test_empty_catalog_reply_is_honest(session_key):
    socket = await open_socket(session_key)
    _, events, done = await ask(socket, "climate")
    assert done["text"] == "I couldn't find anything on climate in the catalog, and nothing is published yet."
    assert events[-1] == {"type": "recommendations", "message_id": done["message_id"], "items": []}
    assert done["cited"] == [] and done["status"] == "complete"
    await socket.disconnect()


async def test_resend_with_same_client_id_is_acked_as_duplicate_without_a_second_reply(catalog, session_key):
    socket = await open_socket(session_key)
    first, _, _ = await ask(socket, "climate", client_id="same")
    # Resent without the conversation (the first ack was lost) and with it: both match the stored message.
    again = await send_message(socket, "climate", client_id="same")
    again_in_conversation = await send_message(
        socket, "climate", client_id="same", conversation_id=first["conversation_id"]
    )
    for ack in (again, again_in_conversation):
        assert ack["duplicate"] is True
        assert (ack["message_id"], ack["conversation_id"]) == (first["message_id"], first["conversation_id"])
    assert await socket.receive_nothing(timeout=0.3)
    assert await database_sync_to_async(count)(Message, role="user") == 1
    assert await database_sync_to_async(count)(Message, role="assistant") == 1
    assert await database_sync_to_async(count)(Conversation) == 1
    await socket.disconnect()


async def test_feedback_is_saved_replaced_and_limited_to_own_replies(catalog, session_key):
    socket = await open_socket(session_key)
    ack, _, done = await ask(socket, "climate")
    reply_id = done["message_id"]

    await socket.send_json_to(
        {"type": "feedback", "message_id": reply_id, "rating": 1, "reasons": ["helpful", "accurate"], "comment": "ok"}
    )
    saved = await socket.receive_json_from(timeout=5)
    assert saved == {"type": "feedback_saved", "message_id": reply_id, "rating": 1, "reasons": ["accurate", "helpful"]}
    await socket.send_json_to({"type": "feedback", "message_id": reply_id, "rating": -1, "reasons": ["too_long"]})
    assert (await socket.receive_json_from(timeout=5))["rating"] == -1
    feedback = await database_sync_to_async(MessageFeedback.objects.get)(message_id=reply_id)
    assert (feedback.rating, feedback.reasons, feedback.comment) == (-1, ["too_long"], "")
    assert await database_sync_to_async(count)(MessageFeedback) == 1

    # The reader's own message is not a reply; another reader cannot rate this one.
    await socket.send_json_to({"type": "feedback", "message_id": ack["message_id"], "rating": 1})
    assert (await socket.receive_json_from(timeout=5))["code"] == "not_found"
    other = await open_socket(await database_sync_to_async(reader_session)())
    await other.send_json_to({"type": "feedback", "message_id": reply_id, "rating": 1})
    assert (await other.receive_json_from(timeout=5))["code"] == "not_found"
    assert (await database_sync_to_async(MessageFeedback.objects.get)(message_id=reply_id)).rating == -1
    await socket.disconnect()
    await other.disconnect()


async def test_history_returns_own_messages_after_an_id(catalog, session_key):
    socket = await open_socket(session_key)
    ack, _, done = await ask(socket, "climate", client_id="h-1")
    await socket.send_json_to({"type": "feedback", "message_id": done["message_id"], "rating": 1})
    await next_event(socket, "feedback_saved")

    await socket.send_json_to({"type": "history", "conversation_id": ack["conversation_id"]})
    history = await socket.receive_json_from(timeout=5)
    assert history["type"] == "history" and history["conversation_id"] == ack["conversation_id"]
    question, reply = history["messages"]
    assert question["id"] == ack["message_id"] and question["role"] == "user" and question["text"] == "climate"
    assert question["status"] == "complete" and question["reply_to"] is None and question["rating"] is None
    assert question["created_at"].startswith("20") and question["cited"] == []
    assert reply["id"] == done["message_id"] and reply["reply_to"] == ack["message_id"]
    assert (reply["role"], reply["status"], reply["text"], reply["rating"]) == (
        "assistant",
        "complete",
        done["text"],
        1,
    )
    assert sorted(reply["cited"], key=lambda c: c["id"]) == sorted(done["cited"], key=lambda c: c["id"])

    await socket.send_json_to(
        {"type": "history", "conversation_id": ack["conversation_id"], "after_id": ack["message_id"]}
    )
    assert [m["id"] for m in (await socket.receive_json_from(timeout=5))["messages"]] == [done["message_id"]]

    other = await open_socket(await database_sync_to_async(reader_session)())
    await other.send_json_to({"type": "history", "conversation_id": ack["conversation_id"]})
    assert (await other.receive_json_from(timeout=5))["code"] == "not_found"
    await other.send_json_to({"type": "history", "conversation_id": ack["conversation_id"] + 1000})
    assert (await other.receive_json_from(timeout=5))["code"] == "not_found"
    # Nor can another reader post into it.
    await other.send_json_to({"type": "message", "text": "hi", "conversation_id": ack["conversation_id"]})
    assert (await other.receive_json_from(timeout=5))["code"] == "not_found"
    assert await database_sync_to_async(count)(Message) == 2
    await socket.disconnect()
    await other.disconnect()


async def test_stop_stores_the_reply_as_interrupted_with_what_was_streamed(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "STREAM_DELAY_MS": 40}
    socket = await open_socket(session_key)
    ack = await send_message(socket, "climate")
    first, _ = await next_event(socket, "token")
    await socket.send_json_to({"type": "stop"})
    done, events = await next_event(socket, "done")
    assert [e["type"] for e in events] == ["token"] * len(events)
    streamed = first["text"] + "".join(e["text"] for e in events)
    assert done["status"] == "interrupted" and done["text"] == streamed and done["reply_to"] == ack["message_id"]
    assert done["cited"] == [] and streamed and not streamed.endswith(".")
    reply = await database_sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert (reply.status, reply.text) == ("interrupted", streamed)
    # Nothing more arrives for it, and a stop with nothing streaming is a no-op.
    await socket.send_json_to({"type": "stop"})
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()


async def test_new_message_interrupts_the_streaming_reply_first(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "STREAM_DELAY_MS": 40}
    socket = await open_socket(session_key)
    first = await send_message(socket, "climate")
    await next_event(socket, "token")
    await socket.send_json_to({"type": "message", "text": "jazz", "conversation_id": first["conversation_id"]})
    done, _ = await next_event(socket, "done")
    assert done["reply_to"] == first["message_id"] and done["status"] == "interrupted"
    second, between = await next_event(socket, "ack")
    assert [e["type"] for e in between] == []
    done, _ = await next_event(socket, "done")
    assert done["reply_to"] == second["message_id"] and done["status"] == "complete"
    assert done["text"].startswith("Here is one piece on jazz: “Jazz in the city” (Video, Culture, ")
    await socket.disconnect()


async def test_a_burst_is_answered_once_by_a_reply_to_its_last_message(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "STREAM_DELAY_MS": 40, "REPLY_BURST_MS": 1500}
    socket = await open_socket(session_key)
    first = await send_message(socket, "climate")  # the socket's first message: answered at once
    await next_event(socket, "token")
    conversation = first["conversation_id"]
    await socket.send_json_to({"type": "message", "text": "jazz", "conversation_id": conversation})
    done, _ = await next_event(socket, "done")
    assert done["reply_to"] == first["message_id"] and done["status"] == "interrupted"
    second, _ = await next_event(socket, "ack")
    third = await send_message(socket, "the ocean", conversation_id=conversation)
    # The burst's replies wait; the third message supersedes the second, which gets nothing.
    assert await socket.receive_nothing(timeout=0.8)
    done, events = await next_event(socket, "done")
    assert done["reply_to"] == third["message_id"] and done["status"] == "complete"
    assert {e["message_id"] for e in events} == {done["message_id"]}
    assert "on ocean" in done["text"]  # it answers the last message

    replies = await database_sync_to_async(
        lambda: list(Message.objects.filter(role="assistant").order_by("id").values_list("reply_to_id", "status"))
    )()
    assert replies == [(first["message_id"], "interrupted"), (third["message_id"], "complete")]
    await socket.send_json_to({"type": "history", "conversation_id": conversation, "after_id": 0})
    history, _ = await next_event(socket, "history")
    assert [(m["role"], m["reply_to"]) for m in history["messages"]] == [
        ("user", None),
        ("assistant", first["message_id"]),
        ("user", None),
        ("user", None),
        ("assistant", third["message_id"]),
    ]
    assert history["messages"][2]["id"] == second["message_id"]
    await socket.disconnect()


async def test_stop_cancels_a_reply_waiting_out_a_burst_without_a_trace(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "STREAM_DELAY_MS": 40, "REPLY_BURST_MS": 1000}
    socket = await open_socket(session_key)
    first = await send_message(socket, "climate")
    await next_event(socket, "token")  # its reply streams: the next message is a burst
    await socket.send_json_to({"type": "message", "text": "jazz", "conversation_id": first["conversation_id"]})
    done, _ = await next_event(socket, "done")
    assert done["reply_to"] == first["message_id"] and done["status"] == "interrupted"
    waiting, _ = await next_event(socket, "ack")
    await socket.send_json_to({"type": "stop"})
    assert await socket.receive_nothing(timeout=1.5)  # the burst is over: nothing was left to start
    assert await database_sync_to_async(count)(Message, reply_to_id=waiting["message_id"]) == 0
    # A message after the pause is answered at once.
    after, _, done = await ask(socket, "the ocean", conversation_id=first["conversation_id"])
    assert done["reply_to"] == after["message_id"] and done["status"] == "complete"
    assert done["timing"]["first_token_ms"] < 1000
    await socket.disconnect()


async def test_a_message_after_the_last_reply_ended_is_answered_at_once(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "REPLY_BURST_MS": 3000}
    socket = await open_socket(session_key)
    first, _, done = await ask(socket, "climate")
    assert done["status"] == "complete"
    # Well inside the burst window, but the reader waited for the reply: not a burst.
    second, _, done = await ask(socket, "jazz", conversation_id=first["conversation_id"])
    assert done["reply_to"] == second["message_id"] and done["status"] == "complete"
    assert done["timing"]["first_token_ms"] < 3000
    await socket.disconnect()


async def test_a_reply_row_that_cannot_be_stored_is_an_error_and_the_socket_goes_on(
    catalog, session_key, chat_settings
):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "STREAM_DELAY_MS": 40, "REPLY_BURST_MS": 1000}
    socket = await open_socket(session_key)
    first = await send_message(socket, "climate")
    await next_event(socket, "token")  # its reply streams: the next message is a burst
    await socket.send_json_to({"type": "message", "text": "jazz", "conversation_id": first["conversation_id"]})
    await next_event(socket, "done")  # the first reply, interrupted
    waiting, _ = await next_event(socket, "ack")
    # The conversation goes (an editor deletes it) while the reply waits out the burst: its row cannot be written.
    await database_sync_to_async(lambda: Conversation.objects.filter(pk=first["conversation_id"]).delete())()
    error, before = await next_event(socket, "error")
    assert before == [] and error["code"] == "internal_error"
    assert await database_sync_to_async(count)(Message, reply_to_id=waiting["message_id"]) == 0
    assert await socket.receive_nothing(timeout=0.3)
    after, _, done = await ask(socket, "jazz")
    assert done["reply_to"] == after["message_id"] and done["status"] == "complete"
    assert done["timing"]["first_token_ms"] < 1000
    await socket.disconnect()


async def test_disconnect_mid_reply_stores_it_as_interrupted(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "STREAM_DELAY_MS": 40}
    socket = await open_socket(session_key)
    ack = await send_message(socket, "climate")
    token, _ = await next_event(socket, "token")
    await socket.disconnect()
    await socket.wait(timeout=5)
    reply = await database_sync_to_async(Message.objects.get)(pk=token["message_id"])
    assert reply.status == "interrupted" and reply.reply_to_id == ack["message_id"]
    assert reply.text.startswith(token["text"]) and len(reply.text) < 60


async def test_engine_failure_is_stored_as_failed_and_reported(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "ENGINE": f"{__name__}.FailingEngine"}
    socket = await open_socket(session_key)
    ack = await send_message(socket, "climate")
    done, events = await next_event(socket, "done")
    assert [e["type"] for e in events] == ["token", "error"]
    assert events[1]["code"] == "internal_error"
    assert done["status"] == "failed" and done["text"] == "Half " and done["reply_to"] == ack["message_id"]
    reply = await database_sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert (reply.status, reply.text, reply.engine) == ("failed", "Half ", "failing")
    # The socket carries on.
    await socket.send_json_to({"type": "history", "conversation_id": ack["conversation_id"]})
    assert len((await socket.receive_json_from(timeout=5))["messages"]) == 2
    await socket.disconnect()


BAD_FRAMES = [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ('"a string"', "invalid_json"),
    ("{'type': 'message'}", "invalid_json"),
    ('{"text": "hi"}', "unknown_type"),
    ('{"type": "shout", "text": "hi"}', "unknown_type"),
    ('{"type": 7}', "unknown_type"),
    ('{"type": "message"}', "missing_field"),
    ('{"type": "message", "text": null}', "missing_field"),
    ('{"type": "message", "text": 5}', "invalid_field"),
    ('{"type": "message", "text": ["hi"]}', "invalid_field"),
    ('{"type": "message", "text": "hi", "conversation_id": "7"}', "invalid_field"),
    ('{"type": "message", "text": "hi", "conversation_id": true}', "invalid_field"),
    ('{"type": "message", "text": "hi", "conversation_id": 1.5}', "invalid_field"),
    ('{"type": "message", "text": "hi", "conversation_id": 100000000000000000000000}', "invalid_field"),
    ('{"type": "message", "text": "hi", "conversation_id": 987654}', "not_found"),
    ('{"type": "message", "text": "hi", "client_id": 12}', "invalid_field"),
    ('{"type": "message", "text": "hi", "client_id": "' + "x" * 65 + '"}', "invalid_field"),
    ('{"type": "message", "text": "hi", "client_id": "a\\ud800"}', "invalid_field"),
    ('{"type": "message", "text": ""}', "empty_text"),
    ('{"type": "message", "text": " \\n\\t "}', "empty_text"),
    ('{"type": "message", "text": "' + "a" * 2001 + '"}', "text_too_long"),
    ('{"type": "message", "text": "a\\u0000b"}', "invalid_text"),
    ('{"type": "message", "text": "lone \\ud800 surrogate"}', "invalid_text"),
    ('{"type": "message", "text": "lone \\udfff low"}', "invalid_text"),
    ('{"type": "feedback", "rating": 1}', "missing_field"),
    ('{"type": "feedback", "message_id": 1}', "missing_field"),
    ('{"type": "feedback", "message_id": "1", "rating": 1}', "invalid_field"),
    ('{"type": "feedback", "message_id": 1, "rating": 5}', "invalid_field"),
    ('{"type": "feedback", "message_id": 1, "rating": true}', "invalid_field"),
    ('{"type": "feedback", "message_id": 1, "rating": 1, "reasons": ["bad"]}', "invalid_field"),
    ('{"type": "feedback", "message_id": 1, "rating": 1, "reasons": "wrong"}', "invalid_field"),
    ('{"type": "feedback", "message_id": 1, "rating": 1, "comment": 3}', "invalid_field"),
    ('{"type": "feedback", "message_id": 1, "rating": 1, "comment": "' + "c" * 2001 + '"}', "invalid_field"),
    ('{"type": "feedback", "message_id": 987654, "rating": 1}', "not_found"),
    ('{"type": "history"}', "missing_field"),
    ('{"type": "history", "conversation_id": "x"}', "invalid_field"),
    ('{"type": "history", "conversation_id": 1, "after_id": -1}', "invalid_field"),
    ('{"type": "history", "conversation_id": 987654}', "not_found"),
]


async def test_bad_frames_get_an_error_each_and_the_socket_stays_open(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "WS_RATE_BURST": 100}
    socket = await open_socket(session_key)
    for frame, code in BAD_FRAMES:
        await socket.send_to(text_data=frame)
        error = await socket.receive_json_from(timeout=5)
        assert (error["type"], error["code"]) == ("error", code), frame
        assert error["detail"], frame
    assert await database_sync_to_async(count)(Message) == 0
    assert await database_sync_to_async(count)(Conversation) == 0
    # Still open: a good message goes through.
    _, _, done = await ask(socket, "climate")
    assert done["status"] == "complete"
    await socket.disconnect()


async def test_binary_frame_is_refused_and_the_socket_stays_open(catalog, session_key):
    socket = await open_socket(session_key)
    await socket.send_to(bytes_data=json.dumps({"type": "message", "text": "climate"}).encode())
    error = await socket.receive_json_from(timeout=5)
    assert error["code"] == "binary_not_supported"
    assert await database_sync_to_async(count)(Message) == 0
    await ask(socket, "climate")
    await socket.disconnect()


async def test_error_about_a_message_carries_its_client_id(catalog, session_key):
    socket = await open_socket(session_key)
    await socket.send_json_to({"type": "message", "text": "", "client_id": "abc"})
    assert await socket.receive_json_from(timeout=5) == {
        "type": "error",
        "code": "empty_text",
        "detail": "'text' is empty.",
        "client_id": "abc",
    }
    await socket.disconnect()


async def test_rate_limit_is_a_token_bucket_per_socket(catalog, session_key, chat_settings):
    chat_settings.MEDIACHAT = {**chat_settings.MEDIACHAT, "WS_RATE_PER_S": 1.0, "WS_RATE_BURST": 3}
    socket = await open_socket(session_key)
    for i in range(5):
        await socket.send_json_to({"type": "message", "text": "climate", "client_id": f"r-{i}"})
    answers = {}
    while len(answers) < 5:
        event = await socket.receive_json_from(timeout=5)
        if event["type"] in ("ack", "error"):
            answers[event["client_id"]] = event
    assert [answers[f"r-{i}"]["type"] for i in range(5)] == ["ack", "ack", "ack", "error", "error"]
    assert {answers[f"r-{i}"]["code"] for i in (3, 4)} == {"rate_limited"}
    assert await database_sync_to_async(count)(Message, role="user") == 3
    # Another socket has its own bucket, and this one refills.
    other = await open_socket(session_key)
    await send_message(other, "climate")
    await asyncio.sleep(1.1)
    await send_message(socket, "climate", client_id="r-3")
    await socket.disconnect()
    await other.disconnect()


async def test_socket_without_a_session_has_no_reader(catalog, chat_settings):
    for session_key in (None, "no-such-session-key-0123456789"):
        socket = await open_socket(session_key)
        await socket.send_json_to({"type": "message", "text": "climate", "client_id": "n-1"})
        error = await socket.receive_json_from(timeout=5)
        assert (error["code"], error["client_id"]) == ("no_reader", "n-1")
        await socket.send_json_to({"type": "history", "conversation_id": 1})
        assert (await socket.receive_json_from(timeout=5))["code"] == "no_reader"
        await socket.disconnect()
    assert await database_sync_to_async(count)(Message) == 0
    assert await database_sync_to_async(count)(Conversation) == 0


async def test_session_without_reader_key_gets_one_on_connect(catalog, chat_settings):
    key = await database_sync_to_async(reader_session)(with_reader_key=False)
    socket = await open_socket(key)
    ack, _, _ = await ask(socket, "climate")
    reader_key = (await database_sync_to_async(SessionStore(session_key=key).load)())[SESSION_READER_KEY]
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=ack["conversation_id"])
    assert conversation.session_key == reader_key and conversation.user_id is None
    await socket.disconnect()


async def test_signed_in_reader_owns_the_conversation(catalog, chat_settings):
    def signed_in_session() -> tuple[int, str]:
        user = get_user_model().objects.create_user(username="reader", password="a-long-password-1")
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        return user.pk, session.session_key

    user_id, key = await database_sync_to_async(signed_in_session)()
    socket = await open_socket(key, authenticated=True)
    ack, _, _ = await ask(socket, "climate")
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=ack["conversation_id"])
    assert (conversation.user_id, conversation.session_key) == (user_id, "")
    await socket.disconnect()


async def test_foreign_origin_is_refused(session_key):
    communicator = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[
            (b"host", b"localhost"),
            (b"origin", b"http://evil.example"),
            (b"cookie", cookie(session_key).encode()),
        ],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected is False
    await communicator.disconnect()  # ends the denying consumer (and its channel-layer receive) cleanly
