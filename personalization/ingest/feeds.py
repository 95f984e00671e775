"""RSS 2.0 and Atom: fetch a feed over HTTP (httpx), parse it (feedparser), map its entries to `ContentRecord`s.

No Django here: `feed_services.py` keeps the `FeedSource` and `ImportJob` rows and hands the rows this
module yields to the shared import writer.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urljoin

import feedparser
import httpx

from .records import ContentRecord, RowError, SourceRow

try:
    USER_AGENT = f"mediachat/{version('mediachat')} (feed poller; +httpx)"
except PackageNotFoundError:  # running from a checkout that was never installed
    USER_AGENT = "mediachat/dev (feed poller; +httpx)"

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 5
# httpx's read timeout bounds each wait for a chunk; a server trickling bytes would never trip it.
TOTAL_TIME_FACTOR = 3
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
MAX_ETAG_CHARS = 500  # FeedSource.etag
MAX_LAST_MODIFIED_CHARS = 100  # FeedSource.last_modified
RAW_CHARS = 2000  # ImportRowError.raw


class FeedFetchError(Exception):
    """The feed could not be fetched: timeout, connection refused, an HTTP error status, a body too large."""


class FeedParseError(Exception):
    """The body is not an RSS or Atom feed that any entry could be read from."""


@dataclass(frozen=True)
class FeedResponse:
    """What one conditional GET returned. `not_modified` means a 304: `content` is empty."""

    not_modified: bool
    content: bytes
    url: str  # after redirects
    content_type: str
    etag: str
    last_modified: str


@dataclass(frozen=True)
class ParsedFeed:
    url: str  # where it was fetched from: relative links resolve against it
    title: str
    language: str
    entries: list[Any]  # feedparser entries (FeedParserDict)
    warning: str  # why the XML was malformed, when feedparser still read entries from it


def feed_fetch(
    *,
    url: str,
    etag: str = "",
    last_modified: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedResponse:
    """GET `url` with the validators of the last poll; raises FeedFetchError with a reason editors can read.

    Redirects are followed (at most MAX_REDIRECTS); the body is streamed and refused past `max_bytes`
    (decoded size, so a compressed bomb stops too); the whole transfer may take TOTAL_TIME_FACTOR times `timeout_s`.
    """
    headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + TOTAL_TIME_FACTOR * timeout_s
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(timeout_s),
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                headers=headers,
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code == 304:
                return _response(response, b"", not_modified=True)
            if response.status_code >= 400:
                reason = f" {response.reason_phrase}" if response.reason_phrase else ""
                raise FeedFetchError(f"The server answered HTTP {response.status_code}{reason} for {response.url}.")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FeedFetchError(_too_large(max_bytes, f"it declares {int(declared):,} bytes"))
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FeedFetchError(_too_large(max_bytes, "the body kept coming"))
                if time.monotonic() > deadline:
                    raise FeedFetchError(
                        f"Gave up after {TOTAL_TIME_FACTOR * timeout_s:g} s: the server sent the feed too slowly."
                    )
            return _response(response, bytes(body), not_modified=False)
    except httpx.TimeoutException as exc:
        raise FeedFetchError(f"Timed out after {timeout_s:g} s ({type(exc).__name__}) fetching {url}.") from None
    except httpx.TooManyRedirects:
        raise FeedFetchError(f"More than {MAX_REDIRECTS} redirects fetching {url}.") from None
    except httpx.HTTPError as exc:
        raise FeedFetchError(f"Could not fetch {url}: {type(exc).__name__}: {exc}") from None


def _response(response: httpx.Response, content: bytes, *, not_modified: bool) -> FeedResponse:
    etag = response.headers.get("ETag", "")
    last_modified = response.headers.get("Last-Modified", "")
    return FeedResponse(
        not_modified=not_modified,
        content=content,
        url=str(response.url),
        content_type=response.headers.get("Content-Type", ""),
        # Too long for the column: better to refetch in full than to send back a cut validator.
        etag=etag if len(etag) <= MAX_ETAG_CHARS else "",
        last_modified=last_modified if len(last_modified) <= MAX_LAST_MODIFIED_CHARS else "",
    )


def _too_large(max_bytes: int, why: str) -> str:
    return f"The feed is larger than the {max_bytes / 1024 / 1024:g} MiB limit ({why}); nothing was imported."


def feed_parse(content: bytes, *, url: str = "", content_type: str = "") -> ParsedFeed:
    """Parse an RSS or Atom body; raises FeedParseError when no entry can be read from it.

    A body that is malformed but still yields entries comes back with `warning` saying what was wrong.
    """
    # Only a declared charset overrides the XML declaration: RFC 7303 dropped RFC 3023's rule that a bare
    # text/xml means us-ascii, which makes feedparser flag every such feed as mis-encoded. No
    # content-location either: feedparser would resolve guids such as "item-7" against it, and an item's
    # id would change with the feed's address; `entry_to_record` resolves links itself.
    headers = {"content-type": content_type} if "charset=" in content_type.lower() else None
    parsed = feedparser.parse(content, response_headers=headers)
    problem = parsed.get("bozo_exception") if parsed.bozo else None
    if isinstance(problem, feedparser.CharacterEncodingOverride | feedparser.NonXMLContentType):
        problem = None  # a wrong or missing Content-Type that feedparser saw past: the text is right
    entries = list(parsed.entries)
    if not entries:
        if problem is not None:
            raise FeedParseError(f"Not a readable feed: {_describe(problem)}.")
        if not parsed.get("version"):
            raise FeedParseError("Not an RSS or Atom feed: no channel or feed element was found.")
    return ParsedFeed(
        url=url,
        title=parsed.feed.get("title", ""),
        language=parsed.feed.get("language", ""),
        entries=entries,
        warning=f"Malformed feed, read as far as possible: {_describe(problem)}." if problem is not None else "",
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    line = getattr(exc, "getLineNumber", None)
    if callable(line) and f"line {line()}" not in text:
        text = f"{text} at line {line()}"
    return f"{type(exc).__name__}: {text}"


def feed_rows(parsed: ParsedFeed, *, section: str = "", publish: bool = True) -> Iterator[SourceRow]:
    """One `SourceRow` per entry, numbered from 1 in feed order; an entry that cannot be a record is an error row."""
    for number, entry in enumerate(parsed.entries, start=1):
        try:
            record = entry_to_record(
                entry, section=section, publish=publish, feed_language=parsed.language, base_url=parsed.url
            )
        except ValueError as exc:
            field = exc.args[1] if len(exc.args) > 1 else ""
            error = RowError(
                line=number,
                message=str(exc.args[0]),
                field=field,
                external_id=_external_id(entry, parsed.url),
                raw=repr(dict(entry))[:RAW_CHARS],
            )
            yield SourceRow(line=number, error=error)
        else:
            yield SourceRow(line=number, record=record)


def entry_to_record(
    entry: Any, *, section: str = "", publish: bool = True, feed_language: str = "", base_url: str = ""
) -> ContentRecord:
    """Map one feedparser entry; raises ValueError(message, field) when it has no id or no title."""
    external_id = _external_id(entry, base_url)
    if not external_id:
        raise ValueError("The entry has neither a guid/id nor a link to identify it.", "external_id")
    title = (entry.get("title") or "").strip()
    if not title:
        raise ValueError("The entry has no title.", "title")
    contents = entry.get("content") or []
    html = [c for c in contents if c.get("type") in ("text/html", "application/xhtml+xml")]
    chosen = (html or contents or [None])[0]
    summary = entry.get("summary") or ""
    body = chosen.get("value", "") if chosen is not None else summary
    kind, duration = _kind_and_duration(entry)
    terms = _terms(entry)
    return ContentRecord(
        external_id=external_id,
        title=title,
        body=body,
        summary=summary,
        url=_absolute(entry.get("link") or "", base_url),
        kind=kind,
        published_at=_when(entry.get("published_parsed") or entry.get("updated_parsed")),
        language=_primary_language(
            (chosen.get("language") if chosen is not None else None)
            or (entry.get("summary_detail") or {}).get("language")
            or feed_language
        ),
        section=section,
        tags=list(terms),
        authors=_authors(entry),
        categories=list(terms),
        status="published" if publish else "draft",
        duration_seconds=duration,
    )


def _external_id(entry: Any, base_url: str = "") -> str:
    return (entry.get("id") or "").strip() or _absolute(entry.get("link") or "", base_url)


def _absolute(link: str, base_url: str) -> str:
    link = link.strip()
    return urljoin(base_url, link) if link and base_url else link


def _when(parsed: time.struct_time | None) -> datetime | None:
    # feedparser normalises every date it understands to a UTC struct_time.
    if parsed is None:
        return None
    try:
        return datetime(*parsed[:6], tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _primary_language(tag: str | None) -> str:
    return (tag or "").strip().replace("_", "-").split("-")[0].lower()[:16]


def _authors(entry: Any) -> list[str]:
    names = [(a.get("name") or "").strip() for a in entry.get("authors") or []]
    if not any(names) and entry.get("author"):
        names = [entry.get("author").strip()]
    return list(dict.fromkeys(n for n in names if n))


def _terms(entry: Any) -> list[str]:
    terms = [(t.get("label") or t.get("term") or "").strip() for t in entry.get("tags") or []]
    return list(dict.fromkeys(t for t in terms if t))


def _kind_and_duration(entry: Any) -> tuple[str, int | None]:
    media = [*(entry.get("enclosures") or []), *(entry.get("media_content") or [])]
    types = [(m.get("type") or "").lower() for m in media] + [(m.get("medium") or "").lower() for m in media]
    if any(t.startswith("video") for t in types):
        kind = "video"
    elif any(t.startswith("audio") for t in types):
        kind = "podcast"
    else:
        return "article", None
    return kind, parse_duration(entry.get("itunes_duration") or "")


def parse_duration(text: str) -> int | None:
    """Seconds from an itunes:duration: "2535", "42:15" or "00:42:15"; None when it is none of those."""
    parts = text.strip().split(":")
    if not text.strip() or len(parts) > 3:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if any(v < 0 for v in values):
        return None
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return round(seconds)
