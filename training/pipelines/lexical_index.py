"""A small lexical retrieval over catalog documents: the retrieval the synthetic dialogues assume.

BM25 (Robertson and Zaragoza's weighting, k1 = 1.2, b = 0.75) over each document's title, summary, tags and
section, with an inverted index so that a query costs the length of its words' posting lists. Plain Python:
no Django imports.
"""

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from .corpus import SourceDocument
from .dialogue_templates import KIND_PLURALS, STOPWORDS

WORD_RE = re.compile(r"[^\W\d_]+")
# "podcast" in two titles says nothing about their subjects.
KIND_WORDS = frozenset(KIND_PLURALS) | frozenset(KIND_PLURALS.values())


def words(text: str) -> list[str]:
    """Lower-case content words (letters only, three or more, no stopwords)."""
    return [w for w in WORD_RE.findall(text.casefold()) if len(w) >= 3 and w not in STOPWORDS]


class LexicalIndex:
    """BM25 over each document's title, summary, tags and section: the retrieval the dialogues assume."""

    def __init__(self, documents: Sequence[SourceDocument], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.length: dict[int, int] = {}
        for d in documents:
            counts = Counter(words(" ".join((d.title, d.summary, " ".join(d.tags), d.section))))
            self.length[d.id] = sum(counts.values())
            for term, tf in counts.items():
                self.postings[term].append((d.id, tf))
        self.avg_len = max(sum(self.length.values()) / max(len(documents), 1), 1.0)
        self.k1, self.b, self.n = k1, b, len(documents)

    def scores(self, query_words: Iterable[str]) -> dict[int, float]:
        """BM25 score of every document with at least one query word."""
        out: dict[int, float] = defaultdict(float)
        for term in set(query_words):
            postings = self.postings.get(term, ())
            idf = math.log(1 + (self.n - len(postings) + 0.5) / (len(postings) + 0.5))
            for doc_id, tf in postings:
                norm = self.k1 * (1 - self.b + self.b * self.length[doc_id] / self.avg_len)
                out[doc_id] += idf * tf * (self.k1 + 1) / (tf + norm)
        return out

    def similar(
        self,
        docs: Sequence[SourceDocument],
        *,
        k: int | None = None,
        exclude: Iterable[int] = (),
        min_share: float = 0.0,
    ) -> list[int]:
        """Ids of the documents (`k` at most) sharing words with the title and tags of `docs`, best first.

        Only documents scoring at least `min_share` of the best score count: one shared common word is no likeness.
        """
        query = [w for w in words(" ".join(f"{d.title} {' '.join(d.tags)}" for d in docs)) if w not in KIND_WORDS]
        skip = set(exclude) | {d.id for d in docs}
        ranked = sorted((-s, i) for i, s in self.scores(query).items() if i not in skip and s > 0)
        floor = -ranked[0][0] * min_share if ranked else 0.0
        return [i for s, i in ranked[:k] if -s >= floor]
