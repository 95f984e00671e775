"""OpenAIEngine against a local server speaking the chat-completions streaming API (as vLLM does) on loopback.

The server is the stand-in for what lies outside the project; the engine, its catalog search on the real
database and its HTTP client are real.
"""

import asyncio
import json
import time
from dataclasses import dataclass, field

import pytest
from channels.db import database_sync_to_async

from mediachat.engine import EngineBusy, EngineError, EngineRequest, EngineTimeout, Turn
from mediachat.engine.decoding import DecodingParams
from mediachat.engine.openai_compat import GroundedStream, OpenAIEngine, retry_after_ms
from tests.conftest import free_port
from tests.ws_support import seed_catalog, worker_connections_closed  # noqa: F401 (autouse)
from training.pipelines.chat_format import citations_ground

db = pytest.mark.django_db(transaction=True)  # the engine searches the catalog on worker threads


@dataclass
class Script:
    """What the server answers next: a status, headers and the `data:` payloads it streams."""

    status: int = 200
    headers: dict = field(default_factory=dict)
    events: list = field(default_factory=list)  # dicts (sent as JSON) or raw strings such as "[DONE]"
    body: bytes = b""  # for an error status
    delay_s: float = 0.0  # pause before each event


def delta_events(texts: list[str], *, usage: dict | None = None) -> list:
    events: list = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in texts]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage is not None:
        events.append({"choices": [], "usage": usage})
    events.append("[DONE]")
    return events


class StreamingServer:
    """HTTP/1.1 on loopback: reads one POST per connection, answers with the script (SSE, chunked)."""

    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[dict] = []
        self.sent = 0  # events written
        self.disconnected = asyncio.Event()  # the client closed its connection before the stream ended

    async def __aenter__(self) -> "StreamingServer":
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line, *header_lines = head.strip().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        method, path, _ = request_line.split(" ")
        self.requests.append({"method": method, "path": path, "headers": headers, "json": json.loads(body)})
        script = self.script
        try:
            if script.status != 200:
                extra = "".join(f"{k}: {v}\r\n" for k, v in script.headers.items())
                writer.write(
                    f"HTTP/1.1 {script.status} Refused\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(script.body)}\r\nConnection: close\r\n\r\n".encode()
                    + script.body
                )
                await writer.drain()
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                b"Cache-Control: no-cache\r\n\r\n"
            )
            eof = asyncio.ensure_future(reader.read(1))  # b"" once the client closes its side
            for event in script.events:
                if script.delay_s:
                    await asyncio.wait([eof], timeout=script.delay_s)
                if eof.done():
                    self.disconnected.set()
                    return
                data = event if isinstance(event, str) else json.dumps(event)
                payload = f"data: {data}\n\n".encode()
                writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                await writer.drain()
                self.sent += 1
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            eof.cancel()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected.set()
        finally:
            writer.close()


@pytest.fixture
async def server(settings):
    async with StreamingServer() as server:
        settings.MEDIACHAT = {
            **settings.MEDIACHAT,
            "OPENAI_BASE_URL": server.url,
            "OPENAI_MODEL": "served-model",
            "OPENAI_API_KEY": "sk-test",
            "ENGINE_TIMEOUT_S": 10.0,
            "RECOMMENDATIONS": 3,
        }
        yield server


async def run(request: EngineRequest):
    generation = OpenAIEngine().start(request)
    pieces = [piece async for piece in generation]
    return pieces, generation.result


@db
async def test_a_grounded_reply_streams_from_the_server(server):
    items = await database_sync_to_async(seed_catalog)()
    glaciers, podcast = items[0], items[1]
    server.script = Script(
        events=delta_events(
            [" On climate", ", see [#", f"{glaciers.id}", "] and [#99", "9999] .", " Also [#", f"{podcast.id}]", "."],
            usage={"prompt_tokens": 57, "completion_tokens": 14, "total_tokens": 71},
        )
    )
    request = EngineRequest(
        text="climate",
        history=(Turn("user", "hello"), Turn("assistant", "Hi, ask me about the catalog.")),
        decoding=DecodingParams(strategy="sample", temperature=0.6, top_p=0.9, top_k=20, seed=7, max_new_tokens=64),
    )

    pieces, result = await run(request)

    raw = f" On climate, see [#{glaciers.id}] and [#9999999] . Also [#{podcast.id}]."
    assert "".join(pieces) == result.text == citations_ground(raw, {glaciers.id, podcast.id})[0]
    assert result.text == f"On climate, see [#{glaciers.id}] and. Also [#{podcast.id}]."
    assert [c.content_id for c in result.cited] == [glaciers.id, podcast.id]
    assert [r.title for r in result.recommendations] == ["Glaciers in retreat", "The climate podcast: carbon markets"]
    assert (result.prompt_tokens, result.completion_tokens) == (57, 14)
    assert result.engine == "openai" and result.intent == "search"
    assert result.decoding["model"] == "served-model" and result.decoding["finish_reason"] == "stop"

    (sent,) = server.requests
    assert sent["method"] == "POST" and sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-test"
    body = sent["json"]
    assert body["model"] == "served-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"], body["top_k"]) == (
        64,
        0.6,
        0.9,
        7,
        20,
    )
    assert body["repetition_penalty"] == 1.1
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]  # the items ride in the system turn
    system = body["messages"][0]["content"]
    assert f"[#{glaciers.id}] Glaciers in retreat (article, Science, " in system
    assert f"[#{podcast.id}] The climate podcast: carbon markets (podcast, Science, " in system
    assert "Jazz in the city" not in system
    assert body["messages"][-1]["content"] == "climate"


@db
async def test_greedy_is_temperature_zero_and_beam_is_refused(server):
    server.script = Script(events=delta_events(["Nothing ", "yet."]))
    pieces, result = await run(EngineRequest(text="climate", decoding=DecodingParams(strategy="greedy")))
    assert "".join(pieces) == result.text == "Nothing yet."
    assert result.cited == [] and result.recommendations == []
    assert result.prompt_tokens is None  # the server sent no usage
    body = server.requests[0]["json"]
    assert (body["temperature"], body["top_p"]) == (0.0, 1.0) and "top_k" not in body and "seed" not in body
    assert "Catalog items:\nNo catalog items match." in body["messages"][0]["content"]

    with pytest.raises(EngineError) as error:
        await run(EngineRequest(text="climate", decoding=DecodingParams(strategy="beam")))
    assert error.value.code == "invalid_decoding" and len(server.requests) == 1


@db
@pytest.mark.parametrize(
    ("status", "headers", "body", "error_class", "code", "retry_ms"),
    [
        (429, {"Retry-After": "3"}, b'{"error": {"message": "rate limited"}}', EngineBusy, "busy", 3000),
        (503, {}, b'{"error": {"message": "overloaded"}}', EngineBusy, "busy", 1000),
        (504, {}, b"gateway timeout", EngineTimeout, "timeout", None),
        (400, {}, b'{"error": {"message": "max_tokens is too large"}}', EngineError, "engine_error", None),
    ],
)
async def test_http_errors_become_engine_errors(server, status, headers, body, error_class, code, retry_ms):
    server.script = Script(status=status, headers=headers, body=body)
    with pytest.raises(error_class) as error:
        await run(EngineRequest(text="climate"))
    assert error.value.code == code and error.value.retry_after_ms == retry_ms
    assert f"HTTP {status}" in error.value.detail
    if status == 400:
        assert "max_tokens is too large" in error.value.detail


@db
async def test_an_error_in_the_stream_and_a_silent_server(server, settings):
    server.script = Script(events=[*delta_events(["Half "])[:2], {"error": {"message": "CUDA out of memory"}}])
    with pytest.raises(EngineError) as error:
        await run(EngineRequest(text="climate"))
    assert error.value.code == "engine_error" and "CUDA out of memory" in error.value.detail

    settings.MEDIACHAT = {**settings.MEDIACHAT, "ENGINE_TIMEOUT_S": 0.5}
    server.script = Script(events=delta_events(["slow"] * 5), delay_s=0.3)
    started = time.monotonic()
    with pytest.raises(EngineTimeout):
        await run(EngineRequest(text="climate"))
    assert time.monotonic() - started < 3


@db
async def test_no_server_is_engine_unavailable(settings):
    settings.MEDIACHAT = {**settings.MEDIACHAT, "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}
    with pytest.raises(EngineError) as error:
        await run(EngineRequest(text="climate"))
    assert error.value.code == "engine_unavailable"


@db
async def test_cancelling_the_reply_closes_the_stream(server):
    server.script = Script(events=delta_events([f"w{i} " for i in range(200)]), delay_s=0.02)
    generation = OpenAIEngine().start(EngineRequest(text="climate"))
    pieces: list[str] = []

    async def consume() -> None:
        async for piece in generation:
            pieces.append(piece)

    task = asyncio.create_task(consume())
    while len(pieces) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    await asyncio.wait_for(server.disconnected.wait(), 2)
    assert server.sent < 50  # the server stopped writing soon after: nobody reads the rest


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 64])
def test_grounding_while_streaming_equals_grounding_the_whole_text(size):
    allowed = {12, 7}
    texts = [
        "  Try [#12] and [#404] .  Or [#7],[#8] then [[#12]] end [#",
        "a [#9] b\t[#9]  c [#] d [#x] e [#12 f [12] \n [#5] .\n",
        "[#404] starts, and ends with [#7]",
        "   ",
    ]
    for text in texts:
        grounded = GroundedStream(allowed)
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        streamed = "".join(grounded.feed(c) for c in chunks) + grounded.close()
        assert streamed == citations_ground(text, allowed)[0], (text, size)


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after_ms("2") == 2000
    assert retry_after_ms(None) == 1000 and retry_after_ms("soon") == 1000
    assert retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
