"""Celery entry points of understanding readers; routed to the `nlu` queue by CELERY_TASK_ROUTES."""

from celery import shared_task

from mediachat.celery import retry_transient_db

from . import gazetteer


@shared_task(name="personalization.understanding.tasks.gazetteer_rebuild", **retry_transient_db(max_retries=3))
def gazetteer_rebuild() -> int:
    """Rebuild the entity gazetteer from the catalog and the synonyms (nightly, and from the admin)."""
    return gazetteer.gazetteer_rebuild()
