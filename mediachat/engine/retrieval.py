"""A reply engine without a language model: search the catalog and say, in one sentence, what it found.

"more like that" (a message with no topic words of its own) searches the topic of the reader's
previous message and prefers items the previous reply did not name yet.
"""

import asyncio
import logging
import re
import weakref
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from mediachat.keptdb import kept
from personalization.models import Content
from personalization.search import CatalogFilter, SearchHit, catalog_search, query_terms
from personalization.understanding.recognizer import Understanding, understand

from .base import Citation, Engine, EngineRequest, EngineResult, Generation, Recommendation, Turn

logger = logging.getLogger(__name__)

# Words that ask for more of the same rather than naming a topic ("more like that", "other articles").
FOLLOW_UP_WORDS = frozenset(
    """like similar another else again same one ones others other kind sort stuff things news story stories
    article articles piece pieces content topic that those""".split()
)
PIECE_RE = re.compile(r"\S+\s*")
HISTORY_TURNS = 4


def topic_terms(text: str) -> list[str]:
    """The words of `text` that name a topic: search terms without the follow-up words."""
    return [t for t in query_terms(text) if t not in FOLLOW_UP_WORDS]


def understand_safely(text: str, now: datetime) -> Understanding | None:
    """The message's intent and entities, or None when understanding failed (the reply goes on without)."""
    try:
        return understand(text, now=now)
    except Exception:
        logger.exception("understanding a message failed; it is answered without intent and entities")
        return None


def written_result(text: str, understanding: Understanding | None, *, engine: str) -> EngineResult:
    """A reply written without retrieval or model (small talk, help, out of scope), with the understanding."""
    return EngineResult(
        text=text,
        engine=engine,
        completion_tokens=len(split_pieces(text)),
        decoding={"strategy": "written"},
        intent=understanding.intent if understanding is not None else "",
        confidence=understanding.confidence if understanding is not None else None,
        understanding=understanding.as_dict() if understanding is not None else None,
    )


def split_pieces(text: str) -> list[str]:
    """`text` cut into words, each with its trailing space, so that joining them gives `text` back."""
    return PIECE_RE.findall(text)


def quoted_list(parts: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_item(content: Content, now: datetime) -> str:
    """How a reply names an item: “Title” (Podcast, Science, 12 Mar)."""
    details = []
    if content.kind != Content.Kind.ARTICLE:
        details.append(content.get_kind_display())
    if content.section is not None:
        details.append(content.section.name)
    if content.published_at is not None:
        published = timezone.localtime(content.published_at)
        fmt = "%-d %b" if published.year == timezone.localtime(now).year else "%-d %b %Y"
        details.append(published.strftime(fmt))
    suffix = f" ({', '.join(details)})" if details else ""
    return f"“{content.title}”{suffix}"


def _pieces_phrase(n: int) -> str:
    return "one piece" if n == 1 else f"{n} pieces"


def _previous_topic(history: Sequence[Turn]) -> tuple[list[str], str]:
    """The topic terms of the latest earlier reader turn that had some, and the reply that followed it."""
    for i in range(len(history) - 1, -1, -1):
        turn = history[i]
        if turn.role == "user":
            terms = topic_terms(turn.text)
            if terms:
                replies = [t.text for t in history[i + 1 :] if t.role == "assistant"]
                return terms, " ".join(replies)
    return [], ""


class RetrievalGeneration(Generation):
    def __init__(self, engine: "RetrievalEngine", request: EngineRequest):
        super().__init__()
        self.engine = engine
        self.request = request

    async def __aiter__(self) -> AsyncIterator[str]:
        delay = settings.MEDIACHAT.get("STREAM_DELAY_MS", 0) / 1000
        # The search touches the database: off the loop, on a pool thread, a few at a time. A reply
        # cancelled while it waits for a slot (the reader sent something newer) costs nothing.
        async with self.engine.slot():
            result = await self.engine.compose_off_loop(self.request)
        for i, piece in enumerate(split_pieces(result.text)):
            if i and delay > 0:
                await asyncio.sleep(delay)
            yield piece
        self._result = result


class RetrievalEngine(Engine):
    """Catalog search behind a one-sentence reply; recommendations are the items it names."""

    name = "retrieval"
    concurrency = 2  # searches running at once per event loop; the rest wait for a slot

    def __init__(self) -> None:
        self.compose_off_loop = kept(self.compose)  # reads only: safe to repeat (mediachat/keptdb.py)
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def slot(self) -> asyncio.Semaphore:
        """The running loop's search slots (a semaphore belongs to one loop)."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.concurrency)
        return slots

    def history_turns(self, text: str) -> int:
        return 0 if topic_terms(text) else HISTORY_TURNS

    def start(self, request: EngineRequest) -> Generation:
        return RetrievalGeneration(self, request)

    def compose(self, request: EngineRequest, *, understanding=None, follow=None) -> EngineResult:
        """The whole reply, written at once (blocking: searches the catalog).

        `understanding` and `follow` are the caller's when it has them (LMEngine's fallback); otherwise
        the message is understood here, and a written reply (small talk, help, out of scope) is answered.
        """
        from .actions import catalog_knows, date_phrase, plan_reply  # actions → followups → this module
        from .followups import followup_resolve

        limit = settings.MEDIACHAT["RECOMMENDATIONS"]
        now = timezone.now()
        if follow is None:
            understanding = understand_safely(request.text, now)
            plan = plan_reply(
                request.text, request.history, followup_resolve(request.text, request.history), understanding
            )
            follow = plan.follow
            if plan.written and not (plan.searchable and catalog_knows(follow.terms, now=now)):
                return written_result(plan.written, understanding, engine=self.name)
        filters: CatalogFilter | None = follow.filters
        terms = list(follow.terms) if filters else topic_terms(request.text)
        intent = "search"
        already_named = ""
        if not terms:
            terms, already_named = _previous_topic(request.history)
            intent = "follow_up" if terms else "whats_new"
        topic = " ".join(terms[:6])

        hits: list[SearchHit] = []
        if terms:
            hits = catalog_search(topic, limit=limit * 2 if already_named else limit, now=now, filters=filters)
            if already_named:
                unseen = [h for h in hits if f"“{h.content.title}”" not in already_named]
                hits = (unseen or hits)[:limit]
        if hits:
            described = quoted_list([describe_item(h.content, now) for h in hits])
            if intent == "follow_up":
                text = f"More on {topic}: {described}."
            else:
                verb = "is" if len(hits) == 1 else "are"
                text = f"Here {verb} {_pieces_phrase(len(hits))} on {topic}: {described}."
        else:
            when = date_phrase(filters)
            hits = catalog_search("", limit=limit, now=now, filters=filters) if filters and not terms else []
            in_range = bool(hits) or not when  # "what's new this week" found nothing this week
            hits = hits or catalog_search("", limit=limit, now=now)
            described = quoted_list([describe_item(h.content, now) for h in hits]) if hits else ""
            if terms and hits:
                text = f"I couldn't find anything on {topic}{when} in the catalog; here is what's new: {described}."
            elif terms:
                text = f"I couldn't find anything on {topic}{when} in the catalog, and nothing is published yet."
            elif hits and not in_range:
                text = f"I found nothing{when}; here is what's new: {described}."
            elif hits:
                text = f"Here is what's new: {described}."
            else:
                text = "Nothing is published in the catalog yet."

        pieces = split_pieces(text)
        return EngineResult(
            text=text,
            engine=self.name,
            cited=[Citation(h.content.id, h.content.title, h.content.reader_url) for h in hits],
            recommendations=[
                Recommendation(
                    content_id=h.content.id,
                    title=h.content.title,
                    url=h.content.reader_url,
                    summary=h.content.summary,
                    kind=h.content.kind,
                    section=h.content.section.name if h.content.section is not None else "",
                    why=h.why,
                )
                for h in hits
            ],
            prompt_tokens=len(query_terms(request.text)),
            completion_tokens=len(pieces),
            decoding={
                "strategy": "template",
                "limit": limit,
                "stream_delay_ms": settings.MEDIACHAT.get("STREAM_DELAY_MS", 0),
            },
            intent=intent,
            entities=[{"type": "topic", "value": t} for t in terms],
            understanding=understanding.as_dict() if understanding is not None else None,
        )
