"""Writes for feeds: register a feed, poll one now, enqueue the polls that are due.

Every poll is an `ImportJob` (format feed) so editors see its counts and row errors; the `FeedSource`
keeps the validators for the next conditional request, its last success and error, and its backoff.
"""

import logging
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from ..models import FeedSource, ImportJob, Section
from .feeds import FeedFetchError, FeedParseError, FeedResponse, feed_fetch, feed_parse, feed_rows
from .records import SourceRow
from .services import import_rows_write
from .writer import ImportAborted

logger = logging.getLogger(__name__)

MAX_POLL_INTERVAL_MINUTES = 7 * 24 * 60
MAX_BACKOFF = timedelta(hours=24)
# Backoff delays are drawn from this fraction of the full delay up to all of it, so that feeds that
# failed together (one host down) do not come back in step.
BACKOFF_JITTER = (0.85, 1.0)
# A poll still "running" after this long died with its worker (the task's hard limit is far shorter).
POLL_LEASE = timedelta(minutes=15)
_validate_url = URLValidator(schemes=["http", "https"])


class FeedError(Exception):
    """A refused request about feeds: a bad URL, a duplicate, an unknown feed or section."""


def feed_source_create(
    *,
    url: str,
    name: str = "",
    section_id: int | None = None,
    poll_interval_minutes: int = 30,
    publish: bool = True,
) -> FeedSource:
    """Register a feed to poll, due at once. Raises FeedError for a URL that is not http(s) or already known."""
    url = (url or "").strip()
    try:
        _validate_url(url)
    except ValidationError:
        raise FeedError(f"Not a feed address: {url!r}. Give a full http:// or https:// URL.") from None
    if len(url) > FeedSource._meta.get_field("url").max_length:
        raise FeedError("The feed URL is longer than 1,000 characters.")
    if not isinstance(poll_interval_minutes, int) or not 1 <= poll_interval_minutes <= MAX_POLL_INTERVAL_MINUTES:
        raise FeedError(f"The poll interval is a whole number of minutes from 1 to {MAX_POLL_INTERVAL_MINUTES}.")
    if section_id is not None and not Section.objects.filter(pk=section_id).exists():
        raise FeedError(f"No section {section_id}.")
    name = (name or "").strip()[:200] or url.split("//", 1)[1].split("/", 1)[0]
    try:
        with transaction.atomic():
            return FeedSource.objects.create(
                url=url,
                name=name,
                section_id=section_id,
                poll_interval_minutes=poll_interval_minutes,
                publish=publish,
                next_poll_at=timezone.now(),
            )
    except IntegrityError:
        raise FeedError(f"A feed with the URL {url} already exists.") from None


def feeds_poll_due(*, now: datetime | None = None) -> int:
    """Enqueue a poll for every active feed whose `next_poll_at` has come; returns how many were enqueued.

    Each feed is claimed by moving its `next_poll_at` one interval on (compare-and-set), so two beats, or a
    beat that fires while the last poll is still queued, enqueue it once; the poll sets the real next time.
    """
    from .feed_tasks import feed_poll as feed_poll_task  # the tasks module imports this one

    now = now or timezone.now()
    due = (
        FeedSource.objects.filter(is_active=True)
        .filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))
        .order_by("next_poll_at", "pk")
        .values_list("pk", "next_poll_at", "poll_interval_minutes")
    )
    enqueued = 0
    for pk, next_poll_at, interval in due:
        with transaction.atomic():
            claimed = FeedSource.objects.filter(pk=pk, next_poll_at=next_poll_at).update(
                next_poll_at=now + timedelta(minutes=interval)
            )
            if claimed:
                transaction.on_commit(partial(feed_poll_task.delay, pk))
                enqueued += 1
    return enqueued


def feed_poll(*, feed_id: int) -> ImportJob:
    """Fetch the feed now (conditionally), import its entries, and return the poll's job.

    A 304 is a success with nothing written; a fetch or parse failure fails the job, records the error on
    the feed and backs off. If a poll of this feed is already running, returns that one's job instead.
    Raises FeedError for an unknown feed.
    """
    feed, job, started = _poll_start(feed_id=feed_id)
    if not started:
        return job
    try:
        response = feed_fetch(
            url=feed.url,
            etag=feed.etag,
            last_modified=feed.last_modified,
            timeout_s=settings.MEDIACHAT["FEED_TIMEOUT_S"],
            max_bytes=settings.MEDIACHAT["FEED_MAX_BYTES"],
        )
        if response.not_modified:
            _poll_succeed(feed=feed, job=job, response=response)
            return job
        parsed = feed_parse(response.content, url=response.url, content_type=response.content_type)
    except (FeedFetchError, FeedParseError) as exc:
        _poll_fail(feed=feed, job=job, error=str(exc))
        return job
    rows = _Counted(feed_rows(parsed, section=feed.section.name if feed.section else "", publish=feed.publish))
    # The writer commits batch by batch: if it stops, what it wrote stays and the job says why it stopped.
    try:
        import_rows_write(job=job, rows=rows, progress=lambda: rows.read / max(len(parsed.entries), 1))
    except ImportAborted as exc:
        _poll_fail(feed=feed, job=job, error=str(exc))
        return job
    except SoftTimeLimitExceeded:
        _poll_fail(feed=feed, job=job, error="Stopped at the task's time limit; the next poll goes on.")
        return job
    except (OperationalError, InterfaceError):
        # The database is going away: the task retries the whole poll, as a fresh job.
        _poll_abandon(job=job, error="The database connection failed during the import; the poll is retried.")
        raise
    except Exception as exc:
        logger.exception("feed %s: the import of poll job %s stopped", feed.pk, job.pk)
        _poll_fail(feed=feed, job=job, error=f"The import stopped on an unexpected error: {type(exc).__name__}: {exc}")
        return job
    _poll_succeed(feed=feed, job=job, response=response, warning=parsed.warning)
    return job


class _Counted:
    """The rows, counting how many the writer has taken (its progress)."""

    def __init__(self, rows: Iterator[SourceRow]):
        self.rows = rows
        self.read = 0

    def __iter__(self) -> Iterator[SourceRow]:
        for row in self.rows:
            self.read += 1
            yield row


def feed_backoff(*, interval_minutes: int, failures: int) -> timedelta:
    """How long to wait after `failures` failures in a row: the interval doubled each time, at most a day."""
    full = timedelta(minutes=interval_minutes) * 2 ** min(failures, 20)
    return min(full, MAX_BACKOFF) * random.uniform(*BACKOFF_JITTER)


def _poll_start(*, feed_id: int) -> tuple[FeedSource, ImportJob, bool]:
    now = timezone.now()
    with transaction.atomic():
        feed = FeedSource.objects.select_for_update().filter(pk=feed_id).first()
        if feed is None:
            raise FeedError(f"No feed {feed_id}.")
        running = feed.jobs.filter(status=ImportJob.Status.RUNNING).order_by("-started_at").first()
        if running is not None and running.started_at and running.started_at > now - POLL_LEASE:
            return feed, running, False
        feed.jobs.filter(status=ImportJob.Status.RUNNING).update(
            status=ImportJob.Status.FAILED,
            finished_at=now,
            error=f"Abandoned: the poll did not finish within {POLL_LEASE.seconds // 60} minutes.",
        )
        job = ImportJob.objects.create(
            format=ImportJob.Format.FEED,
            target=ImportJob.Target.CONTENT,
            feed=feed,
            status=ImportJob.Status.RUNNING,
            started_at=now,
            options={"url": feed.url},
        )
    if feed.section_id:
        feed.section = Section.objects.filter(pk=feed.section_id).first()
    return feed, job, True


def _poll_abandon(*, job: ImportJob, error: str) -> None:
    try:
        ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).update(
            status=ImportJob.Status.FAILED, finished_at=timezone.now(), error=error
        )
    except DatabaseError:
        logger.warning("could not mark poll job %s failed; the next poll takes over after its lease", job.pk)


def _poll_succeed(*, feed: FeedSource, job: ImportJob, response: FeedResponse, warning: str = "") -> None:
    now = timezone.now()
    job.refresh_from_db(fields=["created_count", "updated_count", "skipped_count", "failed_count", "rows_seen"])
    job.status = ImportJob.Status.SUCCEEDED
    job.progress = 1.0
    job.finished_at = now
    job.error = warning
    job.save(update_fields=["status", "progress", "finished_at", "error"])
    validators = {}
    # A 304 may carry fresh validators; one that carries none keeps the old ones.
    if response.etag or not response.not_modified:
        validators["etag"] = response.etag
    if response.last_modified or not response.not_modified:
        validators["last_modified"] = response.last_modified
    FeedSource.objects.filter(pk=feed.pk).update(
        **validators,
        last_polled_at=now,
        last_success_at=now,
        consecutive_failures=0,
        next_poll_at=now + timedelta(minutes=feed.poll_interval_minutes),
        items_created=F("items_created") + job.created_count,
        items_updated=F("items_updated") + job.updated_count,
        items_skipped=F("items_skipped") + job.skipped_count,
    )


def _poll_fail(*, feed: FeedSource, job: ImportJob, error: str) -> None:
    now = timezone.now()
    job.refresh_from_db(fields=["created_count", "updated_count", "skipped_count", "failed_count", "rows_seen"])
    job.status = ImportJob.Status.FAILED
    job.finished_at = now
    job.error = error
    job.save(update_fields=["status", "finished_at", "error"])
    failures = feed.consecutive_failures + 1
    FeedSource.objects.filter(pk=feed.pk).update(
        last_polled_at=now,
        last_error=error,
        last_error_at=now,
        consecutive_failures=F("consecutive_failures") + 1,
        next_poll_at=now + feed_backoff(interval_minutes=feed.poll_interval_minutes, failures=failures),
        # Batches the writer committed before it stopped are real items: count them.
        items_created=F("items_created") + job.created_count,
        items_updated=F("items_updated") + job.updated_count,
        items_skipped=F("items_skipped") + job.skipped_count,
    )
    logger.warning("feed %s (%s): poll failed: %s", feed.pk, feed.url, error)
