"""Editorial writes on the catalog: publishing, unpublishing and archiving content."""

from collections.abc import Iterable

from django.db.models import F
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from .models import Content


def content_publish(*, content_ids: Iterable[int]) -> int:
    """Publish the contents; one without a publication date gets now (or its earlier embargo end).

    Returns how many rows changed.
    """
    now = timezone.now()
    # The embargo may not end before publication (Content.clean): never date publication after it.
    published_at = Coalesce(F("published_at"), Least(F("embargo_until"), now), now)
    return (
        Content.objects.filter(pk__in=list(content_ids))
        .exclude(status=Content.Status.PUBLISHED)
        .update(status=Content.Status.PUBLISHED, published_at=published_at, updated_at=now)
    )


def content_unpublish(*, content_ids: Iterable[int]) -> int:
    """Take published contents back to draft; their publication date stays for when they return."""
    return Content.objects.filter(pk__in=list(content_ids), status=Content.Status.PUBLISHED).update(
        status=Content.Status.DRAFT, updated_at=timezone.now()
    )


def content_archive(*, content_ids: Iterable[int]) -> int:
    """Archive the contents: readers no longer see them, editors keep them."""
    return (
        Content.objects.filter(pk__in=list(content_ids))
        .exclude(status=Content.Status.ARCHIVED)
        .update(status=Content.Status.ARCHIVED, updated_at=timezone.now())
    )
