"""Celery entry points for feeds: load nothing themselves, call one service with ids."""

import logging

from celery import shared_task

from mediachat.celery import retry_transient_db

from . import feed_services

logger = logging.getLogger(__name__)


@shared_task(
    name="personalization.ingest.feed_tasks.feed_poll",
    soft_time_limit=240,
    time_limit=300,
    **retry_transient_db(max_retries=3, backoff_max=120),
)
def feed_poll(feed_id: int) -> int | None:
    """Poll one feed now; returns the poll's ImportJob id, or None when the feed is gone."""
    try:
        return feed_services.feed_poll(feed_id=feed_id).pk
    except feed_services.FeedError as exc:
        # Deleted between the enqueue and now: nothing to poll, nothing to retry.
        logger.info("feed poll skipped: %s", exc)
        return None


@shared_task(
    name="personalization.ingest.feed_tasks.feeds_poll_due",
    soft_time_limit=50,
    time_limit=60,
    **retry_transient_db(max_retries=2),
)
def feeds_poll_due() -> int:
    """Every minute (beat): enqueue a poll for each active feed that is due; returns how many."""
    return feed_services.feeds_poll_due()
