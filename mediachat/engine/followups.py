"""Follow-ups resolved against the conversation: what a message refers back to, and what to retrieve for it.

The conversation state is the history the consumer passes: the items the last reply cited
(`Turn.cited`, or the `[#id]` citations of its text) and the topic of the latest reader turn that named
one. `followup_resolve` reads a message against it, without the database:

- "more like that/those" → items similar to everything the last reply showed, minus those;
- "more like the second one", "the last one", "number 2" → items similar to that one item;
- "tell me about the first one" → that item alone;
- "anything older on that" / "anything newer" → the topic again, published before the oldest (after
  the newest) item shown;
- "shorter" → the previous reply's items again, for a briefer answer.

`followup_retrieve` then runs the plan against the catalog (`Found` items, best first): similar items
share the anchor's tags or section and, where items have embeddings, are near it in meaning.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from personalization.models import Content, ContentEmbedding
from personalization.search import MIN_SIMILARITY, SEMANTIC_NEIGHBOURS, CatalogFilter, catalog_search
from training.pipelines.chat_format import citations

from .retrieval import topic_terms


class Kind:
    SEARCH = "search"  # the message names its own topic
    LATEST = "latest"  # no topic and nothing to refer back to: what is new
    MORE = "more"  # more like the items shown (or one of them)
    ITEM = "item"  # about one item shown
    OLDER = "older"
    NEWER = "newer"
    SHORTER = "shorter"  # the previous answer again, briefer


ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "6th": 6, "7th": 7, "8th": 8,
    "9th": 9, "10th": 10, "last": -1, "latter": -1, "former": 1,
}  # fmt: skip
ITEM_NOUNS = r"(?:one|item|article|piece|story|video|podcast|post|link|result|suggestion)"
ORDINAL_RE = re.compile(rf"\b(?:the\s+)?({'|'.join(ORDINALS)})(?:\s+{ITEM_NOUNS})?\b")
ORDINAL_ITEM_RE = re.compile(rf"\b({'|'.join(ORDINALS)})\s+{ITEM_NOUNS}\b")
NUMBER_RE = re.compile(r"\b(?:number|no\.?|item|option|result)\s*(\d{1,2})\b")
ID_RE = re.compile(r"#(\d+)\b")
OLDER_RE = re.compile(r"\b(?:older|earlier|before (?:that|those|this|these|then|it|them)|from before|archives?)\b")
NEWER_RE = re.compile(r"\b(?:newer|more recent|fresher|later|since (?:then|that|those))\b")
SHORTER_RE = re.compile(
    r"\b(?:shorter|briefer|more briefly|in brief|in short|tl;? ?dr|fewer words|too long|summari[sz]e (?:that|it)"
    r"|(?:make|keep) it (?:short|brief))\b"
)
SHORTER_WORDS = frozenset("make keep short brief answer reply version summary".split())  # "a shorter answer"
MORE_RE = re.compile(
    r"\b(?:more like|similar|like (?:that|those|this|these|it|them)|more of (?:that|those|these|this|the same)"
    r"|another one|others like|anything else|more on (?:that|this|it))\b"
)
# Words that point at earlier turns rather than naming a topic (besides retrieval's follow-up words).
# Kinds of item ("the second video") stay topic words: "podcasts on jazz" is about both.
REFERENCE_WORDS = frozenset(ORDINALS) | frozenset(
    """older earlier newer later fresher recent before since archive archives shorter briefer briefly tldr tl dr
    fewer summarise summarize number no item option result results one suggestion""".split()
)


@dataclass(frozen=True)
class FollowUp:
    """What retrieval should do for a message, given the conversation before it."""

    kind: str  # one of Kind
    terms: tuple[str, ...] = ()  # topic words to search: the message's own, else the conversation's
    anchor_ids: tuple[int, ...] = ()  # items to find neighbours of (MORE), or to talk about (ITEM, SHORTER)
    exclude_ids: tuple[int, ...] = ()  # items the reader was already shown
    bound_ids: tuple[int, ...] = ()  # OLDER/NEWER: items whose dates bound the search (oldest/newest of them)
    previous_reply: str = ""  # SHORTER: the reply to say again, briefer
    own_topic: bool = False  # the terms come from the message itself
    position: int | None = None  # the item position the message named (1-based; -1 for "the last")
    entities: list[dict] = field(default_factory=list)  # for the stored reply: topic words and referenced items
    filters: CatalogFilter | None = None  # SEARCH/LATEST: sections, tags, authors, dates the message named


def own_terms(text: str) -> list[str]:
    """The topic words of `text` itself, without follow-up and reference words."""
    return [t for t in topic_terms(text) if t not in REFERENCE_WORDS and not t.isdigit()]


def shown_ids(turn) -> tuple[int, ...]:
    """The items an assistant turn showed: its recorded citations, else the `[#id]`s of its text."""
    cited = tuple(getattr(turn, "cited", ()) or ())
    return cited or tuple(citations(turn.text))


def _previous_topic(history: Sequence) -> tuple[str, ...]:
    for turn in reversed(history):
        if turn.role == "user":
            terms = own_terms(turn.text)
            if terms:
                return tuple(terms)
    return ()


def _position(text: str, shown: Sequence[int], *, has_terms: bool) -> tuple[int | None, int | None]:
    """The item the message points at among `shown`: (1-based position or -1, its id), or (None, None)."""
    match = ID_RE.search(text)
    if match and int(match.group(1)) in shown:
        item_id = int(match.group(1))
        return shown.index(item_id) + 1, item_id
    match = NUMBER_RE.search(text)
    if match:
        position = int(match.group(1))
    else:
        # With topic words of its own, "first" may be part of the topic ("the first world war"):
        # only "the first one/article/…" counts then.
        match = (ORDINAL_ITEM_RE if has_terms else ORDINAL_RE).search(text)
        if not match:
            return None, None
        position = ORDINALS[match.group(1)]
    if not shown or position == 0 or position > len(shown):
        return position, None
    return position, shown[position - 1] if position > 0 else shown[position]


def followup_resolve(text: str, history: Sequence) -> FollowUp:
    """The retrieval plan for message `text` after `history` (turns with `role`, `text`, `cited`, oldest first)."""
    lowered = text.lower()
    terms = tuple(own_terms(text))
    last_reply = next((t for t in reversed(history) if t.role == "assistant"), None)
    shown = shown_ids(last_reply) if last_reply is not None else ()
    previous_terms = _previous_topic(history)
    topic = terms or previous_terms
    position, anchor = _position(lowered, shown, has_terms=bool(terms))
    direction = Kind.OLDER if OLDER_RE.search(lowered) else Kind.NEWER if NEWER_RE.search(lowered) else ""
    entities = [{"type": "topic", "value": t} for t in topic]
    if anchor is not None:
        entities.append({"type": "content", "value": anchor, "position": position})
    common = {"terms": topic, "own_topic": bool(terms), "position": position, "entities": entities}

    if last_reply is None and not previous_terms:  # nothing to refer back to
        kind = Kind.SEARCH if terms else Kind.LATEST
        return FollowUp(kind, terms=terms, own_topic=bool(terms), entities=entities)
    if last_reply is not None and SHORTER_RE.search(lowered) and set(terms) <= SHORTER_WORDS:
        return FollowUp(Kind.SHORTER, anchor_ids=shown, previous_reply=last_reply.text, **common)
    if direction:
        bound = (anchor,) if anchor is not None else shown
        anchors = (anchor,) if anchor is not None else ()
        return FollowUp(direction, anchor_ids=anchors, exclude_ids=shown, bound_ids=bound, **common)
    if anchor is not None:
        # "more like the second one" asks for neighbours; "the second one", "tell me about it" for the item.
        kind = Kind.MORE if MORE_RE.search(lowered) else Kind.ITEM
        return FollowUp(kind, anchor_ids=(anchor,), exclude_ids=shown, **common)
    if terms and not MORE_RE.search(lowered):
        return FollowUp(Kind.SEARCH, terms=terms, own_topic=True, entities=entities)
    return FollowUp(Kind.MORE, anchor_ids=shown, exclude_ids=shown, **common)


# --- Against the catalog ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    content: Content
    why: str  # one line for the reader: why this item was picked


def _published(now: datetime):
    return Content.objects.published(now).select_related("section").prefetch_related("tags")


def _in_order(ids: Sequence[int], now: datetime) -> list[Content]:
    by_id = {c.id: c for c in _published(now).filter(id__in=list(ids))}
    return [by_id[i] for i in ids if i in by_id]


def _date_filter(kind: str, bound_ids: Sequence[int]) -> Q:
    """OLDER: published before the oldest bound item; NEWER: after the newest; no bound, no filter."""
    dates = [d for d in Content.objects.filter(id__in=list(bound_ids)).values_list("published_at", flat=True) if d]
    if not dates:
        return Q()
    return Q(published_at__lt=min(dates)) if kind == Kind.OLDER else Q(published_at__gt=max(dates))


def _anchor_vector(anchor_ids: Sequence[int]):
    """The mean embedding of the anchors and the index holding the catalog's, or (None, None)."""
    if not settings.MEDIACHAT.get("SEMANTIC_SEARCH", True) or not anchor_ids:
        return None, None
    from personalization.embeddings.backends import EmbedderUnavailable
    from personalization.embeddings.index import index_get

    try:
        index = index_get()
    except EmbedderUnavailable:
        return None, None
    rows = ContentEmbedding.objects.filter(
        content_id__in=list(anchor_ids), model_name=index.model_name, dimensions=index.dimensions
    ).values_list("vector", flat=True)
    vectors = [np.frombuffer(bytes(v), dtype="<f4") for v in rows]
    if not vectors:
        return None, None
    index.refresh()
    mean = np.mean(vectors, axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm else mean), index


def similar_items(
    anchor_ids: Sequence[int],
    *,
    exclude_ids: Sequence[int] = (),
    where: Q | None = None,
    terms: Sequence[str] = (),
    limit: int,
    now: datetime | None = None,
) -> list[Found]:
    """Published items like the anchors, best first: shared tags, same section, closeness in meaning.

    `where` narrows the candidates (a date bound); `terms` (the conversation's topic) lift items that
    mention them. The anchors and `exclude_ids` never come back.
    """
    now = now or timezone.now()
    anchors = _in_order(anchor_ids, now)
    if not anchors:
        return []
    tag_ids = {t.id for a in anchors for t in a.tags.all()}
    section_ids = {a.section_id for a in anchors if a.section_id}
    excluded = set(exclude_ids) | {a.id for a in anchors}
    base = _published(now).exclude(id__in=excluded)
    if where is not None:
        base = base.filter(where)

    vector, index = _anchor_vector([a.id for a in anchors])
    neighbours: dict[int, float] = {}
    if vector is not None:
        nearest = index.search(vector, SEMANTIC_NEIGHBOURS, exclude=excluded, now=now)
        neighbours = {cid: sim for cid, sim in nearest if sim >= MIN_SIMILARITY}
    match = Q(tags__in=tag_ids) | Q(section_id__in=section_ids) | Q(id__in=list(neighbours))
    for term in terms:
        match |= Q(title__icontains=term) | Q(summary__icontains=term) | Q(tags__name__icontains=term)
    candidates = list(
        base.filter(id__in=_published(now).filter(match).values("id"))
        .annotate(shared_tags=Count("tags", filter=Q(tags__in=tag_ids), distinct=True))
        .order_by("-published_at", "-id")[:400]
    )
    half_life = settings.MEDIACHAT["RECENCY_HALF_LIFE_DAYS"]
    label = f"Like “{anchors[0].title}”" if len(anchors) == 1 else "Like the items you were shown"
    scored = []
    for content in candidates:
        text = f"{content.title} {content.summary}".lower()
        mentions = sum(1 for term in terms if term in text)
        score = (
            content.shared_tags / max(len(tag_ids), 1)
            + (0.5 if content.section_id in section_ids else 0.0)
            + 1.0 * max(neighbours.get(content.id, 0.0), 0.0)
            + 0.25 * mentions
        )
        if content.published_at is not None:  # a light preference for recent items, as in search
            age_days = max((now - content.published_at).total_seconds() / 86400, 0.0)
            score *= 0.9 + 0.1 * 0.5 ** (age_days / half_life)
        scored.append((score, content))
    scored.sort(key=lambda pair: (-pair[0], -(pair[1].published_at or now).timestamp()))
    return [Found(content, label) for score, content in scored[:limit] if score > 0]


def _dated_search(follow: FollowUp, *, limit: int, now: datetime) -> list[Found]:
    """The topic again, on the far side of the items shown (OLDER or NEWER)."""
    where = _date_filter(follow.kind, follow.bound_ids)
    word = "Older" if follow.kind == Kind.OLDER else "Newer"
    if follow.anchor_ids:  # "anything older like the second one"
        found = similar_items(follow.anchor_ids, exclude_ids=follow.exclude_ids, where=where, limit=limit, now=now)
        return [Found(f.content, f"{word} than what you were shown; {f.why[0].lower()}{f.why[1:]}") for f in found]
    if not follow.terms:
        found = similar_items(
            follow.bound_ids, exclude_ids=follow.exclude_ids, where=where, terms=follow.terms, limit=limit, now=now
        )
        return [Found(f.content, f"{word} than what you were shown") for f in found]
    # Every candidate is scored by search anyway; asking for all of them costs no more, and the date
    # filter must not run on a list already cut to the newest matches.
    hits = catalog_search(" ".join(follow.terms), limit=400, now=now)
    allowed = set(_published(now).filter(where).values_list("id", flat=True)) if where else None
    excluded = set(follow.exclude_ids)
    kept = [h for h in hits if h.content.id not in excluded and (allowed is None or h.content.id in allowed)]
    if not where:  # nothing shown to be older than: order by date instead
        kept.sort(key=lambda h: (h.content.published_at or now).timestamp(), reverse=follow.kind == Kind.NEWER)
    topic = " ".join(follow.terms)
    return [Found(h.content, f"{word} on {topic}: {h.why[0].lower()}{h.why[1:]}") for h in kept[:limit]]


def followup_retrieve(follow: FollowUp, *, limit: int, now: datetime | None = None) -> list[Found]:
    """The catalog items for `follow`, best first, at most `limit` (blocking: queries the database)."""
    now = now or timezone.now()
    if follow.kind == Kind.LATEST:
        return [Found(h.content, h.why) for h in catalog_search("", limit=limit, now=now, filters=follow.filters)]
    if follow.kind == Kind.SEARCH:
        hits = catalog_search(" ".join(follow.terms), limit=limit, now=now, filters=follow.filters)
        return [Found(h.content, h.why) for h in hits]
    if follow.kind == Kind.ITEM:
        return [Found(c, "The item you asked about") for c in _in_order(follow.anchor_ids, now)]
    if follow.kind == Kind.SHORTER:
        return [Found(c, "From the previous reply") for c in _in_order(follow.anchor_ids, now)[:limit]]
    if follow.kind in (Kind.OLDER, Kind.NEWER):
        return _dated_search(follow, limit=limit, now=now)
    found = similar_items(follow.anchor_ids, exclude_ids=follow.exclude_ids, terms=follow.terms, limit=limit, now=now)
    if found or not follow.terms:
        return found
    # Nothing shown to be like (the reply cited nothing): the topic again, minus what was shown.
    hits = catalog_search(" ".join(follow.terms), limit=limit + len(follow.exclude_ids), now=now)
    return [Found(h.content, h.why) for h in hits if h.content.id not in set(follow.exclude_ids)][:limit]
