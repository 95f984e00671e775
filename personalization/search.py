"""Catalog search: published content matching a query, ranked by relevance and recency.

One code path on SQLite and PostgreSQL: the database narrows candidates with term filters, then
each candidate is scored in Python with field weights (title > tags > summary > body), an inverse
document frequency over the candidates, and an exponential recency decay.

Once items have embeddings (personalization/embeddings) and the embedder is loaded, the query is
encoded once and meaning joins in: the nearest items by cosine similarity are added to the term
matches, and each candidate's score blends its lexical relevance (scaled to the best match) with its
similarity. With no embeddings, or MEDIACHAT["SEMANTIC_SEARCH"] off, search is by words alone.
"""

import functools
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .embeddings.backends import EmbedderUnavailable, embedder_if_ready
from .embeddings.index import index_get
from .models import Content

logger = logging.getLogger(__name__)

# Contractions are words too ("what's new" asks for nothing by name), with either apostrophe.
_CONTRACTIONS = """what's that's there's here's it's who's where's how's let's i'm i'd i'll i've you're you've
    we're they're don't doesn't didn't can't isn't aren't won't wasn't""".split()
STOPWORDS = frozenset(
    """a about above after again all am an and any are as at be because been before being below between both but
    by can could did do does doing down during each few for from further had has have having he her here hers
    him his how i if in into is it its just me more most my no nor not now of off on once only or other our out
    over own same she should so some such than that the their them then there these they this those through to
    too under until up very was we were what when where which while who whom why will with would you your
    anything something show tell find give want looking look read watch listen recommend recommendation please
    new latest recent any some me hi hello thanks thank""".split()
    + _CONTRACTIONS
    + [w.replace("'", "\u2019") for w in _CONTRACTIONS]
)
FIELD_WEIGHTS = {"title": 3.0, "tags": 2.5, "summary": 1.5, "body": 0.5}
MAX_CANDIDATES = 400
WORD_RE = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*", re.UNICODE)  # apostrophes and hyphens inside a word
SEMANTIC_NEIGHBOURS = 50  # nearest items by meaning added to the term matches
MIN_SIMILARITY = 0.3  # MiniLM cosine below which an item sharing no query word is noise, not a match
SEMANTIC_WEIGHT = 0.5  # share of meaning in the blended score; lexical relevance has the rest


@dataclass(frozen=True)
class SearchHit:
    content: Content
    score: float
    matched: tuple[str, ...]
    similarity: float | None = None  # cosine with the query, when search used embeddings

    @property
    def why(self) -> str:
        if self.matched:
            return "Matches " + ", ".join(f"“{t}”" for t in self.matched)
        return "Close in meaning to your search" if self.similarity is not None else "Recent and popular"


@dataclass(frozen=True)
class CatalogFilter:
    """Where a search looks, from a message's entities and words: sections, tags, authors (slugs), dates, kinds."""

    sections: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    kinds: tuple[str, ...] = ()  # Content.Kind values: "podcasts on jazz" looks among podcasts
    when: str = ""  # the dates as the reader wrote them ("this week"), for replies; since/until filter

    def __bool__(self) -> bool:
        return bool(self.sections or self.tags or self.authors or self.since or self.until or self.kinds)

    def apply(self, queryset):
        if self.sections:
            queryset = queryset.filter(section__slug__in=self.sections)
        if self.tags:
            queryset = queryset.filter(id__in=Content.objects.filter(tags__slug__in=self.tags).values("id"))
        if self.authors:
            queryset = queryset.filter(id__in=Content.objects.filter(authors__slug__in=self.authors).values("id"))
        if self.since is not None:
            queryset = queryset.filter(published_at__gte=self.since)
        if self.until is not None:
            queryset = queryset.filter(published_at__lt=self.until)
        if self.kinds:
            queryset = queryset.filter(kind__in=self.kinds)
        return queryset


def query_terms(text: str) -> list[str]:
    """Lower-cased content words of `text`, in order, without stopwords or duplicates."""
    seen: dict[str, None] = {}
    for word in WORD_RE.findall(text.lower()):
        if len(word) > 1 and word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


def _recency(published_at: datetime | None, now: datetime, half_life_days: float) -> float:
    if published_at is None:
        return 0.0
    age_days = max((now - published_at).total_seconds() / 86400, 0.0)
    return 0.5 ** (age_days / half_life_days)


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning("Search goes by words alone: %s", message)


def _query_vector(terms: list[str]) -> np.ndarray | None:
    """The query's embedding, or None when search goes by words alone (off, nothing embedded, no model yet)."""
    if not settings.MEDIACHAT.get("SEMANTIC_SEARCH", True):
        return None
    try:
        index = index_get()
    except EmbedderUnavailable as exc:
        _warn_once(str(exc))
        return None
    index.refresh()
    if not len(index):
        return None
    embedder = embedder_if_ready()  # never waits for a model to load: words alone until it has
    if embedder is None:
        return None
    return _encode_query(embedder, " ".join(terms))


@functools.lru_cache(maxsize=2048)
def _encode_query(embedder, text: str) -> np.ndarray:
    """A query's embedding, kept: readers ask the same few things often, and encoding costs ~10 ms of CPU."""
    vector = embedder.encode([text])[0]
    vector.setflags(write=False)  # shared between callers: nobody may change it in place
    return vector


def _lexical_scores(candidates: list[Content], terms: list[str]) -> list[tuple[Content, float, tuple[str, ...]]]:
    """Each candidate's relevance to `terms` (field weights, idf over the candidates) and the terms it contains."""
    fields_by_id = {
        c.id: {
            "title": c.title.lower(),
            "tags": " ".join(t.name.lower() for t in c.tags.all()),
            "summary": c.summary.lower(),
            "body": c.body.lower(),
        }
        for c in candidates
    }
    n = len(candidates)
    doc_freq = {t: sum(any(t in f for f in fields.values()) for fields in fields_by_id.values()) for t in terms}
    scored = []
    for content in candidates:
        fields = fields_by_id[content.id]
        relevance, matched = 0.0, []
        for term in terms:
            idf = math.log(1 + n / (1 + doc_freq[term])) + 0.1
            term_score = sum(weight * min(fields[name].count(term), 5) ** 0.5 for name, weight in FIELD_WEIGHTS.items())
            if term_score:
                matched.append(term)
                relevance += idf * term_score
        scored.append((content, relevance, tuple(matched)))
    return scored


def catalog_search(
    query: str, *, limit: int = 5, now: datetime | None = None, filters: CatalogFilter | None = None
) -> list[SearchHit]:
    """The best `limit` published items for `query` within `filters`; the newest when it has no content words."""
    now = now or timezone.now()
    half_life = settings.MEDIACHAT["RECENCY_HALF_LIFE_DAYS"]
    terms = query_terms(query)[:12]
    published = Content.objects.published(now).select_related("section").prefetch_related("tags", "authors")
    if filters:
        published = filters.apply(published)
    if not terms:
        return [SearchHit(c, _recency(c.published_at, now, half_life), ()) for c in published[:limit]]

    match = Q()
    for term in terms:
        match |= Q(title__icontains=term) | Q(summary__icontains=term) | Q(tags__name__icontains=term)
        match |= Q(body__icontains=term)
    lexical = Q(id__in=published.filter(match).values("id").distinct()[:MAX_CANDIDATES])
    query_vector = _query_vector(terms)
    neighbours: dict[int, float] = {}
    if query_vector is not None:
        nearest = index_get().search(query_vector, SEMANTIC_NEIGHBOURS, now=now)
        neighbours = {cid: sim for cid, sim in nearest if sim >= MIN_SIMILARITY}
    candidates = list(published.filter(lexical | Q(id__in=list(neighbours)) if neighbours else lexical))
    if not candidates:
        return []

    scored = [
        (content, relevance, matched)
        for content, relevance, matched in _lexical_scores(candidates, terms)
        if matched or content.id in neighbours
    ]
    similarities = {} if query_vector is None else index_get().similarities(query_vector, [c.id for c, _, _ in scored])
    best = max((relevance for _, relevance, _ in scored), default=0.0)
    hits = []
    for content, relevance, matched in scored:
        recency = 0.75 + 0.25 * _recency(content.published_at, now, half_life)
        if query_vector is None:
            hits.append(SearchHit(content, relevance * recency, matched))
            continue
        similarity = similarities.get(content.id)
        lexical_score = relevance / best if best else 0.0
        # An item not embedded yet (the worker has not reached it) is ranked by its words alone.
        blended = (
            lexical_score
            if similarity is None
            else (1 - SEMANTIC_WEIGHT) * lexical_score + SEMANTIC_WEIGHT * max(similarity, 0.0)
        )
        hits.append(SearchHit(content, blended * recency, matched, similarity))
    hits.sort(key=lambda h: (-h.score, -(h.content.published_at or now).timestamp()))
    return hits[:limit]
