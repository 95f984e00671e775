"""Celery entry points for embeddings: each calls one service with ids.

The importers enqueue `contents_embed` with the ids of the items a batch created or changed, once the
batch has committed; beat runs `contents_embed_pending` every two minutes for whatever they missed
(items edited in the admin, a worker that was down).
"""

from celery import shared_task

from mediachat.celery import retry_transient_db

from . import services


@shared_task(
    name="personalization.embeddings.tasks.contents_embed",
    soft_time_limit=600,
    time_limit=660,
    **retry_transient_db(max_retries=5, backoff_max=300),
)
def contents_embed(content_ids: list[int]) -> int:
    """Embed these items; returns how many embeddings were stored."""
    return services.contents_embed(content_ids=content_ids)


@shared_task(
    name="personalization.embeddings.tasks.contents_embed_pending",
    soft_time_limit=600,
    time_limit=660,
    **retry_transient_db(max_retries=3),
)
def contents_embed_pending() -> int:
    """Periodic: embed items with no embedding or a stale one, up to services.PENDING_LIMIT a run."""
    return services.contents_embed_pending(limit=services.PENDING_LIMIT)
