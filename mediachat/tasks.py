"""Celery entry points for conversations: light maintenance on the default queue."""

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from mediachat.celery import retry_transient_db

from .selectors import conversation_ids_with_stale_replies
from .services import replies_interrupt_streaming

# No reply streams for this long; one still `streaming` after it was left by a server that died.
STALE_REPLY_AGE = timedelta(minutes=10)


@shared_task(
    name="mediachat.tasks.conversations_close_stale",
    queue="default",
    soft_time_limit=60,
    time_limit=90,
    **retry_transient_db(max_retries=3),
)
def conversations_close_stale() -> int:
    """Mark `interrupted` the replies left `streaming` for over ten minutes; returns how many."""
    ids = conversation_ids_with_stale_replies(started_before=timezone.now() - STALE_REPLY_AGE)
    return replies_interrupt_streaming(conversation_ids=ids) if ids else 0
