"""Writes about readers: profiles, merging an anonymous history into an account, reading signals."""

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from mediachat.models import Conversation

from .identity import ReaderRef
from .models import Content, Interaction, ReaderProfile


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


# --- Reading signals sent by clients (the REST beacon) ---------------------------------------

MAX_EVENTS_PER_BATCH = 100
MAX_IDEMPOTENCY_KEY_CHARS = 64
MAX_DWELL_SECONDS = 24 * 3600
MAX_EVENT_AGE = timedelta(days=30)
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_DB_INT = 2**63 - 1
EVENT_FIELDS = frozenset({"content", "kind", "value", "source", "idempotency_key", "occurred_at"})
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,320}$")
SOURCE_RE = re.compile(r"^[a-z0-9_-]{1,32}$")


class SignalError(Exception):
    """A refused batch: `code` is stable, `detail` is for people, `errors` maps event index to field messages."""

    def __init__(self, code: str, detail: str, errors: dict[int, dict[str, str]] | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.errors = errors or {}


@dataclass(frozen=True)
class RecordResult:
    recorded: int
    duplicates: int


@dataclass
class _Event:
    content: int | str
    kind: str
    value: float | None
    source: str
    idempotency_key: str
    occurred_at: datetime
    content_id: int = field(default=0)


def _check_value(kind: str, value: object) -> tuple[float | None, str]:
    """The event's value and an error message ('' when valid)."""
    if value is None:
        if kind in (Interaction.Kind.DWELL, Interaction.Kind.RATE):
            return None, f"A '{kind}' event needs a value."
        return None, ""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, "Must be a finite number."
    if kind == Interaction.Kind.DWELL and not 0 <= value <= MAX_DWELL_SECONDS:
        return None, f"Dwell seconds must be between 0 and {MAX_DWELL_SECONDS}."
    if kind == Interaction.Kind.RATE and not 1 <= value <= 5:
        return None, "A rating must be between 1 and 5 stars."
    if abs(value) > 1e9:
        return None, "Out of range."
    return float(value), ""


def _check_occurred_at(raw: object, now: datetime) -> tuple[datetime, str]:
    if raw is None:
        return now, ""
    if not isinstance(raw, str) or len(raw) > 64:
        return now, "Must be an ISO 8601 date-time string."
    try:
        moment = parse_datetime(raw)
    except ValueError:
        moment = None
    if moment is None:
        return now, "Must be an ISO 8601 date-time string."
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    if moment > now + MAX_CLOCK_SKEW:
        return now, "Lies in the future."
    if moment < now - MAX_EVENT_AGE:
        return now, f"Is older than {MAX_EVENT_AGE.days} days."
    return moment, ""


def check_interaction_event(raw: object, *, now: datetime) -> tuple[_Event | None, dict[str, str]]:
    """Validate one client event (shape and values, not the content's existence): the event or field errors."""
    if not isinstance(raw, dict):
        return None, {"event": "Must be a JSON object."}
    errors: dict[str, str] = {}
    unknown = sorted(str(k) for k in raw if k not in EVENT_FIELDS)
    if unknown:
        errors["event"] = f"Unknown fields: {', '.join(unknown)[:200]}."
    content = raw.get("content")
    if content is None:
        errors["content"] = "Required: a content id or slug."
    elif isinstance(content, bool) or not isinstance(content, int | str):
        errors["content"] = "Must be a content id (integer) or slug (string)."
    elif isinstance(content, int) and not 1 <= content <= MAX_DB_INT:
        errors["content"] = "Not a valid content id."
    elif isinstance(content, str) and not SLUG_RE.match(content):
        errors["content"] = "Not a valid slug."
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in Interaction.Kind.values:
        errors["kind"] = f"Must be one of {', '.join(Interaction.Kind.values)}."
        kind = ""
    value, problem = _check_value(kind, raw.get("value"))
    if problem:
        errors["value"] = problem
    source = raw.get("source", "web")
    if not isinstance(source, str) or not SOURCE_RE.match(source):
        errors["source"] = "Must be 1 to 32 lower-case letters, digits, '-' or '_'."
    key = raw.get("idempotency_key")
    key = "" if key is None else key
    if not isinstance(key, str) or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        errors["idempotency_key"] = f"Must be a printable string of at most {MAX_IDEMPOTENCY_KEY_CHARS} characters."
    occurred_at, problem = _check_occurred_at(raw.get("occurred_at"), now)
    if problem:
        errors["occurred_at"] = problem
    if errors:
        return None, errors
    return _Event(content, kind, value, source, key, occurred_at), {}


def _reader_tag(reader: ReaderRef) -> str:
    """A short, stable prefix that keeps one reader's idempotency keys apart from another's."""
    if reader.user_id is not None:
        return f"u{reader.user_id}"
    return "s" + hashlib.blake2b(reader.session_key.encode(), digest_size=12).hexdigest()


def interactions_record(*, reader: ReaderRef, events: object) -> RecordResult:
    """Record a batch of the reader's own reading signals, all or nothing.

    Every event is validated first and must name published content; any invalid event refuses the whole
    batch with SignalError("invalid_events") and per-index errors. An event whose `idempotency_key` this
    reader already sent (stored, or earlier in the batch) is skipped and counted as a duplicate. Two
    concurrent requests carrying the same key store it once; both may count it as recorded.
    """
    if reader.user_id is None and not reader.session_key:
        raise SignalError("no_reader", "No reader session: load a page of the site first.")
    if not isinstance(events, list):
        raise SignalError("invalid_field", "'events' must be a list of events.")
    if not events:
        raise SignalError("invalid_field", "'events' is empty.")
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise SignalError("too_many_events", f"{len(events)} events in one batch; the limit is {MAX_EVENTS_PER_BATCH}.")
    now = timezone.now()
    checked: dict[int, _Event] = {}
    errors: dict[int, dict[str, str]] = {}
    for index, raw in enumerate(events):
        event, problems = check_interaction_event(raw, now=now)
        if event is None:
            errors[index] = problems
        else:
            checked[index] = event

    ids = {e.content for e in checked.values() if isinstance(e.content, int)}
    slugs = {e.content for e in checked.values() if isinstance(e.content, str)}
    by_id: dict[int, int] = {}
    by_slug: dict[str, int] = {}
    if ids or slugs:
        for pk, slug in (
            Content.objects.published(now).filter(Q(pk__in=ids) | Q(slug__in=slugs)).values_list("pk", "slug")
        ):
            by_id[pk] = pk
            by_slug[slug] = pk
    for index, event in checked.items():
        found = by_id.get(event.content) if isinstance(event.content, int) else by_slug.get(event.content)
        if found is None:
            errors[index] = {"content": f"No published content {event.content!r}."}
        else:
            event.content_id = found
    if errors:
        raise SignalError(
            "invalid_events",
            f"{len(errors)} of {len(events)} events are invalid; nothing was recorded.",
            dict(sorted(errors.items())),
        )

    tag = _reader_tag(reader)
    owner = reader.owner_fields()
    with transaction.atomic():
        stored_keys = [f"{tag}:{e.idempotency_key}" for e in checked.values() if e.idempotency_key]
        seen = set(
            Interaction.objects.filter(idempotency_key__in=stored_keys).values_list("idempotency_key", flat=True)
        )
        rows, duplicates = [], 0
        for event in checked.values():
            key = f"{tag}:{event.idempotency_key}" if event.idempotency_key else None
            if key is not None:
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
            rows.append(
                Interaction(
                    **owner,
                    content_id=event.content_id,
                    kind=event.kind,
                    value=event.value,
                    source=event.source,
                    idempotency_key=key,
                    occurred_at=event.occurred_at,
                )
            )
        # ignore_conflicts: a concurrent request that stored the same key first wins, without an error here.
        Interaction.objects.bulk_create(rows, ignore_conflicts=True)
    return RecordResult(recorded=len(rows), duplicates=duplicates)
