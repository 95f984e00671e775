"""The chat websocket over a real uvicorn on loopback, driven by the `websockets` client library."""

import asyncio
import json
import subprocess
import sys
import time

import httpx
import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mediachat.models import Message, MessageFeedback
from tests.conftest import ROOT, child_env
from tests.ws_support import cookie, reader_session, seed_catalog, worker_connections_closed  # noqa: F401 (autouse)

pytestmark = pytest.mark.django_db(transaction=True)


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/ws/chat/"


async def open_socket(base_url: str, session_key: str | None, *, origin: str | None = None) -> ClientConnection:
    headers = {"Cookie": cookie(session_key)} if session_key else {}
    socket = await connect(
        ws_url(base_url), origin=origin or base_url, additional_headers=headers, proxy=None, open_timeout=10
    )
    welcome = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert welcome["type"] == "welcome" and welcome["protocol"] == 1
    return socket


async def next_event(socket: ClientConnection, kind: str) -> tuple[dict, list[dict]]:
    before = []
    while True:
        event = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if event["type"] == kind:
            return event, before
        before.append(event)


async def send(socket: ClientConnection, **frame) -> None:
    await socket.send(json.dumps(frame))


async def round_trip(socket: ClientConnection, text: str, **fields) -> tuple[dict, list[dict], dict]:
    await send(socket, type="message", text=text, **fields)
    ack, before = await next_event(socket, "ack")
    assert before == []
    done, events = await next_event(socket, "done")
    return ack, events, done


def check_reply(ack: dict, events: list[dict], done: dict) -> None:
    tokens = [e for e in events if e["type"] == "token"]
    assert [e["type"] for e in events] == ["token"] * len(tokens) + ["recommendations"]
    assert len(tokens) > 5
    assert "".join(t["text"] for t in tokens) == done["text"]
    assert done["text"].startswith("Here are 2 pieces on climate: “")
    assert {i["title"] for i in events[-1]["items"]} == {"Glaciers in retreat", "The climate podcast: carbon markets"}
    assert done["status"] == "complete" and done["reply_to"] == ack["message_id"]


async def test_chat_round_trip_with_the_page_cookie(asgi_server):
    await database_sync_to_async(seed_catalog)()
    async with httpx.AsyncClient(base_url=asgi_server) as client:
        page = await client.get("/")
    assert page.status_code == 200
    session_key = page.cookies[settings.SESSION_COOKIE_NAME]

    socket = await open_socket(asgi_server, session_key)
    ack, events, done = await round_trip(socket, "climate", client_id="srv-1")
    check_reply(ack, events, done)
    assert ack["client_id"] == "srv-1" and ack["duplicate"] is False

    await send(socket, type="feedback", message_id=done["message_id"], rating=-1, reasons=["too_short"])
    saved, _ = await next_event(socket, "feedback_saved")
    assert saved == {"type": "feedback_saved", "message_id": done["message_id"], "rating": -1, "reasons": ["too_short"]}
    feedback = await database_sync_to_async(MessageFeedback.objects.get)(message_id=done["message_id"])
    assert (feedback.rating, feedback.reasons) == (-1, ["too_short"])
    reply = await database_sync_to_async(Message.objects.get)(pk=done["message_id"])
    assert (reply.status, reply.text) == ("complete", done["text"])
    await socket.close()


async def wait_for_status(message_id: int, timeout: float = 10.0) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        message = await database_sync_to_async(Message.objects.get)(pk=message_id)
        if message.status != Message.Status.STREAMING or time.monotonic() > deadline:
            return message
        await asyncio.sleep(0.05)


async def test_forced_disconnect_mid_reply_then_history_resync(asgi_server):
    await database_sync_to_async(seed_catalog)()
    session_key = await database_sync_to_async(reader_session)()

    socket = await open_socket(asgi_server, session_key)
    first, _, first_done = await round_trip(socket, "jazz")
    last_seen = first_done["message_id"]
    conversation_id = first["conversation_id"]

    await send(socket, type="message", text="climate", client_id="before-drop", conversation_id=conversation_id)
    ack, _ = await next_event(socket, "ack")
    token, _ = await next_event(socket, "token")
    socket.transport.abort()  # the connection dies mid-reply, without a closing handshake

    reply = await wait_for_status(token["message_id"])
    assert reply.status == Message.Status.INTERRUPTED and reply.reply_to_id == ack["message_id"]
    assert reply.text.startswith(token["text"]) and not reply.text.endswith(".")

    again = await open_socket(asgi_server, session_key)
    await send(again, type="history", conversation_id=conversation_id, after_id=last_seen)
    history, _ = await next_event(again, "history")
    missed = history["messages"]
    assert [(m["id"], m["role"], m["status"]) for m in missed] == [
        (ack["message_id"], "user", "complete"),
        (reply.id, "assistant", "interrupted"),
    ]
    assert missed[0]["text"] == "climate" and missed[1]["text"] == reply.text
    assert missed[1]["reply_to"] == ack["message_id"]

    # Resending what had no ack is safe: the stored message is named, and no second reply is written.
    await send(again, type="message", text="climate", client_id="before-drop", conversation_id=conversation_id)
    duplicate, _ = await next_event(again, "ack")
    assert duplicate["duplicate"] is True and duplicate["message_id"] == ack["message_id"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(again.recv(), 0.5)
    assert await database_sync_to_async(Message.objects.filter(conversation_id=conversation_id).count)() == 4
    await again.close()


async def test_oversized_frame_closes_the_socket_and_a_new_one_works(asgi_server):
    await database_sync_to_async(seed_catalog)()
    session_key = await database_sync_to_async(reader_session)()
    socket = await open_socket(asgi_server, session_key)
    big = json.dumps({"type": "message", "text": "x" * (3 * 1024 * 512)})  # 1.5 MiB
    await socket.send(big)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert await database_sync_to_async(Message.objects.count)() == 0

    socket = await open_socket(asgi_server, session_key)
    check_reply(*await round_trip(socket, "climate"))
    await socket.close()


async def test_foreign_or_missing_origin_is_refused(asgi_server):
    session_key = await database_sync_to_async(reader_session)()
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(asgi_server, session_key, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        await connect(ws_url(asgi_server), additional_headers={"Cookie": cookie(session_key)}, proxy=None)


def embedded_env(tmp_path) -> dict[str, str]:
    """The environment the `embedded_asgi_server` fixture gives its server."""
    env = child_env()
    env.pop("REDIS_URL", None)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    env["MEDIACHAT_DATA_DIR"] = str(tmp_path)
    return env


async def test_chat_round_trip_on_the_embedded_default(embedded_asgi_server, tmp_path):
    seeded = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from tests.ws_support import reader_session, seed_catalog; seed_catalog(); print(reader_session())",
        ],
        cwd=ROOT,
        env=embedded_env(tmp_path),
        check=True,
        capture_output=True,
        text=True,
    )
    session_key = seeded.stdout.strip().splitlines()[-1]

    socket = await open_socket(embedded_asgi_server, session_key)
    ack, events, done = await round_trip(socket, "climate", client_id="emb-1")
    check_reply(ack, events, done)
    await send(socket, type="history", conversation_id=ack["conversation_id"])
    history, _ = await next_event(socket, "history")
    assert [(m["role"], m["status"]) for m in history["messages"]] == [("user", "complete"), ("assistant", "complete")]
    await socket.close()
    # The embedded server wrote to its own SQLite file, not to the test database.
    assert await database_sync_to_async(Message.objects.count)() == 0
