"""Reads about conversations used in several places."""

from datetime import datetime

from django.db.models import Exists, OuterRef

from .models import Message


def conversation_ids_with_stale_replies(*, started_before: datetime) -> list[int]:
    """Conversations whose replies still streaming all started before `started_before` (a crashed server).

    A conversation that also has a reply streaming since then is left alone: that one is alive, and
    interrupting a conversation's streaming replies would end it too.
    """
    streaming = Message.objects.filter(role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)
    fresh = streaming.filter(conversation_id=OuterRef("conversation_id"), created_at__gte=started_before)
    return list(
        streaming.filter(created_at__lt=started_before)
        .filter(~Exists(fresh))
        .values_list("conversation_id", flat=True)
        .distinct()
    )
