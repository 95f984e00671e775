"""Catalog search: published content matching a query, ranked by relevance and recency.

One code path on SQLite and PostgreSQL: the database narrows candidates with term filters, then
each candidate is scored in Python with field weights (title > tags > summary > body), an inverse
document frequency over the candidates, and an exponential recency decay.
"""

import math
import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import Content

STOPWORDS = frozenset(
    """a about above after again all am an and any are as at be because been before being below between both but
    by can could did do does doing down during each few for from further had has have having he her here hers
    him his how i if in into is it its just me more most my no nor not now of off on once only or other our out
    over own same she should so some such than that the their them then there these they this those through to
    too under until up very was we were what when where which while who whom why will with would you your
    anything something show tell find give want looking look read watch listen recommend recommendation please
    new latest recent any some me hi hello thanks thank""".split()
)
FIELD_WEIGHTS = {"title": 3.0, "tags": 2.5, "summary": 1.5, "body": 0.5}
MAX_CANDIDATES = 400
WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)


@dataclass(frozen=True)
class SearchHit:
    content: Content
    score: float
    matched: tuple[str, ...]

    @property
    def why(self) -> str:
        return "Matches " + ", ".join(f"“{t}”" for t in self.matched) if self.matched else "Recent and popular"


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


def catalog_search(query: str, *, limit: int = 5, now: datetime | None = None) -> list[SearchHit]:
    """The best `limit` published items for `query`; the newest items when it has no content words."""
    now = now or timezone.now()
    half_life = settings.MEDIACHAT["RECENCY_HALF_LIFE_DAYS"]
    terms = query_terms(query)[:12]
    published = Content.objects.published(now).select_related("section").prefetch_related("tags", "authors")
    if not terms:
        return [SearchHit(c, _recency(c.published_at, now, half_life), ()) for c in published[:limit]]

    match = Q()
    for term in terms:
        match |= Q(title__icontains=term) | Q(summary__icontains=term) | Q(tags__name__icontains=term)
        match |= Q(body__icontains=term)
    candidate_ids = list(published.filter(match).values_list("id", flat=True).distinct()[:MAX_CANDIDATES])
    candidates = list(published.filter(id__in=candidate_ids))
    if not candidates:
        return []

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
    hits = []
    for content in candidates:
        fields = fields_by_id[content.id]
        relevance, matched = 0.0, []
        for term in terms:
            idf = math.log(1 + n / (1 + doc_freq[term])) + 0.1
            term_score = sum(
                weight * min(fields[name].count(term), 5) ** 0.5 for name, weight in FIELD_WEIGHTS.items()
            )
            if term_score:
                matched.append(term)
                relevance += idf * term_score
        if not matched:
            continue
        recency = _recency(content.published_at, now, half_life)
        hits.append(SearchHit(content, relevance * (0.75 + 0.25 * recency), tuple(matched)))
    hits.sort(key=lambda h: (-h.score, -(h.content.published_at or now).timestamp()))
    return hits[:limit]
