"""The engine in its own process, the client side: `ChannelLayerEngine`, which web processes use.

With Redis, web processes hold no model. `ChannelLayerEngine.start` sends the request to the channel
`MEDIACHAT["ENGINE_CHANNEL"]`, a normal channel that every `manage.py run_engine` process receives from,
so Redis hands each request to one of them; the `remote_server.EngineServer` there runs the locally served
engine and streams the reply back to a process-local reply channel of the web process. The messages and
their codecs are `wire`'s.

The client checks the numbers of the reply's messages: a gap ends the reply with an error (`StreamBroken`)
rather than storing a garbled one, and silence for `IDLE_LIMIT_S` takes the engine process for lost
(`EngineUnavailable`). The first message says that the request is taken, by which process and with which
model; a busy answer waits `BUSY_GRACE_S` for another process that may have taken a duplicate of the
request. A reply given up on (its task cancelled) is cancelled on the serving process.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from django.conf import settings

from .base import Engine, EngineBusy, EngineRequest, EngineTimeout, Generation
from .wire import (
    BUSY_RETRY_MS,
    HEARTBEAT_S,
    WIRE_VERSION,
    EngineUnavailable,
    StreamBroken,
    error_from_wire,
    real_layer,
    request_to_wire,
    result_from_wire,
)

logger = logging.getLogger(__name__)

IDLE_LIMIT_S = 5 * HEARTBEAT_S  # silence after which the client takes the engine process for lost
TIMEOUT_MARGIN_S = 5.0  # the client waits this much beyond ENGINE_TIMEOUT_S for the server's own timeout
BUSY_GRACE_S = 0.2  # a busy answer waits this long for another process's first message before it counts
HISTORY_TURNS = 20  # turns a web process sends with each request; the served engine keeps what it wants


_background: set[asyncio.Task] = set()  # cancels on their way to an engine process (strong references)


class RemoteGeneration(Generation):
    def __init__(self, engine: "ChannelLayerEngine", request: EngineRequest):
        super().__init__()
        self.engine = engine
        self.request = request
        self.request_id = uuid.uuid4().hex
        self.server: str | None = None  # the serving process's own channel, from its first message

    async def __aiter__(self) -> AsyncIterator[str]:
        layer = real_layer()
        config = settings.MEDIACHAT
        reply = await layer.new_channel()  # the default prefix: all process-local channels share one list
        inbox: asyncio.Queue = asyncio.Queue()
        pump = asyncio.create_task(_pump(layer, reply, inbox))
        loop = asyncio.get_running_loop()
        accept_s = float(config.get("ENGINE_ACCEPT_TIMEOUT_S", 5.0))
        deadline = loop.time() + float(config["ENGINE_TIMEOUT_S"]) + TIMEOUT_MARGIN_S
        ended = False  # the server has finished with this request (result or error)
        try:
            request = {
                "type": "engine.request",
                "v": WIRE_VERSION,
                "id": self.request_id,
                "reply": reply,
                "expires": time.time() + accept_s,
                "request": request_to_wire(self.request),
            }
            # Shielded: a cancellation that lands inside the Redis command was swallowed there (measured: the
            # interrupted reply streamed on to its end, and the next message's ack waited ~1 s for it). Now
            # the caller is cancelled at once, the request still goes out whole, and `finally` cancels it
            # on the engine process that takes it.
            sending = asyncio.ensure_future(layer.send(config["ENGINE_CHANNEL"], request))
            sending.add_done_callback(_consume_exception)
            try:
                await asyncio.shield(sending)
            except ChannelFull:
                ended = True
                raise EngineBusy("The engine queue is full; try again shortly.", retry_after_ms=BUSY_RETRY_MS) from None
            except Exception as exc:  # Redis down or unreachable
                ended = True
                raise EngineUnavailable(f"The channel layer cannot take the request: {exc!r}") from exc
            expected = 0
            refused: dict | None = None  # a busy answer, held for BUSY_GRACE_S in case another process took it
            while True:
                now = loop.time()
                if now >= deadline:
                    raise EngineTimeout(f"No reply from the engine within {config['ENGINE_TIMEOUT_S']:g} s.")
                wait = accept_s if self.server is None else min(self.engine.idle_limit_s, deadline - now)
                if refused is not None:
                    wait = max(refused["until"] - now, 0)
                try:
                    # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives just as
                    # the awaited message does, and the interrupted reply would stream on to its end.
                    async with asyncio.timeout(wait):
                        message = await inbox.get()
                except TimeoutError:
                    if refused is not None:
                        ended = True
                        raise error_from_wire(refused) from None
                    if self.server is None:
                        # Expired unserved, as a rule; should an engine take it late all the same, the cancel
                        # sent from `finally` stops it.
                        raise EngineUnavailable(
                            f"No engine process took the request within {accept_s:g} s; "
                            "is `manage.py run_engine` running?"
                        ) from None
                    if loop.time() >= deadline:
                        raise EngineTimeout(
                            f"No reply from the engine within {config['ENGINE_TIMEOUT_S']:g} s."
                        ) from None
                    raise EngineUnavailable(
                        f"The engine process stopped answering for {self.engine.idle_limit_s:g} s."
                    ) from None
                if isinstance(message, BaseException):
                    raise EngineUnavailable(f"The channel layer failed: {message}") from message
                if refused is not None and message.get("server") == refused["server"]:
                    continue
                if self.server is not None and message.get("server") != self.server:
                    # Another process took the same request too (channels-redis can hand a message out twice
                    # when two processes receive at once): only the first is heard, the other is stopped.
                    if message.get("seq") == 0 and message.get("type") != "engine.error":
                        _spawn(layer.send(message["server"], {"type": "engine.cancel", "id": self.request_id}))
                    continue
                if message.get("seq") != expected:
                    raise StreamBroken(
                        f"Reply message {expected} was lost on the way (got {message.get('seq')}); "
                        "the reply is incomplete."
                    )
                expected += 1
                kind = message.get("type")
                if expected == 1 and kind != "engine.error":  # the first message: the request is taken
                    self.server = message["server"]
                    self.model_version_id = message.get("model_version_id")
                if kind in ("engine.pieces", "engine.result"):
                    for piece in message.get("pieces") or ():
                        yield piece
                    if kind == "engine.result":
                        ended = True
                        self._result = result_from_wire(message["result"])
                        return
                elif kind == "engine.error":
                    if expected == 1 and refused is None and message.get("code") == EngineBusy.code:
                        # A duplicate of the request (see channels-redis #163) may have reached a full process
                        # while another took the original: wait a moment for the taker's first message.
                        refused = {**message, "until": loop.time() + BUSY_GRACE_S}
                        expected = 0
                        continue
                    ended = True
                    raise error_from_wire(message)
        finally:
            if not ended:
                # Cancelled, or given up on: the serving process must stop writing this reply. Sent from a
                # task of its own so that the canceller is not kept waiting on Redis.
                task = _spawn(self._cancel_on_server(layer, inbox, accept_s))
                task.add_done_callback(lambda _: pump.cancel())
            else:
                pump.cancel()

    async def _cancel_on_server(self, layer: BaseChannelLayer, inbox: asyncio.Queue, accept_s: float) -> None:
        try:
            if self.server is None:
                # Not accepted yet: an engine may still take it; its first message names the process to tell.
                async with asyncio.timeout(accept_s):
                    while self.server is None:
                        message = await inbox.get()
                        if isinstance(message, BaseException) or message.get("type") == "engine.error":
                            return
                        if message.get("seq") == 0:
                            self.server = message["server"]
            await layer.send(self.server, {"type": "engine.cancel", "id": self.request_id})
        except Exception as exc:  # TimeoutError included: nobody took it, and it expires unserved
            logger.debug("cancel of engine request %s not sent: %r", self.request_id, exc)


def _consume_exception(future: asyncio.Future) -> None:
    """Mark a background future's exception as seen (it is reported where it matters, or not at all)."""
    if not future.cancelled():
        future.exception()


def _spawn(coroutine) -> asyncio.Task:
    task = asyncio.ensure_future(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def cancels_flush() -> None:
    """Wait for the cancels this process is still sending (a web process stopping, or a test ending)."""
    while _background:
        await asyncio.gather(*_background, return_exceptions=True)


async def _pump(layer: BaseChannelLayer, channel: str, inbox: asyncio.Queue) -> None:
    """Move messages from `channel` to `inbox`; the reader waits on the queue, which a timeout cannot corrupt."""
    try:
        while True:
            inbox.put_nowait(await layer.receive(channel))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        inbox.put_nowait(exc)


class ChannelLayerEngine(Engine):
    """The client of `manage.py run_engine` processes, over the channel layer (Redis)."""

    name = "remote"
    idle_limit_s = IDLE_LIMIT_S  # silence after which a reply's engine process is taken for lost

    def history_turns(self, text: str) -> int:
        # The served engine lives in another process: it gets as many turns as any engine may want, and the
        # server keeps those its engine's own `history_turns` asks for.
        return int(settings.MEDIACHAT.get("ENGINE_HISTORY_TURNS", HISTORY_TURNS))

    def start(self, request: EngineRequest) -> Generation:
        return RemoteGeneration(self, request)
