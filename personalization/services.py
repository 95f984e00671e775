"""Writes about readers: profiles, merging an anonymous history into an account, reading signals."""

from django.db import transaction
from django.utils import timezone

from mediachat.models import Conversation

from .models import Interaction, ReaderProfile


def profile_touch(*, user_id: int) -> ReaderProfile:
    """The reader's profile, created on first sight, with `last_seen_at` set to now."""
    profile, created = ReaderProfile.objects.get_or_create(user_id=user_id, defaults={"last_seen_at": timezone.now()})
    if not created:
        profile.last_seen_at = timezone.now()
        profile.save(update_fields=["last_seen_at"])
    return profile


def reader_merge_anonymous(*, user_id: int, reader_key: str) -> dict[str, int]:
    """Give the signed-in user what they did anonymously under `reader_key` (conversations, signals)."""
    if not reader_key:
        return {"conversations": 0, "interactions": 0}
    with transaction.atomic():
        conversations = Conversation.objects.filter(user__isnull=True, session_key=reader_key).update(
            user_id=user_id, session_key=""
        )
        interactions = Interaction.objects.filter(user__isnull=True, session_key=reader_key).update(
            user_id=user_id, session_key=""
        )
    profile_touch(user_id=user_id)
    return {"conversations": conversations, "interactions": interactions}
