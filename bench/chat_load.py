"""Chat under load: N real websocket clients chatting end to end with the chat model, against the engine alone.

Starts what it needs (bench/harness.py): the demo catalog (`seed_demo`), a chat model (the active one, else
`train_chat_model --preset $BENCH_PRESET --activate`, small by default: the demo model), uvicorn and, with
Redis, `run_engine` processes. Then two phases over the same questions:

- platform: CLIENTS websocket clients; each asks a question, reads the streamed reply to its `done`, and
  asks the next (a follow-up every other turn), for SECONDS. Time to first token is measured at the client,
  from sending the message to the first `token` event. Tokens are the completion tokens stored on the
  replies finished inside the window.
- engine: the same questions through the served engine in this process (retrieval, prompt, batched
  decoding, no socket and no database writes), CLIENTS at a time: the ceiling the socket path is held to.

A reply is lost when its message was acked but no `done` came, or when what was stored differs from what
the client was told in `done`. Last line JSON: {"clients", "replies", "tokens_per_s", "ttft_p50_ms",
"ttft_p95_ms", "engine_tokens_per_s", "vs_engine", "lost", "failed"}.

Environment: BENCH_CLIENTS (16), BENCH_SECONDS (30), BENCH_PRESET (small), BENCH_ENGINES (1, with Redis),
BENCH_MAX_NEW_TOKENS (64).
"""

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    django_setup,
    engines_ready,
    free_port,
    log,
    manage,
    percentile,
    reader_sessions,
    run_async,
    server_env,
    start_engines,
    start_uvicorn,
    stop,
)

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
PRESET = os.environ.get("BENCH_PRESET", "small")
MAX_NEW_TOKENS = int(os.environ.get("BENCH_MAX_NEW_TOKENS", "64"))
QUESTIONS = [
    "Anything on climate?",
    "What's new in science?",
    "Any podcasts about music?",
    "What did you publish on politics?",
    "Something about food and restaurants?",
    "What's happening in technology?",
    "Any stories on the oceans?",
    "Books worth reading?",
]
FOLLOW_UPS = ["More like that", "Anything older on that?", "More like the second one", "Shorter"]


@dataclass
class Client:
    acked: dict[int, str] = field(default_factory=dict)  # message id → client id
    done: dict[int, dict] = field(default_factory=dict)  # reply_to (message id) → done event
    ttft_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def ensure_chat_model(env: dict[str, str]) -> None:
    from training.models import ModelKind, ModelVersion

    active = ModelVersion.objects.active().filter(kind=ModelKind.CHAT_LM).first()
    if active is not None:
        log(f"chat model: active version {active.pk} ({active.name})")
        return
    log(f"no active chat model: training one with --preset {PRESET} (the demo takes minutes on 2 cores)")
    manage(env, "train_chat_model", "--preset", PRESET, "--activate", "--no-progress")


async def chat_client(base: str, origin: str, session_key: str, n: int, end: float, client: Client) -> None:
    from websockets.asyncio.client import connect

    headers = {"Cookie": f"sessionid={session_key}"}
    async with connect(f"{base}/ws/chat/", origin=origin, additional_headers=headers, proxy=None) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        conversation_id = None
        turn = 0
        while time.monotonic() < end:
            question = FOLLOW_UPS[(n + turn) % len(FOLLOW_UPS)] if turn % 2 else QUESTIONS[(n + turn) % len(QUESTIONS)]
            frame = {
                "type": "message",
                "text": question,
                "client_id": f"load-{n}-{turn}",
                "decoding": {"max_new_tokens": MAX_NEW_TOKENS},
            }
            if conversation_id is not None:
                frame["conversation_id"] = conversation_id
            sent = time.monotonic()
            await ws.send(json.dumps(frame))
            message_id = None
            first = True
            while True:
                event = json.loads(await ws.recv())
                kind = event["type"]
                if kind == "ack":
                    message_id = event["message_id"]
                    conversation_id = event["conversation_id"]
                    client.acked[message_id] = frame["client_id"]
                elif kind == "token" and first:
                    first = False
                    client.ttft_ms.append((time.monotonic() - sent) * 1000)
                elif kind == "error":
                    client.errors.append(event["code"])
                    if message_id is None:
                        break
                elif kind == "done":
                    client.done[event["reply_to"]] = event
                    break
            turn += 1


async def platform_phase(port: int, session_keys: list[str]) -> tuple[list[Client], float]:
    base, origin = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    clients = [Client() for _ in range(CLIENTS)]
    started = time.monotonic()
    end = started + SECONDS
    tasks = [
        asyncio.create_task(chat_client(base, origin, session_keys[n], n, end, clients[n])) for n in range(CLIENTS)
    ]
    while not all(t.done() for t in tasks):
        await asyncio.sleep(5)
        replies = sum(len(c.done) for c in clients)
        log(f"platform: {replies} replies after {time.monotonic() - started:.0f} s")
    for task in tasks:
        task.result()
    return clients, time.monotonic() - started


def stored_check(clients: list[Client]) -> tuple[int, int, int]:
    """(lost, failed, completion tokens) over every acked message, from the database."""
    from django.db import connections

    from mediachat.models import Message

    acked = {mid for c in clients for mid in c.acked}
    told = {reply_to: done for c in clients for reply_to, done in c.done.items()}
    replies = {m.reply_to_id: m for m in Message.objects.filter(reply_to_id__in=acked, role=Message.Role.ASSISTANT)}
    lost = failed = tokens = 0
    for message_id in acked:
        reply, done = replies.get(message_id), told.get(message_id)
        if reply is None or done is None or reply.text != done["text"] or reply.status != done["status"]:
            lost += 1
            continue
        if reply.status != Message.Status.COMPLETE:
            failed += 1
        tokens += reply.completion_tokens or 0
    connections.close_all()
    return lost, failed, tokens


async def engine_phase() -> tuple[float, list[float]]:
    """The served engine in this process: CLIENTS requests at a time for SECONDS; (tokens/s, TTFT ms)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    from mediachat.engine import EngineRequest, Turn
    from mediachat.engine.decoding import DecodingParams

    engine = import_string(settings.MEDIACHAT["ENGINE_SERVED"])()
    decoding = DecodingParams(max_new_tokens=MAX_NEW_TOKENS)
    async for _ in engine.start(EngineRequest(text=QUESTIONS[0], decoding=decoding)):  # load the model first
        pass
    tokens = 0
    ttft: list[float] = []
    end = time.monotonic() + SECONDS

    async def worker(n: int) -> None:
        nonlocal tokens
        history: list[Turn] = []
        turn = 0
        while time.monotonic() < end:
            question = FOLLOW_UPS[(n + turn) % len(FOLLOW_UPS)] if turn % 2 else QUESTIONS[(n + turn) % len(QUESTIONS)]
            started = time.monotonic()
            generation = engine.start(EngineRequest(text=question, history=tuple(history), decoding=decoding))
            first = True
            async for _ in generation:
                if first:
                    ttft.append((time.monotonic() - started) * 1000)
                    first = False
            result = generation.result
            tokens += result.completion_tokens or 0
            history += [
                Turn(role="user", text=question),
                Turn(role="assistant", text=result.text, cited=tuple(c.content_id for c in result.cited)),
            ]
            turn += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(CLIENTS)))
    elapsed = time.monotonic() - started
    if hasattr(engine, "shutdown"):
        engine.shutdown()
    return tokens / elapsed, ttft


def main() -> None:
    env = server_env("chat_load.sqlite3")
    layer = "redis" if env.get("REDIS_URL") else "in-memory"
    log(f"database {env['DATABASE_URL'].split('://', 1)[0]}, channel layer {layer}")
    django_setup(env)
    manage(env, "seed_demo")
    ensure_chat_model(env)
    session_keys = reader_sessions(CLIENTS)

    port = free_port()
    engines = start_engines(env)
    if engines:
        engines_ready(QUESTIONS[0])
    server = start_uvicorn(env, port)
    try:
        log(f"platform: {CLIENTS} clients for {SECONDS:g} s")
        clients, elapsed = run_async(platform_phase(port, session_keys))
    finally:
        stop([server, *engines])
    lost, failed, tokens = stored_check(clients)
    errors = [code for c in clients for code in c.errors]
    log(f"platform: {tokens} tokens in {elapsed:.1f} s; lost {lost}, failed {failed}, errors {sorted(set(errors))}")

    log(f"engine alone: {CLIENTS} at a time for {SECONDS:g} s")
    engine_tps, engine_ttft = asyncio.run(engine_phase())
    ttft = [t for c in clients for t in c.ttft_ms]
    tokens_per_s = tokens / elapsed
    print(
        json.dumps(
            {
                "clients": CLIENTS,
                "replies": sum(len(c.done) for c in clients),
                "tokens_per_s": round(tokens_per_s, 1),
                "ttft_p50_ms": round(percentile(ttft, 50), 1),
                "ttft_p95_ms": round(percentile(ttft, 95), 1),
                "engine_tokens_per_s": round(engine_tps, 1),
                "engine_ttft_p50_ms": round(percentile(engine_ttft, 50), 1),
                "vs_engine": round(tokens_per_s / engine_tps, 3) if engine_tps else 0.0,
                "lost": lost,
                "failed": failed,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
