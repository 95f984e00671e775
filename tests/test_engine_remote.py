"""The engine in its own process: real `manage.py run_engine` processes on Redis, the client in this one."""

import asyncio
import dataclasses
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgpack
import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from mediachat.engine import (
    Citation,
    Engine,
    EngineBusy,
    EngineError,
    EngineRequest,
    EngineResult,
    Generation,
    Recommendation,
    Turn,
)
from mediachat.engine.decoding import DecodingParams
from mediachat.engine.remote import ChannelLayerEngine, cancels_flush
from mediachat.engine.remote_server import ReplyWriter
from mediachat.engine.retrieval import RetrievalEngine
from mediachat.engine.wire import (
    EngineUnavailable,
    StreamBroken,
    request_from_wire,
    request_to_wire,
    result_from_wire,
    result_to_wire,
)
from tests.conftest import ROOT, child_env, free_port, stop, wait_until
from tests.ws_support import seed_catalog, worker_connections_closed  # noqa: F401 (autouse)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]  # engine processes read the catalog

RETRIEVAL = "mediachat.engine.retrieval.RetrievalEngine"
ACCEPT_S = 2.0


class ManyPiecesEngine(Engine):
    """Served by a test's engine process: a long reply written as fast as the loop allows."""

    name = "many-pieces"
    pieces = 3000

    def start(self, request: EngineRequest) -> Generation:
        return ManyPiecesGeneration(request)


class ManyPiecesGeneration(Generation):
    def __init__(self, request: EngineRequest):
        super().__init__()
        self.request = request

    async def __aiter__(self) -> AsyncIterator[str]:
        for i in range(ManyPiecesEngine.pieces):
            yield f"w{i} "
            if i % 100 == 0:
                await asyncio.sleep(0)
        self._result = EngineResult(text=expected_many(), engine=ManyPiecesEngine.name, completion_tokens=3000)


RESULT = EngineResult(text="Here it is.", engine="lm", completion_tokens=3, model_version_id=4)


def expected_many() -> str:
    return "".join(f"w{i} " for i in range(ManyPiecesEngine.pieces))


@pytest.fixture
def engine_channel(settings) -> str:
    """A channel of this test's own on the run's Redis, and a fresh channel layer for this test's loop."""
    assert settings.REDIS_URL, "these tests need REDIS_URL (a real Redis: `.ci/run` provides one)"
    channel = f"mediachat.engine.test-{uuid.uuid4().hex[:12]}"
    settings.MEDIACHAT = {
        **settings.MEDIACHAT,
        "ENGINE_CHANNEL": channel,
        "ENGINE_ACCEPT_TIMEOUT_S": ACCEPT_S,
        "ENGINE_TIMEOUT_S": 20.0,
        "STREAM_DELAY_MS": 0,
    }
    settings.CHANNEL_LAYERS = {"default": {**settings.CHANNEL_LAYERS["default"]}}  # a new layer instance
    return channel


class EngineProcess:
    def __init__(self, channel: str, log: Path, *args: str, delay_ms: int = 0, engine: str = RETRIEVAL, **env: str):
        self.log = log
        env = child_env(MEDIACHAT_ENGINE_CHANNEL=channel, MEDIACHAT_STREAM_DELAY_MS=str(delay_ms), **env)
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "run_engine", "--engine", engine, *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.ready, timeout=60, what="run_engine ready")

    def output(self) -> str:
        return self.log.read_text()

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"run_engine exited with {self.proc.returncode}:\n{self.output()}"
        return "engine ready:" in self.output()


@pytest.fixture
def engines(engine_channel, tmp_path) -> Iterator:
    """Starts `run_engine` processes on the test's channel: `engines(*args, delay_ms=...)`."""
    started: list[EngineProcess] = []

    def start(*args: str, **kwargs) -> EngineProcess:
        process = EngineProcess(engine_channel, tmp_path / f"engine-{len(started)}.log", *args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            stop(process.proc)


async def run(engine: Engine, request: EngineRequest) -> tuple[list[str], EngineResult, Generation]:
    generation = engine.start(request)
    pieces = [piece async for piece in generation]
    return pieces, generation.result, generation


def climate_request(text: str = "climate") -> EngineRequest:
    return EngineRequest(
        text=text,
        history=(Turn("user", "anything on music?"), Turn("assistant", "Here is one piece on music.", cited=(3,))),
        reader_authenticated=True,
        decoding=DecodingParams(strategy="sample", temperature=0.7, seed=5),
        reply_id=41,
        conversation_id=7,
    )


def test_request_and_result_survive_the_wire():
    request = climate_request()
    assert request_from_wire(msgpack.unpackb(msgpack.packb(request_to_wire(request)))) == request
    result = EngineResult(
        text="Here [#3].",
        engine="lm",
        cited=[Citation(3, "Jazz", "/c/3/")],
        recommendations=[Recommendation(3, "Jazz", "/c/3/", "A night.", "video", "Culture", "matches music")],
        prompt_tokens=40,
        completion_tokens=4,
        decoding={"strategy": "greedy"},
        intent="search",
        confidence=0.75,
        entities=[{"type": "topic", "value": "music"}],
        model_version_id=9,
        notice="",
    )
    assert result_from_wire(msgpack.unpackb(msgpack.packb(result_to_wire(result)))) == result


def as_the_consumer_sends(engine: Engine, request: EngineRequest) -> EngineRequest:
    wanted = engine.history_turns(request.text)
    return dataclasses.replace(request, history=request.history[-wanted:] if wanted else ())


async def test_a_reply_streams_from_the_engine_process_as_it_would_in_process(engines):
    await database_sync_to_async(seed_catalog)()
    process = engines("--concurrency", "2")
    remote, local = ChannelLayerEngine(), RetrievalEngine()

    pieces, result, generation = await run(remote, as_the_consumer_sends(remote, climate_request()))
    local_pieces, local_result, _ = await run(local, as_the_consumer_sends(local, climate_request()))

    assert pieces == local_pieces and len(pieces) > 5
    assert result == local_result
    assert result.text.startswith("Here are 2 pieces on climate: “")
    assert {r.title for r in result.recommendations} == {"Glaciers in retreat", "The climate podcast: carbon markets"}
    assert generation.server is not None and generation.model_version_id is None
    wait_until(lambda: f"request {generation.request_id} done" in process.output(), timeout=5, what="done logged")

    # A follow-up names no topic: the engine process keeps the turns its engine asks for, and finds the topic.
    follow_up = dataclasses.replace(
        climate_request("more like that"),
        history=(
            Turn("user", "music"),
            Turn("assistant", "Here is one piece on music: “Jazz in the city”."),
            *[Turn("user", "thanks"), Turn("assistant", "You're welcome.")] * 3,
            Turn("user", "climate"),
            Turn("assistant", "Here is one piece on climate: “Glaciers in retreat” (Science)."),
        ),
    )
    pieces, result, _ = await run(remote, as_the_consumer_sends(remote, follow_up))
    local_pieces, local_result, _ = await run(local, as_the_consumer_sends(local, follow_up))
    assert pieces == local_pieces and result == local_result
    assert result.intent == "follow_up" and result.text.startswith("More on climate: “The climate podcast")


LM_SETTINGS = {
    "ENGINE_DEVICE": "cpu",
    "ENGINE_THREADS": 1,
    "ENGINE_MAX_BATCH": 4,
    "ENGINE_QUEUE": 8,
    "SEMANTIC_SEARCH": False,
}


async def test_a_language_model_served_by_the_engine_process_writes_what_it_writes_in_process(
    engines, settings, tmp_path
):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mediachat.engine.lm import LMEngine
    from tests.test_engine_context import platform_tokenizer

    torch.set_num_threads(1)
    tokenizer = platform_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    folder = tmp_path / "chat-model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    await database_sync_to_async(seed_catalog)()
    settings.MEDIACHAT = {**settings.MEDIACHAT, **LM_SETTINGS, "CHAT_MODEL": str(folder)}
    env = {f"MEDIACHAT_{k}": str(int(v) if isinstance(v, bool) else v) for k, v in LM_SETTINGS.items()}
    process = engines(
        "--concurrency", "4", engine="mediachat.engine.lm.LMEngine", MEDIACHAT_CHAT_MODEL=str(folder), **env
    )
    request = EngineRequest(
        text="climate", decoding=DecodingParams(strategy="greedy", max_new_tokens=24, repetition_penalty=1.0)
    )

    pieces, result, generation = await run(ChannelLayerEngine(), request)
    local = LMEngine()
    try:
        local_pieces, local_result, _ = await run(local, request)
    finally:
        local.shutdown()

    assert pieces == local_pieces and len(pieces) > 3
    assert result == local_result and result.engine == "lm"
    assert result.completion_tokens == 24  # an untrained model: it runs to its length limit
    assert generation.model_version_id is None  # a CHAT_MODEL folder, not a registry version
    assert "loaded engine lm" in process.output()


async def test_a_long_reply_travels_in_few_messages(engines):
    process = engines("--concurrency", "1", engine="tests.test_engine_remote.ManyPiecesEngine")

    pieces, result, generation = await run(ChannelLayerEngine(), EngineRequest(text="long"))

    assert "".join(pieces) == result.text == expected_many()
    assert len(pieces) == ManyPiecesEngine.pieces
    line = wait_until(
        lambda: next((ln for ln in process.output().splitlines() if f"request {generation.request_id} done" in ln), ""),
        timeout=5,
        what="done logged",
    )
    messages = int(line.split(" pieces in ")[1].split()[0])
    # Far fewer messages than pieces (coalesced), and well under the layer's capacity per channel.
    assert messages < ManyPiecesEngine.pieces / 10, line


async def test_cancel_stops_the_reply_in_the_engine_process_and_frees_its_slot(engines):
    await database_sync_to_async(seed_catalog)()
    process = engines("--concurrency", "1", delay_ms=300)  # a climate reply: about 20 words, 6 s
    engine = ChannelLayerEngine()
    first: list[str] = []

    async def consume(generation: Generation, into: list[str]) -> None:
        async for piece in generation:
            into.append(piece)

    a = engine.start(climate_request())
    task = asyncio.create_task(consume(a, first))
    await wait_for(lambda: len(first) >= 2)

    # The one slot is taken: another request is answered busy, with a retry hint.
    with pytest.raises(EngineBusy) as busy:
        await run(engine, climate_request())
    assert busy.value.code == "busy" and busy.value.retry_after_ms == 1000

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await cancels_flush()
    wait_until(lambda: f"request {a.request_id} cancelled by its client" in process.output(), timeout=5, what="cancel")

    # The slot is free again long before the cancelled reply would have ended.
    started = time.monotonic()
    second: list[str] = []
    b = engine.start(climate_request())
    task = asyncio.create_task(consume(b, second))
    await wait_for(lambda: len(second) >= 1)
    assert time.monotonic() - started < 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await cancels_flush()
    wait_until(lambda: f"request {b.request_id} cancelled by its client" in process.output(), timeout=5, what="cancel")
    assert f"request {a.request_id} done" not in process.output()


async def test_a_newer_request_from_the_same_socket_stops_the_older_one_at_once(engines):
    await database_sync_to_async(seed_catalog)()
    process = engines("--concurrency", "2", delay_ms=300)  # a climate reply: about 20 words, 6 s
    engine = ChannelLayerEngine()
    first: list[str] = []

    async def consume(generation: Generation, into: list[str]) -> None:
        async for piece in generation:
            into.append(piece)

    a = engine.start(dataclasses.replace(climate_request(), origin="socket-1"))
    task = asyncio.create_task(consume(a, first))
    await wait_for(lambda: len(first) >= 1)

    # The same socket asks again before its client's cancel of the first reply has been sent: the engine
    # process stops the first reply itself.
    pieces, result, _ = await run(engine, dataclasses.replace(climate_request(), origin="socket-1"))
    assert "".join(pieces) == result.text and result.cited
    wait_until(lambda: f"request {a.request_id} cancelled by its client" in process.output(), timeout=5, what="stop")
    assert not task.done()  # its client never cancelled it
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await cancels_flush()

    # Another socket's request leaves a reply in flight alone.
    c = engine.start(dataclasses.replace(climate_request(), origin="socket-2"))
    other: list[str] = []
    task = asyncio.create_task(consume(c, other))
    await wait_for(lambda: len(other) >= 1)
    await run(engine, dataclasses.replace(climate_request("jazz"), origin="socket-3"))
    assert f"request {c.request_id} cancelled" not in process.output()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await cancels_flush()


async def test_two_engine_processes_share_the_load(engines):
    await database_sync_to_async(seed_catalog)()
    processes = [engines("--concurrency", "1", delay_ms=100) for _ in range(2)]
    engine = ChannelLayerEngine()

    replies = await asyncio.gather(*(run(engine, climate_request()) for _ in range(2)))

    servers = {generation.server for _, _, generation in replies}
    assert len(servers) == 2  # each process wrote one reply: with one slot each, neither could take both
    for pieces, result, _ in replies:
        assert "".join(pieces) == result.text and result.text.startswith("Here are 2 pieces on climate")
    for process in processes:
        wait_until(lambda p=process: p.output().count(" done in ") == 1, timeout=5, what="one reply per process")


class QuickToGiveUp(ChannelLayerEngine):
    idle_limit_s = 3.0  # heartbeats come every 2 s


async def test_an_engine_process_killed_mid_reply_is_an_error_not_a_hang(engines):
    await database_sync_to_async(seed_catalog)()
    process = engines("--concurrency", "1", delay_ms=500)
    generation = QuickToGiveUp().start(climate_request())
    pieces: list[str] = []
    with pytest.raises(EngineUnavailable) as error:
        async for piece in generation:
            pieces.append(piece)
            if len(pieces) == 2:
                process.proc.kill()
                killed = time.monotonic()
    assert "stopped answering" in error.value.detail
    assert 2 < time.monotonic() - killed < 6
    await cancels_flush()


async def test_no_engine_process_is_an_engine_unavailable_error_soon(engine_channel):
    started = time.monotonic()
    with pytest.raises(EngineUnavailable) as error:
        await run(ChannelLayerEngine(), EngineRequest(text="climate"))
    assert error.value.code == "engine_unavailable"
    assert "run_engine" in error.value.detail
    assert ACCEPT_S <= time.monotonic() - started < ACCEPT_S + 2
    await cancels_flush()


async def test_sigterm_lets_a_reply_in_flight_finish_then_exits(engines):
    await database_sync_to_async(seed_catalog)()
    process = engines("--concurrency", "2", "--grace", "10", delay_ms=100)
    generation = ChannelLayerEngine().start(climate_request())
    pieces: list[str] = []

    async def consume() -> None:
        async for piece in generation:
            pieces.append(piece)

    task = asyncio.create_task(consume())
    await wait_for(lambda: len(pieces) >= 2)
    process.proc.send_signal(signal.SIGTERM)
    await task

    assert "".join(pieces) == generation.result.text
    assert await asyncio.to_thread(process.proc.wait, 10) == 0
    assert "engine stopped: accepted 1, completed 1" in process.output()
    # Nothing serves the channel any more.
    with pytest.raises(EngineUnavailable):
        await run(ChannelLayerEngine(), EngineRequest(text="climate"))
    await cancels_flush()


async def test_sigterm_past_the_grace_ends_the_reply_with_an_error(engines):
    await database_sync_to_async(seed_catalog)()
    process = engines("--concurrency", "2", "--grace", "0.5", delay_ms=300)
    generation = ChannelLayerEngine().start(climate_request())
    pieces: list[str] = []

    async def consume() -> None:
        async for piece in generation:
            pieces.append(piece)

    task = asyncio.create_task(consume())
    await wait_for(lambda: len(pieces) >= 1)
    started = time.monotonic()
    process.proc.send_signal(signal.SIGTERM)

    with pytest.raises(EngineUnavailable) as error:
        await task
    assert "shutting down" in error.value.detail
    assert time.monotonic() - started < 3
    assert await asyncio.to_thread(process.proc.wait, 10) == 0
    assert "engine stopped: accepted 1, completed 0, failed 1" in process.output()


async def test_a_lost_message_ends_the_reply_with_an_error_and_a_cancel(engine_channel):
    """A stand-in server that skips a number: the client must not pass a garbled reply off as complete."""
    layer = get_channel_layer()
    server = await layer.new_channel()

    async def skipping_server() -> dict:
        request = await layer.receive(engine_channel)
        base = {"id": request["id"], "server": server}
        await layer.send(request["reply"], {**base, "type": "engine.accepted", "seq": 0})
        await layer.send(request["reply"], {**base, "type": "engine.pieces", "seq": 1, "pieces": ["Here "]})
        await layer.send(request["reply"], {**base, "type": "engine.pieces", "seq": 3, "pieces": ["more."]})
        return await asyncio.wait_for(layer.receive(server), 5)

    serving = asyncio.create_task(skipping_server())
    generation = ChannelLayerEngine().start(EngineRequest(text="climate"))
    pieces = []
    with pytest.raises(StreamBroken) as error:
        async for piece in generation:
            pieces.append(piece)
    assert pieces == ["Here "] and error.value.code == "engine_stream_broken"
    assert await serving == {"type": "engine.cancel", "id": generation.request_id}


async def test_duplicates_of_a_request_taken_elsewhere_are_ignored_and_stopped(engine_channel):
    """channels-redis can hand one request to two engine processes (django/channels_redis#163): stand-ins
    for three processes answer it; the client follows the first that took it and stops the other."""
    layer = get_channel_layer()
    full, taker, duplicate = [await layer.new_channel() for _ in range(3)]

    async def three_processes() -> dict:
        request = await layer.receive(engine_channel)
        reply, request_id = request["reply"], request["id"]
        sends = [
            (full, {"type": "engine.error", "seq": 0, "code": "busy", "detail": "busy", "retry_after_ms": 1000}),
            (taker, {"type": "engine.pieces", "seq": 0, "pieces": ["Here "], "model_version_id": 4}),
            (duplicate, {"type": "engine.pieces", "seq": 0, "pieces": ["Garbled "]}),
            (duplicate, {"type": "engine.pieces", "seq": 1, "pieces": ["words"]}),
            (taker, {"type": "engine.result", "seq": 1, "pieces": ["it is."], "result": result_to_wire(RESULT)}),
        ]
        for server, message in sends:
            await layer.send(reply, {**message, "id": request_id, "server": server})
        return await asyncio.wait_for(layer.receive(duplicate), 5)

    serving = asyncio.create_task(three_processes())
    pieces, result, generation = await run(ChannelLayerEngine(), EngineRequest(text="climate"))

    assert pieces == ["Here ", "it is."] and result == RESULT
    assert generation.server == taker and generation.model_version_id == 4
    assert await serving == {"type": "engine.cancel", "id": generation.request_id}
    await cancels_flush()


async def test_a_busy_answer_with_no_other_taker_is_busy(engine_channel):
    layer = get_channel_layer()
    full = await layer.new_channel()

    async def full_process() -> None:
        request = await layer.receive(engine_channel)
        busy = {"type": "engine.error", "seq": 0, "code": "busy", "detail": "Busy.", "retry_after_ms": 1500}
        await layer.send(request["reply"], {**busy, "id": request["id"], "server": full})

    serving = asyncio.create_task(full_process())
    started = time.monotonic()
    with pytest.raises(EngineBusy) as error:
        await run(ChannelLayerEngine(), EngineRequest(text="climate"))
    assert error.value.retry_after_ms == 1500 and time.monotonic() - started < 1.5
    await serving


async def test_a_full_reply_channel_holds_the_writer_back_rather_than_losing_pieces(engine_channel, settings):
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[settings.REDIS_URL], capacity=2)
    channel = await layer.new_channel()
    writer = ReplyWriter(layer, channel, "request-1", "server-channel")
    for piece in ("a", "b"):
        await writer.send("engine.pieces", pieces=[piece])
    third = asyncio.create_task(writer.send("engine.pieces", pieces=["c"]))
    await asyncio.sleep(0.3)
    assert not third.done()  # the channel holds two: the writer waits for room

    received = [await layer.receive(channel)]
    await asyncio.wait_for(third, 5)
    received += [await layer.receive(channel) for _ in range(2)]

    assert [(m["seq"], m["pieces"]) for m in received] == [(0, ["a"]), (1, ["b"]), (2, ["c"])]
    await layer.close_pools()


async def test_the_in_memory_layer_cannot_reach_an_engine_process(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with pytest.raises(EngineError) as error:
        await run(ChannelLayerEngine(), EngineRequest(text="climate"))
    assert error.value.code == "engine_unavailable" and "REDIS_URL" in error.value.detail


async def test_redis_out_of_reach_is_engine_unavailable(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }
    with pytest.raises(EngineUnavailable) as error:
        await run(ChannelLayerEngine(), EngineRequest(text="climate"))
    assert "cannot take the request" in error.value.detail


def test_run_engine_refuses_the_in_memory_layer(tmp_path):
    env = child_env(MEDIACHAT_DATA_DIR=str(tmp_path))
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "run_engine", "--engine", RETRIEVAL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "set REDIS_URL" in done.stderr


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
