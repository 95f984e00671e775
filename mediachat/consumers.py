"""The chat websocket (docs/protocol.md): validate a frame, persist through the services, then answer.

ORM work runs off the loop through `database_sync_to_async`, which closes stale connections around
every call (the Channels guidance for long-lived consumers). The reader is resolved once, on connect.
Messages, reply rows and reply endings go through the loop's group commit (mediachat/groupcommit.py):
a message is stored before its `ack`, in one transaction with other sockets' writes. A reply streams
from an asyncio task, so `stop`, a new message or a disconnect can cancel it; whoever cancels it
stores what was streamed as `interrupted`. A message that comes within `REPLY_BURST_MS` of the
socket's previous one, before that one's reply has ended, waits that long before its reply starts: a
newer message supersedes it, and only a burst's last message is answered (its reply row is created
when it starts).
"""

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from personalization.identity import SESSION_READER_KEY, ReaderRef, reader_from

from . import protocol
from .engine import Engine, EngineError, EngineRequest, EngineResult, Generation, Turn, get_engine
from .engine.decoding import DecodingError, DecodingParams
from .groupcommit import group_commit
from .models import Message, MessageFeedback
from .selectors import decoding_for_request
from .services import ChatError, feedback_set, messages_after
from .services.batches import IncomingMessage, ReplyEnding, ReplyStart

logger = logging.getLogger(__name__)


def db(func):
    """`func` run on a pool thread with its own connection, so sockets do not queue behind one thread."""
    return database_sync_to_async(func, thread_sensitive=False)


class TokenBucket:
    """`rate` frames a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.capacity = float(max(burst, 1))
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


# Turns of a conversation a socket keeps in memory for the engine's context (the conversation state).
HISTORY_KEPT = 20


@dataclass
class ReplyStream:
    reply_to: int
    conversation_id: int
    started: float  # monotonic time the reader's frame arrived
    reply_id: int | None = None  # its row's id, once the reply has started
    starting: asyncio.Future | None = None  # the row's creation, while it is under way
    pieces: list[str] = field(default_factory=list)
    first_token_ms: int | None = None
    finished: bool = False  # someone has taken charge of storing the ending
    task: asyncio.Task | None = None  # None while it waits out a burst
    timer: asyncio.TimerHandle | None = None  # what starts the task after a burst
    generation: Generation | None = None

    def elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)


@dataclass
class ConversationState:
    """The socket's conversation as the engine needs it: the latest turns, with the items replies cited.

    Loaded once when a socket first writes to an existing conversation, then kept up to date from what
    passes through the socket, so a reply costs no history query.
    """

    conversation_id: int
    turns: list[Turn] = field(default_factory=list)

    def add(self, turn: Turn) -> None:
        self.turns.append(turn)
        del self.turns[:-HISTORY_KEPT]


def reader_for_scope(scope: dict) -> ReaderRef:
    """The socket's reader; no reader (empty key) when the session cookie is missing, unknown or expired."""
    user, session = scope.get("user"), scope.get("session")
    if user is not None and user.is_authenticated:
        return reader_from(user, session)
    if session is None:
        return ReaderRef(user_id=None)
    session.get(SESSION_READER_KEY)  # loads it: an unknown or expired cookie leaves no session_key
    if session.session_key is None:
        return ReaderRef(user_id=None)
    return reader_from(user, session)


def recent_turns(*, conversation_id: int, before_id: int, limit: int) -> tuple[Turn, ...]:
    """The last `limit` turns of a conversation before message `before_id`, oldest first, with citations."""
    earlier = list(
        Message.objects.filter(conversation_id=conversation_id, id__lt=before_id)
        .exclude(role=Message.Role.SYSTEM)
        .exclude(role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)
        .exclude(text="")
        .order_by("-id")
        .values_list("id", "role", "text")[:limit]
    )
    assistant_ids = [pk for pk, role, _ in earlier if role == Message.Role.ASSISTANT]
    cited: dict[int, list[int]] = {}
    if assistant_ids:
        links = Message.cited.through.objects.filter(message_id__in=assistant_ids).order_by("id")
        for message_id, content_id in links.values_list("message_id", "content_id"):
            cited.setdefault(message_id, []).append(content_id)
    return tuple(Turn(role=role, text=text, cited=tuple(cited.get(pk, ()))) for pk, role, text in reversed(earlier))


def history_messages(*, reader: ReaderRef, conversation_id: int, after_id: int) -> list[dict]:
    """The `history` event's messages, serialized on the worker thread (urls and feedback are loaded there)."""
    out = []
    for m in messages_after(reader=reader, conversation_id=conversation_id, after_id=after_id):
        feedback: MessageFeedback | None = getattr(m, "feedback", None)
        out.append(
            {
                "id": m.id,
                "role": m.role,
                "text": m.text,
                "status": m.status,
                "reply_to": m.reply_to_id,
                "created_at": m.created_at.isoformat(),
                "cited": [{"id": c.id, "title": c.title, "url": c.reader_url} for c in m.cited.all()],
                "rating": feedback.rating if feedback is not None else None,
            }
        )
    return out


class ChatConsumer(AsyncWebsocketConsumer):
    reader: ReaderRef
    engine: Engine
    bucket: TokenBucket
    stream: ReplyStream | None = None
    conversation: ConversationState | None = None
    closed: bool = False
    last_message_at: float = float("-inf")  # monotonic arrival of the socket's latest new message

    async def dispatch(self, message: dict) -> None:
        # AsyncConsumer.dispatch hops to the sync thread before every event to close its stale database
        # connections; this consumer never uses that thread's connection (its ORM calls go through
        # database_sync_to_async, which closes stale ones around each call), so the hop per frame is skipped.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.reader = await database_sync_to_async(reader_for_scope)(self.scope)
        config = settings.MEDIACHAT
        self.bucket = TokenBucket(config["WS_RATE_PER_S"], config["WS_RATE_BURST"])
        self.engine = get_engine()
        await self.accept()
        await self.send_event(
            "welcome",
            protocol=protocol.PROTOCOL_VERSION,
            max_message_chars=config["MAX_MESSAGE_CHARS"],
            authenticated=self.reader.is_authenticated,
        )

    async def disconnect(self, code: int) -> None:
        self.closed = True
        await self.interrupt()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        received_at = time.monotonic()
        data: dict | None = None
        try:
            data = protocol.decode_frame(text_data, bytes_data)
            if data.get("type") != "stop" and not self.bucket.take():
                raise ChatError("rate_limited", "Too many frames; slow down and resend.")
            command = protocol.parse_command(data)
            if not isinstance(command, protocol.StopReply) and not (self.reader.user_id or self.reader.session_key):
                raise ChatError("no_reader", "This connection has no session; load the chat page first.")
            await self.handle(command, received_at)
        except ChatError as exc:
            client_id = protocol.reply_client_id(data) if data is not None else None
            await self.send_error(exc.code, exc.detail, client_id=client_id)
        except Exception:
            logger.exception("chat frame failed")
            await self.send_error("internal_error", "The server failed; try again.")

    async def handle(self, command: protocol.Command, received_at: float) -> None:
        if isinstance(command, protocol.SendMessage):
            await self.on_message(command, received_at)
        elif isinstance(command, protocol.RateReply):
            feedback = await db(feedback_set)(
                reader=self.reader,
                message_id=command.message_id,
                rating=command.rating,
                reasons=command.reasons,
                comment=command.comment,
            )
            await self.send_event(
                "feedback_saved", message_id=feedback.message_id, rating=feedback.rating, reasons=feedback.reasons
            )
        elif isinstance(command, protocol.FetchHistory):
            messages = await db(history_messages)(
                reader=self.reader, conversation_id=command.conversation_id, after_id=command.after_id
            )
            await self.send_event("history", conversation_id=command.conversation_id, messages=messages)
        else:
            await self.interrupt()

    async def on_message(self, command: protocol.SendMessage, received_at: float) -> None:
        decoding = await self.decoding_for(command.decoding) if command.decoding else None
        # A burst: the reader writes again within REPLY_BURST_MS, before the last message's reply has ended.
        burst_s = float(settings.MEDIACHAT["REPLY_BURST_MS"]) / 1000
        in_burst = received_at - self.last_message_at < burst_s and self.stream is not None and not self.stream.finished
        # A reply waiting out a burst is dropped at once (no task needed); one streaming is interrupted
        # first: its ending and this message are written in the same group commit as a rule, and its
        # `done` still goes out before this message's `ack`.
        self.supersede()
        interrupting = asyncio.ensure_future(self.interrupt()) if self.stream is not None else None
        try:
            received = await group_commit().receive(
                IncomingMessage(
                    reader=self.reader,
                    text=command.text,
                    client_id=command.client_id,
                    conversation_id=command.conversation_id,
                )
            )
        finally:
            if interrupting is not None:
                await interrupting
        message = received.message
        await self.send_event(
            "ack",
            client_id=command.client_id or None,
            message_id=message.id,
            conversation_id=message.conversation_id,
            duplicate=not received.created,
        )
        if not received.created:  # a resend: answered the first time
            return
        self.last_message_at = received_at
        stream = ReplyStream(reply_to=message.id, conversation_id=message.conversation_id, started=received_at)
        self.stream = stream
        question = Turn(role="user", text=message.text)
        state = self.conversation
        history: tuple[Turn, ...] | None = None  # None: loaded by the reply's task
        if state is not None and state.conversation_id == message.conversation_id:
            history = tuple(state.turns)
            state.add(question)
        elif command.conversation_id is None:  # a conversation this message starts
            history = ()
            self.conversation = ConversationState(message.conversation_id, [question])
        launch = functools.partial(self.launch, stream, message.text, decoding, history)
        if in_burst:
            stream.timer = asyncio.get_running_loop().call_later(burst_s, launch)
        else:
            launch()

    def launch(
        self, stream: ReplyStream, text: str, decoding: DecodingParams | None, history: tuple[Turn, ...] | None
    ) -> None:
        if self.stream is stream and not self.closed:
            stream.task = asyncio.create_task(self.run_reply(stream, text, decoding, history))

    def supersede(self) -> None:
        """Drop the reply that waits out a burst: nothing of it was stored or sent."""
        stream = self.stream
        if stream is not None and stream.task is None:
            if stream.timer is not None:
                stream.timer.cancel()
            self.stream = None

    async def decoding_for(self, override: dict) -> DecodingParams | None:
        try:
            return await db(decoding_for_request)(override)
        except DecodingError as exc:
            raise ChatError("invalid_decoding", exc.detail) from None

    async def history_for(self, stream: ReplyStream, question: str) -> tuple[Turn, ...]:
        """The turns before this reply's question, loaded once per socket and conversation, then kept."""
        turns = await db(recent_turns)(
            conversation_id=stream.conversation_id, before_id=stream.reply_to, limit=HISTORY_KEPT
        )
        self.conversation = ConversationState(stream.conversation_id, [*turns, Turn(role="user", text=question)])
        return turns

    async def start_reply(self, stream: ReplyStream) -> bool:
        """The reply's row; False when it could not be stored (the reader is told)."""
        # Shielded: a cancellation does not lose a row that is being written; `interrupt` awaits it instead.
        stream.starting = asyncio.ensure_future(
            group_commit().start(
                ReplyStart(
                    question_id=stream.reply_to,
                    conversation_id=stream.conversation_id,
                    engine=self.engine.name,
                    model_version_id=self.engine.model_version_id,
                )
            )
        )
        try:
            reply = await asyncio.shield(stream.starting)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the reply to message %s could not be stored", stream.reply_to)
            stream.finished = True
            await self.send_error("internal_error", "The server failed to start a reply to your message; try again.")
            return False
        stream.reply_id = reply.id
        return True

    async def run_reply(
        self,
        stream: ReplyStream,
        text: str,
        decoding: DecodingParams | None,
        history: tuple[Turn, ...] | None,
    ) -> None:
        if not await self.start_reply(stream):
            return
        try:
            if history is None:
                history = await self.history_for(stream, text)
            wanted = self.engine.history_turns(text)
            request = EngineRequest(
                text=text,
                history=history[-wanted:] if wanted else (),
                reader_authenticated=self.reader.is_authenticated,
                decoding=decoding,
                reply_id=stream.reply_id,
                conversation_id=stream.conversation_id,
                origin=self.channel_name,
            )
            generation = stream.generation = self.engine.start(request)
            async for piece in generation:
                if stream.first_token_ms is None:
                    stream.first_token_ms = stream.elapsed_ms()
                stream.pieces.append(piece)
                await self.send_event("token", message_id=stream.reply_id, text=piece)
            result = generation.result
        except asyncio.CancelledError:
            raise
        except EngineError as exc:
            logger.warning("engine %s refused reply %s: %s", self.engine.name, stream.reply_id, exc.code)
            stream.finished = True
            await self.finish(stream, Message.Status.FAILED, error=exc)
            return
        except Exception:
            logger.exception("engine %s failed on reply %s", self.engine.name, stream.reply_id)
            stream.finished = True
            await self.finish(stream, Message.Status.FAILED)
            return
        stream.finished = True
        await self.send_event(
            "recommendations",
            message_id=stream.reply_id,
            items=[
                {
                    "id": r.content_id,
                    "title": r.title,
                    "url": r.url,
                    "summary": r.summary,
                    "kind": r.kind,
                    "section": r.section,
                    "why": r.why,
                }
                for r in result.recommendations
            ],
        )
        await self.finish(stream, Message.Status.COMPLETE, result)

    async def interrupt(self) -> None:
        """Stop the reply streaming now, if any, and store it as `interrupted` with what was streamed."""
        self.supersede()
        stream, self.stream = self.stream, None
        if stream is None or stream.task is None:
            return
        if stream.finished:  # it is storing its own ending: let it finish, `done` included
            await asyncio.wait([stream.task])
            return
        stream.finished = True
        stream.task.cancel()
        if stream.reply_id is None:  # its row is being written, or could not be
            if stream.starting is None:
                await asyncio.wait([stream.task])
                return
            try:
                stream.reply_id = (await asyncio.shield(stream.starting)).id
            except Exception:  # reported by the reply's task
                await asyncio.wait([stream.task])
                return
        await self.finish(stream, Message.Status.INTERRUPTED)
        await asyncio.wait([stream.task])

    async def finish(
        self,
        stream: ReplyStream,
        status: str,
        result: EngineResult | None = None,
        *,
        error: EngineError | None = None,
    ) -> None:
        """Store how the reply ended, then send its `done` (after an `error` when it failed)."""
        generation = stream.generation
        if result is not None:
            text = result.text
        else:  # cut short: what was streamed, less citations of items the model was not given
            text = "".join(stream.pieces)
            text = generation.ground(text) if generation is not None and text else text
        total_ms = stream.elapsed_ms()
        cited = result.cited if result is not None else []
        model_version_id = result.model_version_id if result is not None else None
        if model_version_id is None and generation is not None:
            model_version_id = generation.model_version_id
        ending = ReplyEnding(
            message_id=stream.reply_id,
            text=text,
            status=status,
            cited_ids=tuple(c.content_id for c in cited),
            decoding=result.decoding if result is not None else None,
            prompt_tokens=result.prompt_tokens if result is not None else None,
            completion_tokens=result.completion_tokens if result is not None else len(stream.pieces),
            latency_ms=total_ms,
            first_token_ms=stream.first_token_ms,
            intent=result.intent if result is not None else "",
            confidence=result.confidence if result is not None else None,
            entities=result.entities if result is not None else None,
            model_version_id=model_version_id,
            engine=result.engine if result is not None and result.engine != self.engine.name else "",
            reply_to_id=stream.reply_to,
            understanding=result.understanding if result is not None else None,
        )
        try:
            await group_commit().finish(ending)
        except Exception:
            logger.exception("storing reply %s as %s failed", stream.reply_id, status)
            status = Message.Status.FAILED
            error = None
        if self.conversation is not None and self.conversation.conversation_id == stream.conversation_id and text:
            self.conversation.add(Turn(role="assistant", text=text, cited=ending.cited_ids))
        if error is not None:
            await self.send_error(error.code, error.detail, retry_after_ms=error.retry_after_ms)
        elif status == Message.Status.FAILED:
            await self.send_error("internal_error", "The server failed while writing this reply.")
        extra: dict[str, object] = {}
        if result is not None and result.notice:
            extra["notice"] = result.notice
        await self.send_event(
            "done",
            message_id=stream.reply_id,
            reply_to=stream.reply_to,
            status=status,
            text=text,
            cited=[{"id": c.content_id, "title": c.title, "url": c.url} for c in cited],
            timing={"first_token_ms": stream.first_token_ms, "total_ms": total_ms},
            model_version=model_version_id,
            **extra,
        )

    async def send_error(
        self, code: str, detail: str, *, client_id: str | None = None, retry_after_ms: int | None = None
    ) -> None:
        fields: dict[str, object] = {"code": code, "detail": detail}
        if client_id:
            fields["client_id"] = client_id
        if retry_after_ms is not None:
            fields["retry_after_ms"] = retry_after_ms
        await self.send_event("error", **fields)

    async def send_event(self, kind: str, **fields: object) -> None:
        if self.closed:
            return
        try:
            await self.send(text_data=protocol.event(kind, **fields))
        except OSError:  # the client went away; its disconnect is on its way
            self.closed = True
