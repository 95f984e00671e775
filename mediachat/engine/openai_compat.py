"""A reply engine that calls an OpenAI-compatible server (vLLM, `transformers serve`) by base URL.

For deployments that outgrow the built-in engine: `MEDIACHAT_ENGINE=mediachat.engine.openai_compat.OpenAIEngine`
with `MEDIACHAT_OPENAI_BASE_URL` (`http://gpu-box:8000`, with or without `/v1`), `MEDIACHAT_OPENAI_MODEL`
and, if the server wants one, `MEDIACHAT_OPENAI_API_KEY`. The catalog search is the retrieval engine's;
its items go to the model in the system turn (`chat_format.messages_build(context_role=False)`: a served
model knows only system, user and assistant turns). The reply streams from `POST /v1/chat/completions`
with `stream=true`; citations of items that were not in the context are cut out as they stream, so the
pieces add up to the stored text.
"""

import asyncio
import email.utils
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

import httpx
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from personalization.models import Content
from training.pipelines.chat_format import ContextItem, citations, messages_build

from .base import (
    Citation,
    Engine,
    EngineBusy,
    EngineError,
    EngineRequest,
    EngineResult,
    EngineTimeout,
    Generation,
)
from .decoding import DecodingParams, Strategy, decoding_resolve
from .retrieval import RetrievalEngine
from .wire import EngineUnavailable

logger = logging.getLogger(__name__)

HISTORY_TURNS = 6  # earlier turns sent with each question (the server's model has its own context limit)
DEFAULT_RETRY_MS = 1000
CONNECT_TIMEOUT_S = 5.0
SPACE_RUN = re.compile(r"[ \t]{2,}")


class GroundedStream:
    """Streamed text with the citations of items outside `allowed` cut out as soon as they are complete.

    What `feed` and `close` return, joined, equals `chat_format.citations_ground(text, allowed)[0]` of the
    whole text: a possible citation (`[`, `[#`, `[#12`) and whitespace are held back until the next
    character shows what they are.
    """

    def __init__(self, allowed: Iterable[int]):
        self.allowed = set(allowed)
        self.held = ""  # the start of what may be a citation
        self.space = ""  # whitespace not passed on yet: it may precede a cut citation or punctuation
        self.started = False  # something was passed on (leading whitespace is dropped)

    def feed(self, text: str) -> str:
        """The part of the text so far that is settled, after what earlier calls returned."""
        out: list[str] = []
        for ch in text:
            self._char(ch, out)
        return "".join(out)

    def close(self) -> str:
        """The rest, once the stream has ended (trailing whitespace dropped)."""
        out: list[str] = []
        held, self.held = self.held, ""
        if held:
            self._emit(held, out)
        self.space = ""
        return "".join(out)

    def _char(self, ch: str, out: list[str]) -> None:
        if self.held:
            if (ch.isdecimal() and len(self.held) > 1) or (ch == "#" and self.held == "["):
                self.held += ch
                return
            if ch == "]" and len(self.held) > 2:
                citation, self.held = self.held + ch, ""
                if int(citation[2:-1]) in self.allowed:
                    self._emit(citation, out)
                return
            held, self.held = self.held, ""  # not a citation after all: plain text
            self._emit(held, out)
        if ch == "[":
            self.held = "["
        elif ch.isspace():
            self.space += ch
        else:
            self._emit(ch, out)

    def _emit(self, text: str, out: list[str]) -> None:
        space = SPACE_RUN.sub(" ", self.space) if self.started else ""
        if text[0] in ".," and space.endswith(" "):
            space = space[:-1]
        out.append(space + text)
        self.space = ""
        self.started = True


def retrieve(request: EngineRequest) -> tuple[EngineResult, list[ContextItem]]:
    """The retrieval engine's reply to `request` (intent, items) and its items as context (blocking)."""
    composed = RetrievalEngine().compose(request)
    ids = [r.content_id for r in composed.recommendations]
    published = dict(Content.objects.filter(id__in=ids).values_list("id", "published_at"))
    items = []
    for r in composed.recommendations:
        when = published.get(r.content_id)
        date = timezone.localtime(when).date().isoformat() if when is not None else ""
        items.append(ContextItem(r.content_id, r.title, r.summary, date=date, section=r.section, kind=r.kind))
    return composed, items


def sampling_fields(params: DecodingParams, *, extra: bool) -> dict:
    """Chat-completions fields that decode as `params` says; `extra`: vLLM's top_k and repetition_penalty too."""
    if params.strategy == Strategy.BEAM:
        error = EngineError("Beam search is not available from an OpenAI-compatible server; use greedy or sample.")
        error.code = "invalid_decoding"
        raise error
    fields: dict = {"max_tokens": params.max_new_tokens}
    if params.strategy == Strategy.SAMPLE:
        fields.update(temperature=params.temperature, top_p=params.top_p)
        if params.seed is not None:
            fields["seed"] = params.seed
        if extra and params.top_k:
            fields["top_k"] = params.top_k
    else:
        fields.update(temperature=0.0, top_p=1.0)
    if extra and params.repetition_penalty != 1.0:
        fields["repetition_penalty"] = params.repetition_penalty
    return fields


def retry_after_ms(value: str | None) -> int:
    """A Retry-After header (seconds, or an HTTP date) in milliseconds; a second when absent or unreadable."""
    if not value:
        return DEFAULT_RETRY_MS
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_MS
    return max(0, round((when - datetime.now(UTC)).total_seconds() * 1000))


def _server_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:200]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error or data.get("message") or data.get("detail") or data)[:200]
    return str(data)[:200]


def http_error(response: httpx.Response, body: bytes) -> EngineError:
    """The `EngineError` for a refusal: 429 and 503 busy (with the server's Retry-After), 408 and 504 timeout."""
    message = _server_message(body)
    detail = f"The model server answered HTTP {response.status_code}: {message}"
    if response.status_code in (429, 503):
        return EngineBusy(detail, retry_after_ms=retry_after_ms(response.headers.get("retry-after")))
    if response.status_code in (408, 504):
        return EngineTimeout(detail)
    return EngineError(detail)


class ServerStream:
    """The content deltas of one chat-completions stream, read by a task of their own.

    The reader may be cancelled at any point, a `yield` included; the HTTP request lives in its own task
    (its timeout cannot fire into the reader's code) and `close()` cancels it, which closes the connection.
    """

    def __init__(self, engine: "OpenAIEngine", payload: dict, timeout_s: float):
        self.engine = engine
        self.payload = payload
        self.timeout_s = timeout_s
        self.usage: dict = {}
        self.finish_reason: str | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        self.task = asyncio.create_task(self._read())
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _read(self) -> None:
        engine = self.engine
        try:
            async with asyncio.timeout(self.timeout_s), engine.client(self.timeout_s) as client:
                async with client.stream("POST", engine.url, json=self.payload, headers=engine.headers()) as response:
                    if response.status_code != 200:
                        raise http_error(response, await response.aread())
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue  # blank separators, comments, `event:` lines
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if chunk.get("error"):
                            raise EngineError(f"The model server failed: {_server_message(data.encode())}")
                        self.usage = chunk.get("usage") or self.usage
                        for choice in chunk.get("choices") or ():
                            self.finish_reason = choice.get("finish_reason") or self.finish_reason
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                self.queue.put_nowait(content)
            self.queue.put_nowait(None)
        except EngineError as exc:
            self.queue.put_nowait(exc)
        except TimeoutError:
            self.queue.put_nowait(EngineTimeout(f"The model server did not finish within {self.timeout_s:g} s."))
        except httpx.TimeoutException as exc:
            self.queue.put_nowait(EngineTimeout(f"The model server timed out: {exc!r}"))
        except httpx.ConnectError as exc:
            self.queue.put_nowait(EngineUnavailable(f"The model server at {engine.base_url} cannot be reached: {exc}"))
        except (httpx.HTTPError, ValueError) as exc:
            self.queue.put_nowait(EngineError(f"The model server's stream broke off: {exc!r}"))
        except Exception as exc:
            logger.exception("reading the model server's stream failed")
            self.queue.put_nowait(EngineError(f"Reading the model server's stream failed: {exc!r}"))


class OpenAIGeneration(Generation):
    def __init__(self, engine: "OpenAIEngine", request: EngineRequest):
        super().__init__()
        self.engine = engine
        self.request = request

    async def __aiter__(self) -> AsyncIterator[str]:
        engine = self.engine
        timeout_s = float(settings.MEDIACHAT["ENGINE_TIMEOUT_S"])
        params = self.request.decoding or decoding_resolve(DecodingParams(), settings.MEDIACHAT.get("DECODING"))
        fields = sampling_fields(params, extra=engine.extra_sampling)
        async with engine.slot():
            composed, items = await engine.retrieve_off_loop(self.request)
        messages = messages_build(
            question=self.request.text,
            items=items,
            history=[(t.role, t.text) for t in self.request.history],
            context_role=False,
        )
        payload = {
            "model": engine.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **fields,
        }
        grounded = GroundedStream(item.id for item in items)
        text: list[str] = []
        stream = ServerStream(engine, payload, timeout_s)
        try:
            async for content in stream:
                piece = grounded.feed(content)
                if piece:
                    text.append(piece)
                    yield piece
        finally:
            await stream.close()
        tail = grounded.close()
        if tail:
            text.append(tail)
            yield tail
        reply = "".join(text)
        by_id = {r.content_id: r for r in composed.recommendations}
        cited = [by_id[i] for i in citations(reply) if i in by_id]
        logger.info("openai reply of %d characters (finish %s)", len(reply), stream.finish_reason)
        self._result = EngineResult(
            text=reply,
            engine=engine.name,
            cited=[Citation(r.content_id, r.title, r.url) for r in cited],
            recommendations=cited,
            prompt_tokens=stream.usage.get("prompt_tokens"),
            completion_tokens=stream.usage.get("completion_tokens"),
            decoding={**params.as_dict(), "model": engine.model, "sent": fields, "finish_reason": stream.finish_reason},
            intent=composed.intent,
            entities=composed.entities,
        )


class OpenAIEngine(Engine):
    """Replies written by a model behind an OpenAI-compatible chat-completions endpoint, streamed."""

    name = "openai"
    extra_sampling = True  # send top_k and repetition_penalty (vLLM and transformers serve take them)

    def __init__(self) -> None:
        config = settings.MEDIACHAT
        self.base_url = config["OPENAI_BASE_URL"].rstrip("/")
        if not self.base_url:
            raise ImproperlyConfigured("OpenAIEngine needs MEDIACHAT_OPENAI_BASE_URL (say http://127.0.0.1:8000).")
        self.url = self.base_url + ("/chat/completions" if self.base_url.endswith("/v1") else "/v1/chat/completions")
        self.model = config["OPENAI_MODEL"]
        self.api_key = config["OPENAI_API_KEY"]
        self.retrieval = RetrievalEngine()
        self.retrieve_off_loop = database_sync_to_async(retrieve, thread_sensitive=False)

    def slot(self) -> asyncio.Semaphore:
        """The searches this loop runs at once (the retrieval engine's slots)."""
        return self.retrieval.slot()

    def history_turns(self, text: str) -> int:
        return HISTORY_TURNS

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def client(self, timeout_s: float) -> httpx.AsyncClient:
        """A client for one reply: closing it (the reply ended or was cancelled) closes the HTTP stream."""
        return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S))

    def start(self, request: EngineRequest) -> Generation:
        return OpenAIGeneration(self, request)
