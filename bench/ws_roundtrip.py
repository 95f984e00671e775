"""Websocket round trips: acks per second through the chat consumer against a bare Channels echo consumer.

Starts its own uvicorn (bench/echo.py: the platform plus `/ws/echo/`) on DATABASE_URL and REDIS_URL
when they are set, else on the embedded default (a SQLite file of its own under MEDIACHAT_DATA_DIR and
the in-memory channel layer). It migrates that database, seeds a few published items and one session
per client, then runs two phases of CLIENTS concurrent websocket clients on loopback:

- echo: send a frame, wait for it to come back;
- chat: send a `message`, wait for its `ack` (the reply's tokens, recommendations and done are read
  and ignored). Each client sends its next message as soon as the last is acknowledged, far inside
  `MEDIACHAT_REPLY_BURST_MS`: as the protocol says, a burst is answered once, by a reply to its last
  message, so most messages are superseded before their reply starts (`replies` counts those that
  started). MEDIACHAT_REPLY_BURST_MS=0 answers every message, each interrupted by the next.

At the end it checks that every acknowledged message is stored, and prints one JSON line:
{"clients", "acks_per_s", "echo_per_s", "ratio", "p50_ms", "p95_ms", "lost", "replies"}.

With Redis the replies come from a `manage.py run_engine` process (BENCH_ENGINES of them), as
`run_platform` deploys the platform, and the server runs production settings (DEBUG off).

Environment: BENCH_CLIENTS (50), BENCH_SECONDS per phase (15), BENCH_WARMUP_SECONDS (3), BENCH_ENGINES (1).
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
    percentile,
    reader_sessions,
    run_async,
    server_env,
    start_engines,
    start_uvicorn,
    stop,
)

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "15"))
WARMUP = float(os.environ.get("BENCH_WARMUP_SECONDS", "3"))
TOPICS = ["climate", "jazz in the city", "chips and tariffs", "more like that", "the ocean", "space telescopes"]
SEED = [
    ("Glaciers in retreat", "How the climate is reshaping the Alps.", "climate"),
    ("The climate podcast: carbon markets", "Who pays for emissions.", "climate"),
    ("Jazz in the city", "A night in three clubs.", "music"),
    ("Chips and tariffs", "The semiconductor trade, explained.", "economy"),
    ("Deep sea mining", "The ocean floor and the rush for metals.", "ocean"),
    ("A telescope in space", "What the new telescope sees.", "space"),
]


def prepare(env: dict[str, str]) -> list[str]:
    """Migrate, seed published items and one reader session per client; returns the session keys."""
    django_setup(env)
    from datetime import timedelta

    from django.db import connections
    from django.utils import timezone

    from personalization.models import Content, Section, Tag

    section, _ = Section.objects.get_or_create(name="Bench", defaults={"slug": "bench"})
    now = timezone.now()
    for i, (title, summary, tag_name) in enumerate(SEED):
        content, created = Content.objects.get_or_create(
            slug=f"bench-{i}",
            defaults={
                "title": title,
                "summary": summary,
                "body": summary,
                "section": section,
                "status": Content.Status.PUBLISHED,
                "published_at": now - timedelta(days=i + 1),
            },
        )
        if created:
            tag, _ = Tag.objects.get_or_create(name=tag_name, defaults={"slug": f"bench-{tag_name}"})
            content.tags.add(tag)
    connections.close_all()
    return reader_sessions(CLIENTS)


@dataclass
class Phase:
    name: str
    start: float = float("inf")  # set once every client is connected
    end: float = float("inf")
    completed: int = 0  # round trips that finished inside the measured window
    latencies_ms: list[float] = field(default_factory=list)
    acked_ids: list[int] = field(default_factory=list)  # every acked message, warm-up included
    errors: list[str] = field(default_factory=list)

    def measured(self, sent_at: float, now: float, latency_ms: float) -> None:
        if self.start <= sent_at and now <= self.end:
            self.completed += 1
            self.latencies_ms.append(latency_ms)


async def echo_client(base: str, phase: Phase, n: int, ready: asyncio.Barrier) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"{base}/ws/echo/", proxy=None, compression=None) as ws:
        await ready.wait()
        frame = json.dumps({"type": "message", "text": TOPICS[n % len(TOPICS)], "client_id": f"echo-{n}"})
        while time.monotonic() < phase.end:
            sent_at = time.monotonic()
            await ws.send(frame)
            await ws.recv()
            now = time.monotonic()
            phase.measured(sent_at, now, (now - sent_at) * 1000)


async def chat_client(base: str, origin: str, session_key: str, phase: Phase, n: int, ready: asyncio.Barrier) -> None:
    from websockets.asyncio.client import connect

    headers = {"Cookie": f"sessionid={session_key}"}
    async with connect(
        f"{base}/ws/chat/", origin=origin, additional_headers=headers, proxy=None, compression=None
    ) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        await ready.wait()
        conversation_id = None
        seq = 0
        while time.monotonic() < phase.end:
            seq += 1
            client_id = f"b{n}-{seq}"
            frame = {"type": "message", "text": TOPICS[(n + seq) % len(TOPICS)], "client_id": client_id}
            if conversation_id is not None:
                frame["conversation_id"] = conversation_id
            sent_at = time.monotonic()
            await ws.send(json.dumps(frame))
            while True:  # tokens, recommendations and done of earlier replies are drained here
                event = json.loads(await ws.recv())
                if event["type"] == "ack" and event.get("client_id") == client_id:
                    break
                if event["type"] == "error" and event.get("client_id") == client_id:
                    phase.errors.append(event["code"])
                    event = None
                    break
            if event is None:
                continue
            now = time.monotonic()
            conversation_id = event["conversation_id"]
            phase.acked_ids.append(event["message_id"])
            phase.measured(sent_at, now, (now - sent_at) * 1000)


async def run_phase(name: str, make_client) -> Phase:
    phase = Phase(name)
    ready = asyncio.Barrier(CLIENTS + 1)
    tasks = [asyncio.create_task(make_client(phase, n, ready)) for n in range(CLIENTS)]
    await asyncio.wait_for(ready.wait(), 60)
    now = time.monotonic()
    phase.start = now + WARMUP
    phase.end = phase.start + SECONDS
    log(f"{name}: {CLIENTS} clients connected; {WARMUP:g} s warm-up, then {SECONDS:g} s measured")
    while time.monotonic() < phase.end:
        await asyncio.sleep(min(5.0, max(phase.end - time.monotonic(), 0.01)))
        if time.monotonic() > phase.start:
            elapsed = min(time.monotonic(), phase.end) - phase.start
            log(f"{name}: {phase.completed} round trips in {elapsed:.1f} s")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} {name} clients failed: {failures[0]!r}")
    return phase


def count_stored(ids: list[int]) -> tuple[int, int]:
    """How many of the acked messages `ids` are stored, and how many replies to them started."""
    from django.db import connections

    from mediachat.models import Message

    stored = replies = 0
    for i in range(0, len(ids), 5000):
        chunk = ids[i : i + 5000]
        stored += Message.objects.filter(id__in=chunk, role=Message.Role.USER).count()
        replies += Message.objects.filter(reply_to_id__in=chunk, role=Message.Role.ASSISTANT).count()
    connections.close_all()
    return stored, replies


async def measure(port: int, session_keys: list[str]) -> tuple[Phase, Phase]:
    base = f"ws://127.0.0.1:{port}"
    origin = f"http://127.0.0.1:{port}"
    echo = await run_phase("echo", lambda phase, n, ready: echo_client(base, phase, n, ready))
    log(f"echo: {echo.completed / SECONDS:.0f} round trips/s")
    chat = await run_phase("chat", lambda phase, n, ready: chat_client(base, origin, session_keys[n], phase, n, ready))
    log(f"chat: {chat.completed / SECONDS:.0f} acks/s, {len(chat.errors)} errors")
    return echo, chat


def main() -> None:
    env = server_env()
    database = env["DATABASE_URL"].split("://", 1)[0]
    log(f"database {database}, channel layer {'redis' if env.get('REDIS_URL') else 'in-memory'}")
    session_keys = prepare(env)
    port = free_port()
    engines = start_engines(env)
    if engines:
        engines_ready(TOPICS[0])
    server = start_uvicorn(env, port, app="bench.echo:application")
    try:
        echo, chat = run_async(measure(port, session_keys))
    finally:
        stop([server, *engines])
    stored, replies = count_stored(chat.acked_ids)
    lost = len(set(chat.acked_ids)) - stored
    log(f"{len(chat.acked_ids)} messages acked, {stored} of them stored; {replies} replies started")
    if chat.errors:
        log(f"error codes: {sorted(set(chat.errors))}")
    acks_per_s = chat.completed / SECONDS
    echo_per_s = echo.completed / SECONDS
    print(
        json.dumps(
            {
                "clients": CLIENTS,
                "acks_per_s": round(acks_per_s, 1),
                "echo_per_s": round(echo_per_s, 1),
                "ratio": round(acks_per_s / echo_per_s, 3) if echo_per_s else 0.0,
                "p50_ms": round(percentile(chat.latencies_ms, 50), 2),
                "p95_ms": round(percentile(chat.latencies_ms, 95), 2),
                "lost": lost,
                "replies": replies,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
