"""Stored reader messages understood in batches: what the chat path left unclassified, and history after a new model.

The chat path stores each reader message's understanding with its reply. A message whose reply never
finished (the reader sent another, or left) is classified here by the `nlu` workers a little later, and
every reader message is classified again when another intent model is activated, so that stored
predictions always carry the version that made them.
"""

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from mediachat.models import Message
from mediachat.services.batches import UNDERSTANDING_FIELDS, understanding_message

from .recognizer import recognizer_get

logger = logging.getLogger(__name__)

BATCH = 128
PENDING_AFTER = timedelta(seconds=30)  # the chat path stores a message's understanding with its reply first
PENDING_LIMIT = 2000  # per periodic run; the next run takes the rest


def _classify(rows: list[tuple[int, str, object]]) -> int:
    """Classify (id, text, created_at) rows and store the results; returns how many were stored."""
    if not rows:
        return 0
    results = recognizer_get().understand_many([text for _, text, _ in rows], now=timezone.now())
    messages = [understanding_message(pk, u.as_dict()) for (pk, _, _), u in zip(rows, results, strict=True)]
    with transaction.atomic():
        Message.objects.bulk_update(messages, UNDERSTANDING_FIELDS)
    return len(messages)


def _in_batches(queryset, progress: Callable[[int], None] | None = None) -> int:
    done = 0
    batch: list = []
    for row in queryset.values_list("id", "text", "created_at").iterator(chunk_size=BATCH * 4):
        batch.append(row)
        if len(batch) >= BATCH:
            done += _classify(batch)
            batch = []
            if progress is not None:
                progress(done)
    done += _classify(batch)
    if progress is not None:
        progress(done)
    return done


def messages_classify(*, message_ids: Iterable[int]) -> int:
    """Classify these reader messages now (whatever they held); returns how many."""
    ids = list(message_ids)
    return _in_batches(Message.objects.filter(pk__in=ids, role=Message.Role.USER).order_by("id"))


def messages_classify_pending(*, limit: int = PENDING_LIMIT) -> int:
    """Classify reader messages stored over PENDING_AFTER ago that nothing classified; returns how many.

    Without an active intent model there is nothing to add to what the chat path stored (its rules ran
    then): the sweep waits, and activating a model reclassifies everything anyway.
    """
    recognizer = recognizer_get()
    recognizer.refresh()
    if recognizer.model_version_id is None:
        return 0
    cutoff = timezone.now() - PENDING_AFTER
    pending = Message.objects.filter(role=Message.Role.USER, intent_source="", created_at__lt=cutoff).order_by("id")
    ids = list(pending.values_list("id", flat=True)[:limit])
    return messages_classify(message_ids=ids) if ids else 0


def messages_reclassify(*, version_id: int | None = None) -> int:
    """Classify every reader message again with the active model (after an activation); returns how many.

    `version_id` is the version activated: when another has been activated since, this run is stale and
    does nothing (that activation queued its own).
    """
    from training.models import ModelKind, ModelVersion

    recognizer = recognizer_get()
    recognizer.refresh(force=True)
    active = ModelVersion.objects.active().filter(kind=ModelKind.INTENT).values_list("id", flat=True).first()
    if version_id is not None and active != version_id:
        logger.info("intent model %s is no longer active; reclassification skipped", version_id)
        return 0
    total = Message.objects.filter(role=Message.Role.USER).count()

    def progress(done: int) -> None:
        logger.info("reclassified %d of %d reader messages with intent model %s", done, total, active)

    return _in_batches(Message.objects.filter(role=Message.Role.USER).order_by("id"), progress)
