"""Entities in a reader's message: catalog names from the gazetteer (exact and fuzzy) and dates.

Matching works on normalised tokens (letters and digits, lower case, accents folded), so "Lucia Marenco's"
finds the author "Lucía Marenco". Exact surfaces are found by a dictionary walk over token n-grams; content
titles and names are also found with a typo or two, with rapidfuzz on a bounded set of candidates. Spans
are character offsets into the message and never overlap: the longest match wins.
"""

import bisect
import logging
import re
import threading
import time
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

from rapidfuzz import fuzz

from ..models import EntityKind, GazetteerEntry
from .dates import dates_find

logger = logging.getLogger(__name__)

MAX_CHARS = 20_000  # longer messages are read this far
MAX_NGRAM = 32  # tokens in the longest surface matched exactly
FUZZY_MAX_TOKENS = 64  # fuzzy matching looks at the first tokens only
FUZZY_CUTOFF = 85.0  # rapidfuzz ratio (0-100) a fuzzy match needs
FUZZY_CANDIDATES = 8  # gazetteer surfaces scored per message
FUZZY_MIN_CHARS = 5  # one-word surfaces shorter than this are matched exactly only
COMMON_TOKEN = 50  # a token in more surfaces than this does not suggest candidates
FUZZY_KINDS = frozenset(
    {EntityKind.CONTENT, EntityKind.AUTHOR, EntityKind.PERSON, EntityKind.PLACE, EntityKind.ORGANIZATION}
)
# When one surface names several entities, the more specific kind wins.
KIND_PRIORITY = {
    EntityKind.CONTENT: 7, EntityKind.AUTHOR: 6, EntityKind.SECTION: 5, EntityKind.TAG: 4,
    EntityKind.ORGANIZATION: 3, EntityKind.PERSON: 2, EntityKind.PLACE: 1,
}  # fmt: skip
RELOAD_CHECK_S = 5.0

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own s same she should so some such t
    than that the their theirs them themselves then there these they this those through to too under until up
    us very was we were what when where which while who whom why will with would you your yours yourself
    yourselves""".split()
)

_TOKEN = re.compile(r"[^\W_]+")


def _fold(token: str) -> str:
    if token.isascii():
        return token.lower()
    decomposed = unicodedata.normalize("NFKD", token)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def surface_normalise(text: str) -> str:
    """The form the gazetteer stores and the extractor matches: folded tokens joined by single spaces."""
    return " ".join(_fold(token) for token in _TOKEN.findall(text or ""))


@dataclass(frozen=True)
class GazetteerEntryData:
    """One surface form: what the extractor matches (normalised) and the entity it stands for."""

    kind: str
    surface: str
    value: str
    ref_id: int | None = None
    weight: float = 1.0


class EntryLike(Protocol):
    kind: str
    surface: str
    value: str
    ref_id: int | None
    weight: float


@dataclass(frozen=True)
class Entity:
    """An entity found in a message: its kind, canonical value, the text as written and its span."""

    kind: str
    value: str
    text: str
    start: int
    end: int
    ref_id: int | None = None
    score: float = 1.0

    def to_dict(self) -> dict:
        """A JSON-ready dict, the form stored in Message.entities."""
        return asdict(self)


def _deletions(token: str) -> set[str]:
    return {token[:i] + token[i + 1 :] for i in range(len(token))}


class EntityExtractor:
    """Finds entities in text against a fixed gazetteer; cheap to call, built once per gazetteer."""

    def __init__(self, entries: Iterable[EntryLike], *, built_at: datetime | None = None) -> None:
        self.built_at = built_at
        self._exact: dict[str, GazetteerEntryData] = {}
        self._prefixes: set[str] = set()
        for row in entries:
            surface = surface_normalise(row.surface)
            if not surface or surface in STOPWORDS:
                continue
            entry = GazetteerEntryData(str(row.kind), surface, row.value, row.ref_id, float(row.weight or 0.0))
            best = self._exact.get(surface)
            if best is None or _rank(entry) > _rank(best):
                self._exact[surface] = entry
        for surface in self._exact:
            tokens = surface.split()[:MAX_NGRAM]
            self._prefixes.update(" ".join(tokens[:k]) for k in range(1, len(tokens)))
        # Fuzzy matching: the surfaces of titles and names, each token's postings, a one-edit index of tokens.
        self._choices = [(s, s.split(), e) for s, e in self._exact.items() if e.kind in FUZZY_KINDS]
        self._postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for index, (_, tokens, _) in enumerate(self._choices):
            for position, token in enumerate(tokens):
                if token not in STOPWORDS:
                    self._postings[token].append((index, position))
        self._near: dict[str, set[str]] = defaultdict(set)
        for token in self._postings:
            if len(token) >= 4 and not token.isdigit():
                for variant in _deletions(token) | {token}:
                    self._near[variant].add(token)

    @classmethod
    def from_entries(cls, entries: Iterable[EntryLike], *, built_at: datetime | None = None) -> "EntityExtractor":
        """An extractor over `entries` (GazetteerEntry rows, GazetteerEntryData or alike)."""
        return cls(entries, built_at=built_at)

    def __len__(self) -> int:
        return len(self._exact)

    def extract(self, text: str, *, now: datetime) -> list[Entity]:
        """Entities in `text`, ordered by position, without overlapping spans; never raises."""
        try:
            if not isinstance(text, str) or not text:
                return []
            return self._extract(text[:MAX_CHARS], now)
        except Exception:  # the chat path answers without entities rather than failing
            logger.exception("Entity extraction failed on a %d-character text", len(text))
            return []

    def _extract(self, text: str, now: datetime) -> list[Entity]:
        tokens = [(m.start(), m.end(), _fold(m.group())) for m in _TOKEN.finditer(text)]
        found = self._exact_matches(text, tokens)
        found += [
            Entity(EntityKind.DATE.value, m.iso_interval(), m.text, m.start, m.end) for m in dates_find(text, now=now)
        ]
        found += self._fuzzy_matches(text, tokens[:FUZZY_MAX_TOKENS])
        return _without_overlaps(found)

    def _entity(self, text: str, tokens: list, i: int, j: int, entry: EntryLike, score: float = 1.0) -> Entity:
        start, end = tokens[i][0], tokens[j - 1][1]
        return Entity(entry.kind, entry.value, text[start:end], start, end, entry.ref_id, score)

    def _exact_matches(self, text: str, tokens: list) -> list[Entity]:
        found = []
        for i in range(len(tokens)):
            key, j = tokens[i][2], i + 1
            while True:
                entry = self._exact.get(key)
                if entry is not None:
                    found.append(self._entity(text, tokens, i, j, entry))
                if j >= len(tokens) or key not in self._prefixes:
                    break
                key, j = f"{key} {tokens[j][2]}", j + 1
        return found

    def _fuzzy_matches(self, text: str, tokens: list) -> list[Entity]:
        if not self._choices:
            return []
        # Candidates: surfaces sharing a token with the message, or a token one edit away ("achterberk").
        anchors: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for p, (_, _, token) in enumerate(tokens):
            if not 3 <= len(token) <= 40 or token in STOPWORDS or token.isdigit():
                continue
            if token in self._postings:
                similar = {token}
            elif len(token) >= 4:
                similar = set().union(*(self._near.get(v, ()) for v in _deletions(token) | {token}))
            else:
                continue
            for near in similar:
                postings = self._postings[near]
                if len(postings) <= COMMON_TOKEN:
                    for index, position in postings:
                        anchors[index].append((p, position))
        ranked = sorted(anchors, key=lambda c: (-len({q for _, q in anchors[c]}), -self._choices[c][2].weight))
        found = []
        for index in ranked[:FUZZY_CANDIDATES]:
            match = self._best_window(text, tokens, index, anchors[index])
            if match is not None:
                found.append(match)
        return found

    def _best_window(self, text: str, tokens: list, index: int, anchors: list[tuple[int, int]]) -> Entity | None:
        surface, choice_tokens, entry = self._choices[index]
        if len(choice_tokens) == 1 and len(surface) < FUZZY_MIN_CHARS:
            return None
        best, best_score, tried = None, FUZZY_CUTOFF, set()
        size = len(choice_tokens)
        for p, position in anchors:
            for shift in (-1, 0, 1):
                for length in (size - 1, size, size + 1):
                    start = p - position + shift
                    if length < 1 or start < 0 or start + length > len(tokens) or not start <= p < start + length:
                        continue
                    if (start, length) in tried:
                        continue
                    tried.add((start, length))
                    window = " ".join(t[2] for t in tokens[start : start + length])
                    score = fuzz.ratio(window, surface, score_cutoff=best_score)
                    if score and (best is None or score > best_score):
                        best, best_score = (start, start + length), score
        if best is None or best_score >= 100:
            return None  # no match, or an exact one the dictionary walk found
        return self._entity(text, tokens, best[0], best[1], entry, round(best_score / 100, 3))


def _rank(entry: EntryLike) -> tuple[int, float]:
    return KIND_PRIORITY.get(entry.kind, 0), entry.weight or 0.0


def _without_overlaps(found: list[Entity]) -> list[Entity]:
    """The longest spans first (then the surest, then the more specific kind), skipping any that overlap."""
    found.sort(key=lambda e: (e.start - e.end, -e.score, -KIND_PRIORITY.get(e.kind, 0), e.start))
    starts: list[int] = []  # the kept spans, sorted; they never overlap, so their ends are sorted too
    kept: list[Entity] = []
    for entity in found:
        i = bisect.bisect_right(starts, entity.start)
        if (i and kept[i - 1].end > entity.start) or (i < len(kept) and kept[i].start < entity.end):
            continue
        starts.insert(i, entity.start)
        kept.insert(i, entity)
    return kept


# --- The extractor over the stored gazetteer, reloaded after a rebuild -------------------------------------------


class _Loaded:
    extractor: EntityExtractor | None = None
    checked_at = float("-inf")
    lock = threading.Lock()


def extractor_load(*, check_after_s: float = RELOAD_CHECK_S) -> EntityExtractor:
    """The extractor over the stored gazetteer, cached in this process.

    At most every `check_after_s` seconds it asks the database for the newest GazetteerEntry.built_at and
    rebuilds itself when that changed, so a gazetteer rebuild reaches every process within that time.
    """
    with _Loaded.lock:
        current = _Loaded.extractor
        if current is not None and time.monotonic() - _Loaded.checked_at < check_after_s:
            return current
        newest = GazetteerEntry.objects.order_by("-built_at").values_list("built_at", flat=True).first()
        _Loaded.checked_at = time.monotonic()
        if current is None or current.built_at != newest:
            rows = GazetteerEntry.objects.values_list("kind", "surface", "value", "ref_id", "weight")
            # Rows a rebuild committed between the two queries carry the older stamp: the next check reloads.
            current = EntityExtractor.from_entries((GazetteerEntryData(*row) for row in rows), built_at=newest)
            _Loaded.extractor = current
        return current


def entities_extract(text: str, *, now: datetime) -> list[Entity]:
    """Entities in `text` against the stored gazetteer (see `EntityExtractor.extract`); never raises.

    It reads the database now and then: call it off the event loop.
    """
    try:
        extractor = extractor_load()
    except Exception:
        logger.exception("The gazetteer could not be loaded; extracting dates only")
        extractor = EntityExtractor(())
    return extractor.extract(text, now=now)
