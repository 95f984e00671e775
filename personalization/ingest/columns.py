"""From a row of fields (a CSV row, a JSON object, a WordPress item) to a record, for each import target.

A column mapping names the source column of a field (`{"title": "headline"}`); fields it leaves out are
found under their common names (`body`, `text` or `content` for the body…). Values are checked here:
a missing required field, a date before 1900 or more than a day ahead, a count that is not a whole
number make the row an error, with the field named.
"""

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from django.utils import timezone

from .records import ContentRecord, CustomerRecord, RowError, SocialFields, SourceRow

RAW_CHARS = 2000
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
LIST_SEPARATORS = re.compile(r"[,;|]")

# Field → names it goes by in exports, most specific first (matched without regard to case, spaces or dashes).
FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "content": {
        "external_id": ("external_id", "id", "guid", "uuid", "post_id", "article_id"),
        "title": ("title", "headline", "name"),
        "body": ("body", "text", "content", "html", "body_html", "content_html", "article_body"),
        "summary": ("summary", "excerpt", "description", "lead", "dek", "standfirst", "abstract"),
        "url": ("url", "link", "permalink", "canonical_url"),
        "published_at": ("published_at", "date", "published", "pub_date", "pubdate", "publication_date", "datetime"),
        "language": ("language", "lang", "locale"),
        "section": ("section", "section_name", "desk"),
        "tags": ("tags", "keywords", "tag"),
        "authors": ("authors", "author", "byline", "creator", "creators"),
        "categories": ("categories", "category"),
        "kind": ("kind", "content_type"),
        "status": ("status", "state"),
        "duration_seconds": ("duration_seconds", "duration"),
    },
    "social": {
        "external_id": ("external_id", "id", "post_id", "status_id", "tweet_id"),
        "title": ("title",),
        "text": ("text", "body", "content", "message", "caption", "full_text"),
        "url": ("url", "link", "permalink"),
        "posted_at": ("posted_at", "date", "created_at", "published_at", "timestamp", "time"),
        "platform": ("platform", "network", "service"),
        "handle": ("handle", "username", "user", "screen_name", "account", "author"),
        "likes": ("likes", "like_count", "favorites", "favorite_count", "reactions"),
        "shares": ("shares", "share_count", "retweets", "retweet_count", "reposts", "boosts"),
        "comments": ("comments", "comment_count", "replies", "reply_count"),
        "views": ("views", "view_count", "impressions", "plays"),
        "language": ("language", "lang", "locale"),
        "tags": ("tags", "hashtags"),
    },
    "customer": {
        "external_id": ("external_id", "id", "ticket_id", "message_id"),
        "channel": ("channel", "type"),
        "source": ("source", "system"),
        "subject": ("subject", "title"),
        "text": ("text", "body", "message", "content", "description"),
        "received_at": ("received_at", "date", "created_at", "timestamp", "sent_at"),
        "labels": ("labels", "tags", "intent", "intents"),
        "consent": ("consent", "training_consent", "consented"),
        "language": ("language", "lang", "locale"),
    },
}
REQUIRED = {"content": "title", "social": "text", "customer": "text"}
# Names a mapping may use for a field besides its own.
MAPPING_SYNONYMS = {
    "content": {"id": "external_id", "date": "published_at"},
    "social": {"id": "external_id", "date": "posted_at", "body": "text"},
    "customer": {"id": "external_id", "date": "received_at"},
}
KINDS = {"article": "article", "video": "video", "podcast": "podcast", "audio": "podcast", "post": "post"}
STATUSES = {
    "published": "published",
    "publish": "published",
    "live": "published",
    "draft": "draft",
    "archived": "archived",
}
CHANNELS = {
    "ticket": "ticket",
    "tickets": "ticket",
    "support": "ticket",
    "comment": "comment",
    "comments": "comment",
    "email": "email",
    "e-mail": "email",
    "mail": "email",
}
TRUE = {"true", "yes", "y", "1", "on", "granted"}
FALSE = {"false", "no", "n", "0", "off", "", "denied"}


class BadValue(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def mapping_check(*, target: str, column_mapping: object) -> dict[str, str]:
    """The mapping with field names made canonical; raises ValueError naming what is wrong with it."""
    if column_mapping in (None, ""):
        return {}
    if not isinstance(column_mapping, Mapping):
        raise ValueError('The column mapping must be an object of field → column, e.g. {"title": "headline"}.')
    fields = FIELDS[target]
    checked: dict[str, str] = {}
    for key, column in column_mapping.items():
        field = MAPPING_SYNONYMS[target].get(str(key), str(key))
        if field not in fields:
            raise ValueError(f"Unknown field {key!r} in the column mapping for {target}; fields: {', '.join(fields)}.")
        if not isinstance(column, str) or not column.strip():
            raise ValueError(f"The column mapped to {key!r} must be a non-empty column name.")
        checked[field] = column.strip()
    return checked


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


class RowConverter:
    """Turns one row of fields into a `SourceRow` for its target: a record, or the error that kept it from one."""

    def __init__(self, *, target: str, column_mapping: Mapping[str, str] | None = None, options: Mapping | None = None):
        self.target = target
        self.mapping = mapping_check(target=target, column_mapping=column_mapping)
        self.options = dict(options or {})
        self.now = timezone.now()
        self._columns: dict[tuple, dict[str, str]] = {}

    def columns(self, keys: tuple[str, ...]) -> dict[str, str]:
        """Field → column among `keys` (a CSV header, a JSON object's keys); cached per set of keys."""
        found = self._columns.get(keys)
        if found is None:
            by_norm: dict[str, str] = {}
            for key in keys:
                by_norm.setdefault(_norm(key), key)
            found = {}
            for field, aliases in FIELDS[self.target].items():
                wanted = self.mapping.get(field)
                if wanted is not None:
                    column = wanted if wanted in keys else by_norm.get(_norm(wanted))
                else:
                    column = next((by_norm[a] for a in aliases if a in by_norm), None)
                if column is not None:
                    found[field] = column
            if len(self._columns) < 1000:
                self._columns[keys] = found
        return found

    def missing_mapped(self, header: list[str]) -> list[str]:
        """Mapped columns a CSV header lacks, as 'field=column'."""
        present = set(header) | {_norm(h) for h in header}
        return [f"{f}={c}" for f, c in self.mapping.items() if c not in present and _norm(c) not in present]

    def __call__(self, line: int, row: Mapping[str, object], raw: str) -> SourceRow:
        columns = self.columns(tuple(row))
        values = {field: row[column] for field, column in columns.items()}
        external_id = ""
        try:
            external_id = _text(values.get("external_id"), "external_id").strip()
            build = {"content": self._content, "social": self._social, "customer": self._customer}[self.target]
            return SourceRow(line=line, record=build(values, external_id))
        except BadValue as exc:
            error = RowError(
                line=line, message=exc.message, field=exc.field, external_id=external_id, raw=raw[:RAW_CHARS]
            )
            return SourceRow(line=line, error=error)

    def _date(self, value: object, field: str) -> datetime | None:
        moment = parse_date(value, field)
        if moment is None:
            return None
        if moment < EARLIEST:
            raise BadValue(field, f"The date {_show(value)} is before 1900.")
        if moment > self.now + FUTURE_SLACK:
            raise BadValue(field, f"The date {_show(value)} is more than a day in the future.")
        return moment

    def _content(self, values: dict[str, object], external_id: str) -> ContentRecord:
        title = _text(values.get("title"), "title").strip()
        if not title:
            raise BadValue("title", "The title is missing.")
        url = _text(values.get("url"), "url").strip()
        kind = _choice(values.get("kind"), "kind", KINDS, default="article")
        status = _choice(values.get("status"), "status", STATUSES, default="published")
        duration = values.get("duration_seconds")
        return ContentRecord(
            external_id=external_id or url,
            title=title,
            body=_text(values.get("body"), "body", join="\n\n"),
            summary=_text(values.get("summary"), "summary"),
            url=url,
            kind=kind,
            published_at=self._date(values.get("published_at"), "published_at"),
            language=_text(values.get("language"), "language").strip(),
            section=_text(values.get("section"), "section").strip(),
            tags=_list(values.get("tags"), "tags"),
            authors=_list(values.get("authors"), "authors"),
            categories=_list(values.get("categories"), "categories"),
            status=status,
            duration_seconds=None if _blank(duration) else _count(duration, "duration_seconds"),
        )

    def _social(self, values: dict[str, object], external_id: str) -> ContentRecord:
        text = _text(values.get("text"), "text", join="\n\n")
        if not text.strip():
            raise BadValue("text", "The text is missing.")
        url = _text(values.get("url"), "url").strip()
        platform = _text(values.get("platform"), "platform").strip().lower() or self.options.get("platform", "")
        social = SocialFields(
            platform=(platform or "unknown")[:32],
            handle=_text(values.get("handle"), "handle").strip().lstrip("@")[:100],
            likes=_count(values.get("likes"), "likes"),
            shares=_count(values.get("shares"), "shares"),
            comments=_count(values.get("comments"), "comments"),
            views=_count(values.get("views"), "views"),
        )
        return ContentRecord(
            external_id=external_id or url,
            title=_text(values.get("title"), "title").strip(),
            body=text,
            url=url,
            kind="post",
            published_at=self._date(values.get("posted_at"), "posted_at"),
            language=_text(values.get("language"), "language").strip(),
            tags=_hashtags(_list(values.get("tags"), "tags")),
            social=social,
        )

    def _customer(self, values: dict[str, object], external_id: str) -> CustomerRecord:
        text = _text(values.get("text"), "text", join="\n\n")
        if not text.strip():
            raise BadValue("text", "The text is missing.")
        channel_value = values.get("channel")
        if _blank(channel_value):
            channel_value = self.options.get("channel")
        if _blank(channel_value):
            raise BadValue(
                "channel",
                "The channel is missing: a channel column (ticket, comment, email) or the job's channel option.",
            )
        channel = _choice(channel_value, "channel", CHANNELS, default="")
        received_at = self._date(values.get("received_at"), "received_at")
        if received_at is None:
            raise BadValue("received_at", "The date is missing.")
        consent = values.get("consent")
        return CustomerRecord(
            channel=channel,
            source=(_text(values.get("source"), "source").strip() or self.options.get("source", ""))[:100],
            external_id=external_id,
            text=text,
            received_at=received_at,
            subject=_text(values.get("subject"), "subject").strip()[:500],
            labels=_list(values.get("labels"), "labels"),
            training_consent=_bool(consent, "consent"),
            language=_text(values.get("language"), "language").strip(),
        )


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _show(value: object) -> str:
    return repr(value)[:60]


def _text(value: object, field: str, *, join: str = " ") -> str:
    """A text value; numbers become text, a list of strings is joined, NUL characters are dropped."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        raise BadValue(field, f"The {field} must be text, not {str(value).lower()}.")
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = join.join(value)
    else:
        raise BadValue(field, f"The {field} must be text, not {type(value).__name__}.")
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadValue(field, f"The {field} holds invalid unicode (a lone surrogate).") from None
    return text


def _list(value: object, field: str) -> list[str]:
    """Names from a list (of strings, or of objects with a name) or from a string split on , ; or |."""
    if _blank(value):
        return []
    if isinstance(value, str):
        items: list[object] = LIST_SEPARATORS.split(value)
    elif isinstance(value, list):
        items = [v.get("name") if isinstance(v, dict) else v for v in value]
    else:
        raise BadValue(field, f"The {field} must be a list or a comma-separated string.")
    names: list[str] = []
    for item in items:
        name = _text(item, field).strip()
        if name and name not in names:
            names.append(name)
    return names


def _hashtags(items: list[str]) -> list[str]:
    """Tags from "#a #b" as well as from a list; without their hash signs."""
    tags: list[str] = []
    for item in items:
        for tag in item.split() if item.startswith("#") else [item]:
            tag = tag.lstrip("#").strip()
            if tag and tag not in tags:
                tags.append(tag)
    return tags


def _count(value: object, field: str) -> int:
    if _blank(value):
        return 0
    number: float
    if isinstance(value, bool):
        raise BadValue(field, f"The {field} must be a whole number, not {str(value).lower()}.")
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip().replace(",", "").replace("_", ""))
        except ValueError:
            raise BadValue(field, f"The {field} must be a whole number, not {_show(value)}.") from None
    else:
        raise BadValue(field, f"The {field} must be a whole number, not {type(value).__name__}.")
    if not math.isfinite(number) or number != int(number) or number < 0 or number >= 2**63:
        raise BadValue(field, f"The {field} must be a whole number from 0 up, not {_show(value)}.")
    return int(number)


def _bool(value: object, field: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise BadValue(field, f"The {field} must be yes or no (true/false, 1/0), not {_show(value)}.")


def _choice(value: object, field: str, choices: dict[str, str], *, default: str) -> str:
    if _blank(value):
        return default
    key = _text(value, field).strip().lower()
    if key not in choices:
        raise BadValue(field, f"Unknown {field} {_show(value)}; one of {', '.join(sorted(set(choices.values())))}.")
    return choices[key]


def parse_date(value: object, field: str) -> datetime | None:
    """An aware datetime from ISO 8601, RFC 2822 or a Unix timestamp (seconds or milliseconds); naive is UTC."""
    if _blank(value):
        return None
    moment: datetime | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = _from_timestamp(float(value))
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{9,13}(\.\d+)?", text):
            moment = _from_timestamp(float(text))
        else:
            try:
                moment = datetime.fromisoformat(text.replace(" UTC", "+00:00"))
            except ValueError:
                try:
                    moment = parsedate_to_datetime(text)
                except (TypeError, ValueError, IndexError):
                    moment = None
    if moment is None:
        raise BadValue(field, f"Not a date: {_show(value)} (use ISO 8601, e.g. 2024-05-01T09:30:00Z).")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _from_timestamp(seconds: float) -> datetime | None:
    if seconds > 1e11:  # milliseconds
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
