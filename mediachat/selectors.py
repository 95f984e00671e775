"""Reads about conversations used in several places."""

import time
from datetime import datetime

from django.conf import settings
from django.db.models import Exists, OuterRef

from .engine.decoding import DecodingError, DecodingParams, decoding_resolve
from .models import DecodingProfile, Message


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


# --- Decoding parameters ----------------------------------------------------------------------
# Read on the reply path, edited rarely: kept per process for a few seconds, so an edit in the admin
# reaches every process within DECODING_CACHE_S without a query per reply.
DECODING_CACHE_S = 2.0
_decoding_cache: dict[str, tuple[float, object]] = {}


def _cached(key: str, load):
    now = time.monotonic()
    hit = _decoding_cache.get(key)
    if hit is not None and now - hit[0] < DECODING_CACHE_S:
        return hit[1]
    value = load()
    _decoding_cache[key] = (now, value)
    return value


def decoding_defaults() -> DecodingParams:
    """Settings' DECODING, then the admin's default DecodingProfile over it; raises DecodingError if invalid."""

    def load() -> DecodingParams:
        params = decoding_resolve(DecodingParams(), settings.MEDIACHAT.get("DECODING") or {})
        profile = DecodingProfile.objects.filter(is_default=True).first()
        return decoding_resolve(params, profile.parameters()) if profile is not None else params

    return _cached("", load)


def decoding_for_request(override: dict | None) -> DecodingParams | None:
    """The decoding a `message` frame asks for (`{"profile": name, field: value, ...}`), or None for defaults.

    Raises DecodingError for an unknown profile, an unknown field or a value out of bounds.
    """
    if not override:
        return None
    override = dict(override)
    params = decoding_defaults()
    name = override.pop("profile", None)
    if name is not None:
        if not isinstance(name, str):
            raise DecodingError("profile", "'profile' must be the name of a decoding profile.")
        profile = _cached(f"profile:{name}", lambda: DecodingProfile.objects.filter(name=name).first())
        if profile is None:
            raise DecodingError("profile", f"No decoding profile named {name[:50]!r}.")
        params = decoding_resolve(params, profile.parameters())
    return decoding_resolve(params, override)
