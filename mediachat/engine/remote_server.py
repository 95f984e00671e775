"""The engine in its own process, the server side: `EngineServer`, which `manage.py run_engine` runs.

Each `run_engine` process receives requests from the channel `MEDIACHAT["ENGINE_CHANNEL"]` (sent by
`remote.ChannelLayerEngine` in the web processes; Redis hands each to one process), runs the locally
served engine and streams the reply back to the web process's reply channel. The messages and their
codecs are `wire`'s.

The channel layer delivers at most once and each channel holds a bounded number of messages, so a reply
(`ReplyWriter`) coalesces pieces (whatever was produced while the previous message was on its way, at
most one message per `PACE_S`), numbers every message, and sends a heartbeat when it has had nothing to
say for `HEARTBEAT_S`; its first message is an `engine.accepted` only when no piece is ready within
`ACCEPTED_AFTER_S`. A process with every slot taken passes a request back to the channel (up to `HOPS`
times) so that an idle process can take it, then answers busy.
"""

import asyncio
import dataclasses
import logging
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from django.conf import settings

from .base import Engine, EngineBusy, EngineError, EngineTimeout
from .wire import (
    BUSY_RETRY_MS,
    HEARTBEAT_S,
    WIRE_VERSION,
    EngineUnavailable,
    real_layer,
    request_from_wire,
    result_to_wire,
)

logger = logging.getLogger(__name__)

PACE_S = 0.05  # at most one pieces message per reply this often: tokens produced meanwhile travel together
ACCEPTED_AFTER_S = 0.05  # a reply with no piece by then says `engine.accepted`; otherwise its first piece does
STALL_LIMIT_S = 10.0  # a reply channel full this long: the server gives the reply up
HOPS = 2  # a full engine process passes a request back to the channel this many times before answering busy


async def _woken(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` at most `timeout_s`; whether it was set.

    Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives just as the event is set.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
        return True
    except TimeoutError:
        return False


class ReplyWriter:
    """The numbered messages of one reply, pieces coalesced, a heartbeat while quiet."""

    def __init__(self, layer: BaseChannelLayer, channel: str, request_id: str, server: str, first: dict | None = None):
        self.layer = layer
        self.channel = channel
        self.request_id = request_id
        self.server = server
        self.first = first or {}  # fields of the first message, whatever its type
        self.seq = 0
        self.messages = 0
        self.pieces = 0
        self.buffer: list[str] = []
        self.lock = asyncio.Lock()
        self.closing = False
        self.wake = asyncio.Event()
        self.last_send = 0.0
        self.flusher: asyncio.Task | None = None
        self.heartbeat: asyncio.Task | None = None

    async def send(self, kind: str, **fields: Any) -> None:
        """Send one message with the next number; waits while the reply channel is full, up to STALL_LIMIT_S."""
        async with self.lock:
            message = {"type": kind, "id": self.request_id, "server": self.server, "seq": self.seq, **fields}
            if self.seq == 0:
                message.update(self.first)
            loop = asyncio.get_running_loop()
            stalled_since = loop.time()
            delay = 0.01
            while True:
                try:
                    await self.layer.send(self.channel, message)
                    break
                except ChannelFull:
                    if loop.time() - stalled_since > STALL_LIMIT_S:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
            self.seq += 1
            self.messages += 1
            self.last_send = loop.time()

    def start(self) -> None:
        self.heartbeat = asyncio.create_task(self._beat())

    def add(self, piece: str) -> None:
        """Queue `piece`; raises what stopped the previous message (a reply channel full for too long)."""
        if self.flusher is not None and self.flusher.done() and not self.flusher.cancelled():
            failure = self.flusher.exception()
            if failure is not None:
                raise failure
        self.buffer.append(piece)
        self.pieces += 1
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self.buffer and not self.closing:
            pieces, self.buffer = self.buffer, []
            await self.send("engine.pieces", pieces=pieces)
            await _woken(self.wake, PACE_S)

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        wait = ACCEPTED_AFTER_S
        while not self.closing:
            await _woken(self.wake, wait)
            if self.closing or self.lock.locked():
                continue
            if self.seq == 0:  # no piece yet (a model loading, a queue): say the request is taken
                await self.send("engine.accepted")
            elif loop.time() - self.last_send >= HEARTBEAT_S:
                await self.send("engine.alive")
            wait = HEARTBEAT_S

    async def close(self) -> list[str]:
        """Stop the flusher and heartbeat after their current message; returns the pieces not sent yet.

        Raises what made a message fail: pieces it carried are gone, so the reply must not end as complete.
        """
        self.closing = True
        self.wake.set()
        tasks = [task for task in (self.flusher, self.heartbeat) if task is not None]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        pieces, self.buffer = self.buffer, []
        return pieces

    def abort(self) -> None:
        """Stop at once: the client is gone, numbering no longer matters."""
        self.closing = True
        for task in (self.flusher, self.heartbeat):
            if task is not None:
                task.cancel()


class EngineServer:
    """Serve `engine` to requests from `channel`: at most `concurrency` at once, the rest answered `busy`.

    `serve()` runs until its `stop` event is set, then stops taking requests (they stay in the channel for
    other engine processes), lets in-flight replies finish for `grace_s`, and ends the rest with an
    `engine_unavailable` error.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int,
        channel: str | None = None,
        timeout_s: float | None = None,
        grace_s: float = 10.0,
        layer: BaseChannelLayer | None = None,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.engine = engine
        self.concurrency = concurrency
        self.channel = channel or settings.MEDIACHAT["ENGINE_CHANNEL"]
        self.timeout_s = timeout_s if timeout_s is not None else float(settings.MEDIACHAT["ENGINE_TIMEOUT_S"])
        self.grace_s = grace_s
        self.layer = layer
        self.server_channel = ""
        self.tasks: dict[str, asyncio.Task] = {}
        self.cancelled_by_client: set[str] = set()
        self.side_tasks: set[asyncio.Task] = set()
        self.taken: dict[str, float] = {}  # request ids served here lately, with their `expires`
        self.by_origin: dict[str, str] = {}  # the latest request in flight from each origin (a socket)
        self.stopping = False
        self.ready = asyncio.Event()
        self.counts = {
            "accepted": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "busy": 0,
            "passed": 0,
            "expired": 0,
            "duplicate": 0,
            "superseded": 0,
        }

    async def serve(self, stop: asyncio.Event) -> None:
        """Take requests until `stop` is set, then shut down gracefully."""
        self.layer = self.layer or real_layer()
        self.server_channel = await self.layer.new_channel()
        control = asyncio.create_task(self._control())
        self.ready.set()
        logger.info(
            "engine ready: %s serving channel %r, up to %d requests at once",
            self.engine.name,
            self.channel,
            self.concurrency,
        )
        stopped = asyncio.create_task(stop.wait())
        try:
            while True:
                receiving = asyncio.create_task(self.layer.receive(self.channel))
                done, _ = await asyncio.wait({receiving, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if receiving not in done:
                    # Safe to cancel: channels-redis keeps a popped message in a backup list until handled.
                    receiving.cancel()
                    await asyncio.gather(receiving, return_exceptions=True)
                    break
                self._take(receiving.result())
        finally:
            stopped.cancel()
            await self._shutdown()
            control.cancel()
            await asyncio.gather(control, return_exceptions=True)
        logger.info("engine stopped: %s", ", ".join(f"{k} {v}" for k, v in self.counts.items()))

    def _take(self, message: dict) -> None:
        if message.get("type") != "engine.request" or "reply" not in message or "id" not in message:
            logger.warning("ignored a message on %r: %r", self.channel, message.get("type"))
            return
        request_id, reply = message["id"], message["reply"]
        now = time.time()
        if request_id in self.taken:
            # channels-redis can hand a message out twice when several processes receive from one channel
            # (django/channels_redis#163): this process has it already.
            self.counts["duplicate"] += 1
            return
        if message.get("expires", 0) < now:
            self.counts["expired"] += 1
            logger.info("request %s expired before it was taken (its client gave up)", request_id)
            return
        if len(self.tasks) >= self.concurrency:
            hops = int(message.get("hops", 0))
            if hops < HOPS:
                # Full here: back into the channel, where another engine process waiting on it takes it first.
                self.counts["passed"] += 1
                message = {**message, "hops": hops + 1}
                self._side(self._pass_on(message))
                return
            self.counts["busy"] += 1
            logger.info("request %s refused: busy (%d in flight)", request_id, len(self.tasks))
            self._side(self._refuse(reply, request_id))
            return
        origin = (message.get("request") or {}).get("origin") or ""
        if origin:
            self._supersede(origin)
        task = asyncio.create_task(self._serve_one(message))
        self.tasks[request_id] = task
        self.taken[request_id] = message["expires"]
        if len(self.taken) > 4 * self.concurrency:  # forget ids whose duplicates would have expired anyway
            self.taken = {k: v for k, v in self.taken.items() if v >= now or k in self.tasks}
        if origin:
            self.by_origin[origin] = request_id
        task.add_done_callback(lambda _: self._forget(request_id, origin))

    def _supersede(self, origin: str) -> None:
        """Stop the reply still in flight for `origin`: its socket has moved on to a newer message.

        The consumer abandons a reply before it asks for the next one, and its cancel is on the way; stopping
        the reply now spares the work done until that cancel arrives (a search, tokens nobody reads).
        """
        older = self.by_origin.get(origin)
        task = self.tasks.get(older) if older is not None else None
        if task is not None and not task.done():
            self.counts["superseded"] += 1
            self.cancelled_by_client.add(older)
            task.cancel()

    def _forget(self, request_id: str, origin: str) -> None:
        self.tasks.pop(request_id, None)
        if origin and self.by_origin.get(origin) == request_id:
            del self.by_origin[origin]

    def _side(self, coroutine) -> None:
        """Run a one-send task (errors logged inside), holding it until it ends."""
        task = asyncio.create_task(coroutine)
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)

    async def _pass_on(self, message: dict) -> None:
        try:
            await self.layer.send(self.channel, message)
        except Exception as exc:
            logger.warning("request %s not passed on (%r): answered busy", message["id"], exc)
            await self._refuse(message["reply"], message["id"])

    async def _refuse(self, reply: str, request_id: str) -> None:
        try:
            await ReplyWriter(self.layer, reply, request_id, self.server_channel).send(
                "engine.error",
                code=EngineBusy.code,
                detail="The engine is busy; try again shortly.",
                retry_after_ms=BUSY_RETRY_MS,
            )
        except Exception as exc:
            logger.warning("busy answer to %s not sent: %r", request_id, exc)

    async def _control(self) -> None:
        while True:
            message = await self.layer.receive(self.server_channel)
            if message.get("type") == "engine.cancel":
                request_id = message.get("id")
                task = self.tasks.get(request_id)
                if task is not None and not task.done():
                    self.cancelled_by_client.add(request_id)
                    task.cancel()

    async def _serve_one(self, message: dict) -> None:
        request_id = message["id"]
        writer = ReplyWriter(
            self.layer,
            message["reply"],
            request_id,
            self.server_channel,
            first={"engine": self.engine.name, "model_version_id": self.engine.model_version_id},
        )
        started = time.monotonic()
        try:
            if message.get("v") != WIRE_VERSION:
                raise EngineError(f"Unknown engine wire version {message.get('v')!r}.")
            request = request_from_wire(message["request"])
            wanted = self.engine.history_turns(request.text)
            request = dataclasses.replace(request, history=request.history[-wanted:] if wanted else ())
            self.counts["accepted"] += 1
            writer.start()
            generation = self.engine.start(request)
            try:
                async with asyncio.timeout(self.timeout_s):
                    async for piece in generation:
                        writer.add(piece)
            except TimeoutError:
                raise EngineTimeout(f"The reply took longer than {self.timeout_s:g} s.") from None
            result = generation.result
            pieces = await writer.close()
            await writer.send("engine.result", pieces=pieces, result=result_to_wire(result))
            self.counts["completed"] += 1
            logger.info(
                "request %s done in %.0f ms: %d pieces in %d messages",
                request_id,
                (time.monotonic() - started) * 1000,
                writer.pieces,
                writer.messages,
            )
        except asyncio.CancelledError:
            if request_id in self.cancelled_by_client:
                self.cancelled_by_client.discard(request_id)
                self.counts["cancelled"] += 1
                writer.abort()
                logger.info("request %s cancelled by its client after %d pieces", request_id, writer.pieces)
                return  # not re-raised: the task ends as asked, and nothing waits on it
            self.counts["failed"] += 1
            await self._fail(writer, EngineUnavailable("The engine process is shutting down; try again."))
            raise
        except EngineError as exc:
            self.counts["failed"] += 1
            await self._fail(writer, exc)
        except Exception:
            self.counts["failed"] += 1
            logger.exception("request %s failed", request_id)
            await self._fail(writer, EngineError("The engine failed while writing this reply."))

    async def _fail(self, writer: ReplyWriter, error: EngineError) -> None:
        logger.info("request %s ends with %s: %s", writer.request_id, error.code, error.detail)
        try:
            await writer.close()  # the pieces not sent are dropped: the reply failed
        except Exception as exc:
            logger.warning("request %s: a message failed: %r", writer.request_id, exc)
        try:
            await writer.send("engine.error", code=error.code, detail=error.detail, retry_after_ms=error.retry_after_ms)
        except Exception as exc:
            logger.warning("error answer to %s not sent: %r", writer.request_id, exc)

    async def _shutdown(self) -> None:
        self.stopping = True
        if self.tasks:
            logger.info("stopping: %d replies in flight, %g s to finish", len(self.tasks), self.grace_s)
            _, pending = await asyncio.wait(list(self.tasks.values()), timeout=self.grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
