"""Writes of embeddings: compute the vectors of catalog items and store them as `ContentEmbedding` rows.

Work goes in chunks: a chunk's rows are read in one query (the body cut in the database), encoded in
one call and written in one upsert, so the database costs little beside the model.
"""

import hashlib

from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Substr

from personalization.models import Content, ContentEmbedding

from .backends import Embedder, embedder_class, embedder_get

# MiniLM was trained on 128 word pieces (it reads up to 256): title, summary and the opening of the body say
# what an item is about, and shorter inputs encode several times faster.
BODY_CHARS = 400
CHUNK = 512  # items read, encoded and written together: bounded memory, few queries
PENDING_LIMIT = 2000  # items one sweep of `contents_embed_pending` takes at most
ENDS_SENTENCE = (".", "!", "?", "…", ":", ";")


def content_embedding_text(*, title: str, summary: str, body: str) -> str:
    """The text an item is embedded from: "title. summary. body" (body cut to BODY_CHARS)."""
    parts = [p for p in (title.strip(), summary.strip(), body[:BODY_CHARS].strip()) if p]
    return " ".join(p if p.endswith(ENDS_SENTENCE) else p + "." for p in parts)


def _text_hash(content_hash: str, text: str) -> str:
    # Importers fill content_hash; items written by hand or by the demo commands may have none.
    return content_hash or hashlib.sha256(text.encode()).hexdigest()


def _upsert(rows: list[ContentEmbedding]) -> None:
    with transaction.atomic():
        ContentEmbedding.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["content"],
            update_fields=["model_name", "dimensions", "vector", "text_hash", "updated_at"],
        )


def _embed_chunk(embedder: Embedder, ids: list[int]) -> int:
    rows = list(
        Content.objects.filter(id__in=ids)
        .order_by()
        .annotate(body_head=Substr("body", 1, BODY_CHARS))
        .values_list("id", "title", "summary", "body_head", "content_hash")
    )
    if not rows:
        return 0
    texts = [content_embedding_text(title=title, summary=summary, body=body) for _, title, summary, body, _ in rows]
    vectors = embedder.encode(texts)
    embeddings = [
        ContentEmbedding(
            content_id=content_id,
            model_name=embedder.name,
            dimensions=embedder.dimensions,
            vector=vector.astype("<f4").tobytes(),
            text_hash=_text_hash(content_hash, text),
        )
        for (content_id, _, _, _, content_hash), text, vector in zip(rows, texts, vectors, strict=True)
    ]
    try:
        _upsert(embeddings)
    except IntegrityError:
        # An item was deleted while it was being encoded: store the others.
        alive = set(Content.objects.filter(id__in=ids).values_list("id", flat=True))
        embeddings = [e for e in embeddings if e.content_id in alive]
        _upsert(embeddings)
    return len(embeddings)


def contents_embed(*, content_ids: list[int]) -> int:
    """Compute and store the embeddings of these items, whatever their status; returns how many were stored.

    Ids of items that no longer exist are skipped. Running it again recomputes the same vectors.
    """
    ids = sorted(set(content_ids))
    if not ids:
        return 0
    embedder = embedder_get()
    return sum(_embed_chunk(embedder, ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK))


def contents_pending_embedding() -> QuerySet[Content]:
    """Items (not archived) with no embedding, or one from another model, other text, or before their last edit."""
    model_name = embedder_class().name
    return (
        Content.objects.exclude(status=Content.Status.ARCHIVED)
        .filter(
            Q(embedding__isnull=True)
            | ~Q(embedding__model_name=model_name)
            | (~Q(content_hash="") & ~Q(embedding__text_hash=F("content_hash")))
            | Q(embedding__updated_at__lt=F("updated_at"))
        )
        .order_by("-updated_at", "-id")
    )


def contents_embed_pending(*, limit: int = PENDING_LIMIT) -> int:
    """Embed up to `limit` pending items (`contents_pending_embedding`), most recently edited first."""
    ids = list(contents_pending_embedding().values_list("id", flat=True)[:limit])
    return contents_embed(content_ids=ids)
