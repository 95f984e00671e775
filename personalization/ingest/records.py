"""What every source reader yields and every writer takes: plain dataclasses, no Django."""

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class SocialFields:
    platform: str
    handle: str
    likes: int = 0
    shares: int = 0
    comments: int = 0
    views: int = 0


@dataclass
class ContentRecord:
    """One catalog item as a source gives it; `cleaning` fills the fields below the line."""

    external_id: str
    title: str
    body: str = ""  # HTML or plain text, as found
    summary: str = ""  # HTML or plain text, as found
    url: str = ""
    kind: str = "article"  # a Content.Kind value; "post" for social posts
    published_at: datetime | None = None
    language: str = ""  # as declared by the source; detected when empty
    section: str = ""  # section name or slug at the source
    tags: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # source categories, matched by mapping rules
    status: str = "published"  # a Content.Status value
    duration_seconds: int | None = None
    social: SocialFields | None = None
    # Filled by cleaning.
    canonical_url: str = ""
    content_hash: str = ""


@dataclass
class CustomerRecord:
    """A support ticket, comment or e-mail."""

    channel: str  # a CustomerMessage.Channel value
    source: str
    external_id: str
    text: str
    received_at: datetime
    subject: str = ""
    labels: list[str] = field(default_factory=list)
    training_consent: bool = False
    language: str = ""
    content_hash: str = ""


@dataclass
class RowError:
    line: int
    message: str
    field: str = ""
    external_id: str = ""
    raw: str = ""


@dataclass
class SourceRow:
    """One row read from a source: a record, or the error that kept it from being one."""

    line: int
    record: ContentRecord | CustomerRecord | None = None
    error: RowError | None = None
