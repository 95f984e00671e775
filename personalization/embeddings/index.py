"""An in-process vector index over the embeddings of published items, for search.

Each process keeps the vectors in one numpy matrix. Before it is used, at most every REFRESH_SECONDS,
one query compares the embeddings' count and latest change and the catalog's latest change with what
was loaded; the matrix is reloaded only when they differ. Publication dates and embargoes are checked
when searching, so scheduled items appear on time without a reload. Cosine similarity is a dot
product: the stored vectors are unit length.
"""

import threading
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db.models import Count, Max, Subquery
from django.utils import timezone

from personalization.models import Content, ContentEmbedding

from .backends import embedder_class

REFRESH_SECONDS = 5.0


@dataclass(frozen=True)
class _Vectors:
    """One loaded state; replaced whole on refresh, so readers need no lock."""

    ids: np.ndarray  # int64 content ids
    matrix: np.ndarray  # float32, one unit row per id
    visible_from: np.ndarray  # float64 epoch seconds: publication, or the embargo's end if later
    row_of: dict[int, int]


EMPTY = _Vectors(np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0), {})


class EmbeddingIndex:
    def __init__(self, *, model_name: str, dimensions: int) -> None:
        self.model_name = model_name
        self.dimensions = dimensions
        self._vectors = EMPTY
        self._signature: tuple | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors.ids)

    def _current_signature(self) -> tuple:
        # One query: this model's embeddings, and the catalog's latest edit (publishing touches it).
        latest_edit = Content.objects.order_by("-updated_at").values("updated_at")[:1]
        row = ContentEmbedding.objects.filter(model_name=self.model_name).aggregate(
            n=Count("pk"), last=Max("updated_at"), content_last=Max(Subquery(latest_edit))
        )
        return row["n"], row["last"], row["content_last"]

    def _load(self) -> _Vectors:
        rows = list(
            ContentEmbedding.objects.filter(
                model_name=self.model_name, dimensions=self.dimensions, content__status=Content.Status.PUBLISHED
            )
            .order_by()
            .values_list("content_id", "vector", "content__published_at", "content__embargo_until")
        )
        if not rows:
            return EMPTY
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(len(rows), self.dimensions)
        visible_from = np.fromiter(
            (max(_epoch(published), _epoch(embargo, missing=float("-inf"))) for _, _, published, embargo in rows),
            dtype=np.float64,
            count=len(rows),
        )
        return _Vectors(
            ids, matrix.astype(np.float32, copy=False), visible_from, {int(i): n for n, i in enumerate(ids)}
        )

    def refresh(self, *, force: bool = False) -> None:
        """Reload the vectors if the embeddings or the catalog changed; checks at most every REFRESH_SECONDS."""
        if not force and time.monotonic() - self._checked_at < REFRESH_SECONDS:
            return
        # One thread checks and reloads; the others go on with the vectors they have.
        if not self._lock.acquire(blocking=force):
            return
        try:
            self._checked_at = time.monotonic()
            signature = self._current_signature()
            if force or signature != self._signature:
                self._vectors = self._load() if signature[0] else EMPTY
                self._signature = signature
        finally:
            self._lock.release()

    def clear(self) -> None:
        """Forget the loaded vectors; the next `refresh` reloads them."""
        with self._lock:
            self._vectors, self._signature, self._checked_at = EMPTY, None, float("-inf")

    def search(
        self,
        query_vector: np.ndarray,
        k: int,
        *,
        exclude: set[int] | frozenset[int] = frozenset(),
        now: datetime | None = None,
    ) -> list[tuple[int, float]]:
        """The `k` items visible at `now` nearest to `query_vector`, as (content id, cosine), nearest first."""
        vectors = self._vectors
        if not len(vectors.ids) or k <= 0:
            return []
        scores = vectors.matrix @ np.asarray(query_vector, dtype=np.float32)
        hidden = vectors.visible_from > (now or timezone.now()).timestamp()
        if exclude:
            hidden |= np.isin(vectors.ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
        scores = np.where(hidden, -np.inf, scores)
        k = min(k, int((~hidden).sum()))
        if not k:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(vectors.ids[i]), float(scores[i])) for i in top]

    def similarities(self, query_vector: np.ndarray, content_ids: list[int]) -> dict[int, float]:
        """Cosine between `query_vector` and each of these items that has a vector here."""
        vectors = self._vectors
        rows = [(cid, vectors.row_of[cid]) for cid in content_ids if cid in vectors.row_of]
        if not rows:
            return {}
        scores = vectors.matrix[[r for _, r in rows]] @ np.asarray(query_vector, dtype=np.float32)
        return {cid: float(s) for (cid, _), s in zip(rows, scores, strict=True)}


def _epoch(moment: datetime | None, *, missing: float = float("inf")) -> float:
    return moment.timestamp() if moment is not None else missing


_indexes: dict[str, EmbeddingIndex] = {}
_indexes_lock = threading.Lock()


def index_get() -> EmbeddingIndex:
    """This process's index for the configured embedder (created empty; `refresh` loads it)."""
    cls = embedder_class()
    index = _indexes.get(cls.name)
    if index is None:
        with _indexes_lock:
            index = _indexes.setdefault(cls.name, EmbeddingIndex(model_name=cls.name, dimensions=cls.dimensions))
    return index
