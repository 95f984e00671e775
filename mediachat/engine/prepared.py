"""What one reply of the language-model engine works from, and the replies written from it.

`LMEngine.prepare` gathers a `Prepared` on a worker thread: the model to ask, the decoding, the plan
(`actions.plan_reply`) and the catalog items found, as plain `FoundItem`s. From it come the stored reply
of a model's text (`model_result`: citations grounded in the items the prompt held, cards) and the
one-sentence reply that names the items when no model answers (`search_text`).
"""

import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from training.pipelines.chat_format import ContextItem, citations_ground

from .actions import date_phrase
from .base import Citation, EngineResult, Recommendation
from .decoding import DecodingParams
from .followups import FollowUp, Found, Kind
from .retrieval import Understanding, describe_item, quoted_list
from .serving import Target

# A citation the model never closed ("[#48 faster"), anywhere: not a citation, and no text for a reader.
MALFORMED_CITATION_RE = re.compile(r"\[#\d*(?![\d\]])")


@dataclass(frozen=True)
class FoundItem:
    """A retrieved item as plain data, read on the worker thread (no lazy queries on the event loop)."""

    id: int
    title: str
    url: str
    summary: str
    kind: str
    section: str
    date: str
    why: str
    described: str  # as the search-only reply names it

    def context_item(self) -> ContextItem:
        return ContextItem(self.id, self.title, self.summary, self.date, self.section, self.kind)

    def citation(self) -> Citation:
        return Citation(self.id, self.title, self.url)

    def card(self, why: str | None = None) -> Recommendation:
        return Recommendation(self.id, self.title, self.url, self.summary, self.kind, self.section, why or self.why)


def found_item(found: Found, now: datetime) -> FoundItem:
    """`found` as plain data, read on the worker thread."""
    content = found.content
    published = timezone.localtime(content.published_at).date().isoformat() if content.published_at else ""
    return FoundItem(
        id=content.id,
        title=content.title,
        url=content.reader_url,
        summary=content.summary,
        kind=content.kind,
        section=content.section.name if content.section is not None else "",
        date=published,
        why=found.why,
        described=describe_item(content, now),
    )


@dataclass(frozen=True)
class Prepared:
    """What the worker thread found for one reply."""

    target: Target | None
    params: DecodingParams
    follow: FollowUp
    items: tuple[FoundItem, ...]
    understanding: Understanding | None = None  # the reader message's intent and entities
    written: str = ""  # a reply written without retrieval or model (small talk, help, out of scope)


INTENTS = {Kind.SEARCH: "search", Kind.LATEST: "whats_new"}  # any other kind is a follow-up


def understanding_dict(understanding: Understanding | None) -> dict | None:
    return understanding.as_dict() if understanding is not None else None


def reply_entities(follow: FollowUp) -> list[dict]:
    """The entities stored on the reply: the plan's, and which follow-up it was."""
    entities = list(follow.entities)
    if follow.kind not in INTENTS:
        entities.append({"type": "follow_up", "value": follow.kind})
    return entities


def search_text(prepared: Prepared) -> str:
    """One sentence naming the items, as the search-only engine writes it."""
    follow, items = prepared.follow, prepared.items
    topic = " ".join(follow.terms[:6])
    on_topic = (f" on {topic}" if topic else "") + date_phrase(follow.filters)
    if not items:
        if follow.kind in (Kind.OLDER, Kind.NEWER):
            return f"I found nothing {follow.kind}{on_topic} in the catalog."
        if follow.kind == Kind.MORE:
            return "I found nothing more like that in the catalog."
        return f"I couldn't find anything{on_topic} in the catalog."
    described = quoted_list([item.described for item in items[: settings.MEDIACHAT["RECOMMENDATIONS"]]])
    if follow.kind in (Kind.OLDER, Kind.NEWER):
        return f"{follow.kind.capitalize()}{on_topic}: {described}."
    if follow.kind == Kind.ITEM:
        return f"Here it is: {described}."
    if follow.kind == Kind.SHORTER:
        return f"In short: {described}."
    if follow.kind == Kind.MORE:
        return f"More like that: {described}."
    return f"Here is what I found: {described}."


def model_result(
    prepared: Prepared,
    *,
    engine: str,
    version_id: int | None,
    params: DecodingParams,
    raw: str,
    context_items,
    prompt_tokens: int,
    completion_tokens: int,
) -> EngineResult:
    """The stored reply: `raw` grounded in the items the prompt held, with its cards."""
    in_context = {item.id for item in context_items}
    text, cited_ids = citations_ground(MALFORMED_CITATION_RE.sub("", raw), in_context)
    by_id = {item.id: item for item in prepared.items}
    limit = settings.MEDIACHAT["RECOMMENDATIONS"]
    cited_items = [by_id[i] for i in cited_ids if i in by_id]
    if cited_items:
        cards = [item.card() for item in cited_items[:limit]]
    else:  # the model cited nothing: the best items it was given, said to be search results
        cards = [
            item.card(f"{item.why} (top search result; the reply cited none)")
            for item in prepared.items
            if item.id in in_context
        ][:limit]
    if not text:  # an empty reply (an immediate end of turn) still says something
        text = search_text(prepared)
    return EngineResult(
        text=text,
        engine=engine,
        cited=[item.citation() for item in cited_items],
        recommendations=cards,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        decoding=params.as_dict(),
        intent=INTENTS.get(prepared.follow.kind, "follow_up"),
        entities=reply_entities(prepared.follow),
        model_version_id=version_id,
        understanding=understanding_dict(prepared.understanding),
    )
