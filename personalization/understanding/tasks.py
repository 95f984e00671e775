"""Celery entry points of understanding readers; routed to the `nlu` queue by CELERY_TASK_ROUTES."""

from celery import shared_task

from mediachat.celery import retry_transient_db

from . import classify, gazetteer


@shared_task(name="personalization.understanding.tasks.gazetteer_rebuild", **retry_transient_db(max_retries=3))
def gazetteer_rebuild() -> int:
    """Rebuild the entity gazetteer from the catalog and the synonyms (nightly, and from the admin)."""
    return gazetteer.gazetteer_rebuild()


@shared_task(name="personalization.understanding.tasks.messages_classify", **retry_transient_db(max_retries=3))
def messages_classify(message_ids: list[int]) -> int:
    """Classify these reader messages (intent and entities) and store the results."""
    return classify.messages_classify(message_ids=message_ids)


@shared_task(name="personalization.understanding.tasks.messages_classify_pending", **retry_transient_db(max_retries=3))
def messages_classify_pending() -> int:
    """Every minute: reader messages the chat path left unclassified (their reply was interrupted)."""
    return classify.messages_classify_pending()


@shared_task(
    name="personalization.understanding.tasks.messages_reclassify",
    soft_time_limit=3600,
    time_limit=3700,
    **retry_transient_db(max_retries=3),
)
def messages_reclassify(version_id: int) -> int:
    """After intent model `version_id` is activated: every reader message classified again with it."""
    return classify.messages_reclassify(version_id=version_id)
