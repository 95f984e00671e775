"""The language-model engine: retrieval grounds a causal LM whose tokens stream to the reader as they come.

One reply:

1. On a worker thread (the database is blocking): which chat model should serve (checked at most every
   CHECK_SECONDS), the decoding defaults, the follow-up plan against the conversation
   (`followups.followup_resolve`) and the catalog items it retrieves.
2. The prompt (`context.context_build`): system prompt, history, items and question within the budget:
   the model's context less the reply's `max_new_tokens` (but never under half the context), capped by
   `CONTEXT_TOKENS` when set.
3. The batch scheduler's thread decodes it with every other reply in flight; each token reaches the
   event loop through `call_soon_threadsafe` and is detokenised incrementally (`streaming`).
   Cancelling the iterating task (stop, a newer message, a closed socket) cancels the request in the
   scheduler; a full queue raises `EngineBusy`, a reply over `ENGINE_TIMEOUT_S` `EngineTimeout`.
4. Grounding: citations of items that were not in the prompt are removed. The pieces streamed are the
   model's raw text; `EngineResult.text` is the grounded text, which the consumer stores and sends in
   `done`, so the two differ exactly when the model cited an item it was not given. A reply stored
   before it finished (interrupted) should be stored as `LMGeneration.ground(streamed text)`.

The model: `MEDIACHAT["CHAT_MODEL"]` when set (a user's model; `model_version_id` None), else the active
chat-lm `ModelVersion`'s `artifact_path`. Loading it, swapping it for another version at a reply boundary
and the engine's status for the admin are `serving.ModelServing`'s, the base of `LMEngine`. With no model
at all (or one that fails to load), replies are catalog search results with a notice, and
`engine_status()` says why for the admin.
"""

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator

from django.conf import settings
from django.utils import timezone

from mediachat.keptdb import kept
from mediachat.selectors import decoding_defaults
from training.models import ModelKind, ModelVersion
from training.pipelines.chat_format import citations_ground

from .actions import catalog_knows, plan_reply
from .base import (
    Engine,
    EngineBusy,
    EngineError,
    EngineRequest,
    EngineResult,
    EngineTimeout,
    Generation,
)
from .batching import Finish, QueueFull, Reason, SchedulerStopped
from .context import ContextTooSmall, context_build
from .followups import FollowUp, Found, Kind, followup_resolve, followup_retrieve
from .prepared import (
    INTENTS,
    MALFORMED_CITATION_RE,
    Prepared,
    found_item,
    model_result,
    reply_entities,
    search_text,
    understanding_dict,
)
from .retrieval import (
    RetrievalEngine,
    split_pieces,
    understand_safely,
    written_result,
)
from .serving import (  # State, STATUS_KEY and engine_status re-exported: callers know them from here
    STATUS_KEY,  # noqa: F401
    ModelServing,
    Served,
    State,  # noqa: F401
    Target,
    _status_publish,
    engine_status,  # noqa: F401
)
from .streaming import IncrementalDecoder

logger = logging.getLogger(__name__)

NO_MODEL_NOTICE = "The assistant is unavailable: no chat model is active; these are catalog search results."
LOAD_FAILED_NOTICE = (
    "The assistant is unavailable: the chat model could not be loaded; these are catalog search results."
)
CHECK_SECONDS = 2.0  # how often a reply may look up which chat model is active
CONTEXT_ITEMS = 5  # catalog items retrieved into the prompt
HISTORY_TURNS = 8  # earlier turns asked of the consumer; the budget drops the oldest when it must
SHORTER_FLOOR = 16  # "shorter": at most half the previous reply's tokens, but never fewer than this
UNFINISHED_CITATION_RE = re.compile(r"\[#?\d*$")  # a citation cut off by an interruption: "[#90"


class LMGeneration(Generation):
    def __init__(self, engine: "LMEngine", request: EngineRequest) -> None:
        super().__init__()
        self.engine = engine
        self.request = request
        self.context_ids: frozenset[int] | None = None  # the items the prompt held, once it is built

    def ground(self, text: str) -> str:
        """`text` (what was streamed so far) without citations of items the prompt did not hold.

        For a reply stored before its result exists (interrupted): the raw pieces may cite what
        grounding would have removed. Before the prompt is built nothing can have been streamed.
        """
        if self.context_ids is None:
            return text
        text = MALFORMED_CITATION_RE.sub("", UNFINISHED_CITATION_RE.sub("", text))
        return citations_ground(text, self.context_ids)[0]

    async def __aiter__(self) -> AsyncIterator[str]:
        engine = self.engine
        # Retrieval (queries, an embedding) runs a few at a time per process: a reply cancelled while it
        # waits for a slot (the reader sent something newer) costs nothing, and the database is not
        # flooded with searches nobody will read when many messages arrive at once.
        async with engine.search_slot():
            prepared = await engine.prepare_off_loop(self.request)
        if prepared.written:
            result = written_result(prepared.written, prepared.understanding, engine=engine.name)
            for piece in split_pieces(result.text):
                yield piece
            self._result = result
            return
        served = await engine.served_for(prepared.target)
        if served is None:
            async with engine.search_slot():
                result = await engine.fallback_off_loop(self.request, prepared)
            delay = settings.MEDIACHAT.get("STREAM_DELAY_MS", 0) / 1000
            for i, piece in enumerate(split_pieces(result.text)):
                if i and delay > 0:
                    await asyncio.sleep(delay)
                yield piece
            self._result = result
            return
        self.model_version_id = served.target.version_id
        pieces = self._generate(served, prepared)
        try:
            async for piece in pieces:
                yield piece
        finally:
            # Closing the outer generator (the reader went away) must close the inner one now, so
            # its request leaves the scheduler at once rather than when the garbage collector calls.
            await pieces.aclose()
            served.release()

    async def _generate(self, served: Served, prepared: Prepared) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        params = prepared.params
        tokenizer = served.tokenizer
        if prepared.follow.kind == Kind.SHORTER and prepared.follow.previous_reply:
            previous = len(tokenizer(prepared.follow.previous_reply, add_special_tokens=False)["input_ids"])
            params = dataclasses.replace(
                params, max_new_tokens=max(min(params.max_new_tokens, previous // 2), min(SHORTER_FLOOR, previous))
            )
        # The prompt keeps at least half the model's context: a reply asking for more new tokens than
        # the rest gets what is left (the scheduler stops it when the context is full).
        max_context = served.loaded.max_context
        budget = max(max_context - params.max_new_tokens, max_context // 2)
        if settings.MEDIACHAT.get("CONTEXT_TOKENS"):
            budget = min(budget, settings.MEDIACHAT["CONTEXT_TOKENS"])
        try:
            built = await loop.run_in_executor(
                None,
                lambda: context_build(
                    tokenizer,
                    question=self.request.text,
                    items=[item.context_item() for item in prepared.items],
                    history=self.request.history,
                    budget_tokens=budget,
                ),
            )
        except ContextTooSmall as exc:
            raise EngineError(f"The prompt budget is too small for this model: {exc}") from None
        self.context_ids = frozenset(item.id for item in built.items)

        queue: asyncio.Queue[int | Finish] = asyncio.Queue()

        def deliver(item: int | Finish) -> None:  # on the scheduler thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

        try:
            request_id = served.scheduler.submit(built.input_ids, params, on_token=deliver, on_done=deliver)
        except QueueFull as exc:
            raise EngineBusy(
                "The assistant is answering many readers right now; please try again shortly.",
                retry_after_ms=exc.retry_after_ms,
            ) from None
        except SchedulerStopped:
            raise EngineError("The chat model was being replaced; please send your message again.") from None

        timeout_s = settings.MEDIACHAT.get("ENGINE_TIMEOUT_S") or 0
        deadline = loop.time() + timeout_s if timeout_s > 0 else None  # None: no limit
        decoder = IncrementalDecoder(tokenizer)
        pieces: list[str] = []
        finish: Finish | None = None
        try:
            while finish is None:
                try:
                    # Only the wait is timed: never the consumer's own work while this generator yields.
                    async with asyncio.timeout_at(deadline):
                        item = await queue.get()
                except TimeoutError:
                    raise EngineTimeout(
                        f"The reply took longer than {timeout_s:g} seconds and was stopped.",
                    ) from None
                if isinstance(item, Finish):
                    finish = item
                    break
                piece = decoder.push(item)
                if piece:
                    pieces.append(piece)
                    yield piece
        finally:
            if finish is None:  # cancelled, timed out or abandoned: free the scheduler's slot
                served.scheduler.cancel(request_id)
        if finish.reason == Reason.ERROR:
            raise EngineError(f"The chat model failed: {finish.error}")
        if finish.reason == Reason.CANCELLED:
            raise EngineError("The reply was cancelled by the engine (it is shutting down or swapping models).")
        tail = decoder.flush()
        if tail:
            pieces.append(tail)
            yield tail
        self._result = model_result(
            prepared,
            engine=self.engine.name,
            version_id=served.target.version_id,
            params=params,
            raw="".join(pieces),
            context_items=built.items,
            prompt_tokens=built.prompt_tokens,
            completion_tokens=finish.completion_tokens,
        )


class LMEngine(ModelServing, Engine):
    """A causal LM grounded by catalog retrieval, decoding every reply of the process in one batch."""

    name = "lm"

    def __init__(self, *, threads: int | None = None) -> None:
        super().__init__(threads=threads)
        self.prepare_off_loop = kept(self.prepare)  # reads only: safe to repeat (mediachat/keptdb.py)
        self.fallback_off_loop = kept(self.fallback_result)
        self._retrieval = RetrievalEngine()
        self._wanted: Target | None = None
        self._checked_at = float("-inf")

    def search_slot(self) -> asyncio.Semaphore:
        """The running loop's retrieval slots (shared with the search-only replies)."""
        return self._retrieval.slot()

    @property
    def model_version_id(self) -> int | None:  # type: ignore[override]
        """The registry version new replies go to now (None: a CHAT_MODEL folder, or no model)."""
        served = self._served
        return served.target.version_id if served is not None else None

    def history_turns(self, text: str) -> int:
        return HISTORY_TURNS

    def start(self, request: EngineRequest) -> Generation:
        return LMGeneration(self, request)

    # Choosing the model (`ModelServing` loads and serves it).

    def target(self) -> Target | None:
        """The model that should serve (blocking: may query the registry; at most every CHECK_SECONDS)."""
        now = time.monotonic()
        if now - self._checked_at < CHECK_SECONDS:
            return self._wanted
        _status_publish()  # now and then, in case the cache lost it (a restart, an eviction)
        path = settings.MEDIACHAT.get("CHAT_MODEL") or ""
        if path:
            self._wanted, self._checked_at = Target(path, None), now
            return self._wanted
        row = (
            ModelVersion.objects.active()
            .filter(kind=ModelKind.CHAT_LM)
            .order_by("-activated_at")
            .values_list("id", "artifact_path")
            .first()
        )
        self._wanted = Target(row[1], row[0]) if row is not None else None
        self._checked_at = now
        return self._wanted

    def warm_up(self) -> None:
        """Look up and start loading the model now rather than with the first reply (blocking: one query)."""
        self._ensure(self.target())

    # One reply's parts.

    def prepare(self, request: EngineRequest) -> Prepared:
        """The model to use, the decoding, the follow-up plan and the items (blocking: queries the database)."""
        now = timezone.now()
        target = self.target()
        params = request.decoding or decoding_defaults()
        understanding = understand_safely(request.text, now)
        plan = plan_reply(request.text, request.history, followup_resolve(request.text, request.history), understanding)
        follow = plan.follow
        # Out of scope by the classifier, but with topic words: the catalog has the last word.
        if plan.written and not (plan.searchable and catalog_knows(follow.terms, now=now)):
            return Prepared(target, params, follow, (), understanding, plan.written)
        if (target is None or self.load_failed_lately(target)) and follow.kind in INTENTS:
            # No model will answer: the search-only reply runs its own search (fallback_result); one is enough.
            return Prepared(target, params, follow, (), understanding)
        found = followup_retrieve(follow, limit=CONTEXT_ITEMS, now=now)
        if not found and follow.kind == Kind.SEARCH:  # nothing on the topic: what is new, as search does
            found = followup_retrieve(FollowUp(Kind.LATEST, filters=follow.filters), limit=CONTEXT_ITEMS, now=now)
            if not found and follow.filters:
                found = followup_retrieve(FollowUp(Kind.LATEST), limit=CONTEXT_ITEMS, now=now)
            found = [Found(f.content, f"Nothing matched; recent: {f.why[0].lower()}{f.why[1:]}") for f in found]
        return Prepared(target, params, follow, tuple(found_item(f, now) for f in found), understanding)

    def fallback_result(self, request: EngineRequest, prepared: Prepared) -> EngineResult:
        """The reply without a model, with the notice why (blocking: a plain search queries the database).

        A plain search or "what's new" is the search-only engine's own reply; a follow-up names the
        items its plan found in one sentence. Either way `engine` is "retrieval": search wrote it.
        """
        notice = LOAD_FAILED_NOTICE if prepared.target in self._failed else NO_MODEL_NOTICE
        if prepared.follow.kind in INTENTS:
            result = self._retrieval.compose(request, understanding=prepared.understanding, follow=prepared.follow)
            return dataclasses.replace(result, notice=notice)
        limit = settings.MEDIACHAT["RECOMMENDATIONS"]
        items = prepared.items[:limit]
        text = search_text(dataclasses.replace(prepared, items=items))
        return EngineResult(
            text=text,
            engine=self._retrieval.name,
            cited=[item.citation() for item in items],
            recommendations=[item.card() for item in items],
            prompt_tokens=None,
            completion_tokens=len(split_pieces(text)),
            decoding={"strategy": "template", "limit": limit},
            intent=INTENTS.get(prepared.follow.kind, "follow_up"),
            entities=reply_entities(prepared.follow),
            model_version_id=None,
            notice=notice,
            understanding=understanding_dict(prepared.understanding),
        )
