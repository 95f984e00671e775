"""RSS and Atom feeds: parsing and mapping, fetching from a real local HTTP server, polls as import jobs,
backoff, and polls run by a real Celery worker."""

import hashlib
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from personalization.ingest.feed_services import (
    MAX_BACKOFF,
    FeedError,
    feed_backoff,
    feed_poll,
    feed_source_create,
    feeds_poll_due,
)
from personalization.ingest.feeds import (
    USER_AGENT,
    FeedFetchError,
    FeedParseError,
    feed_fetch,
    feed_parse,
    feed_rows,
    parse_duration,
)
from personalization.models import Content, ContentRevision, FeedSource, ImportJob, Section
from tests.conftest import wait_until

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
RSS = (FEEDS / "rss.xml").read_bytes()
ATOM = (FEEDS / "atom.xml").read_bytes()
MALFORMED = (FEEDS / "malformed.xml").read_bytes()
LATIN1 = (FEEDS / "latin1.xml").read_bytes()


# --- A real HTTP server on loopback -------------------------------------------------------------------


class FeedServer:
    """Serves feeds under /feeds/<name> with ETag and Last-Modified (honouring both with a 304), plus
    misbehaving paths: /slow, /trickle, /error, /huge, /huge-declared, /redirect/<name>, /loop."""

    def __init__(self) -> None:
        self.feeds: dict[str, dict] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def put(self, name: str, body: bytes, *, content_type: str = "application/rss+xml", validators: bool = True) -> str:
        """Serve `body` at /feeds/<name> (a new ETag and Last-Modified each time it changes); returns its URL."""
        stamp = datetime(2024, 3, 6, 7, 0, tzinfo=UTC) + timedelta(minutes=len(self.feeds.get(name, {}).get("log", [])))
        self.feeds[name] = {
            "body": body,
            "content_type": content_type,
            "etag": f'"{hashlib.sha256(body).hexdigest()[:16]}"' if validators else None,
            "last_modified": format_datetime(stamp, usegmt=True) if validators else None,
            "log": [*self.feeds.get(name, {}).get("log", []), stamp],
        }
        return self.url(f"/feeds/{name}")

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                try:
                    self._route()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first, as it should

            def _route(self) -> None:
                path = self.path
                if path.startswith("/feeds/"):
                    return self._feed(server.feeds[path.removeprefix("/feeds/")])
                if path == "/slow":
                    time.sleep(2)
                    return self._send(200, RSS)
                if path == "/trickle":
                    self._head(200, "application/rss+xml")
                    for _ in range(40):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.05)
                    return None
                if path == "/error":
                    return self._send(500, b"<h1>Internal Server Error</h1>", "text/html")
                if path == "/huge":
                    self._head(200, "application/rss+xml")  # no Content-Length: read until it stops
                    chunk = b"<!-- " + b"x" * 65_000 + b" -->\n"
                    for _ in range(64):
                        self.wfile.write(chunk)
                    return None
                if path == "/huge-declared":
                    self._head(200, "application/rss+xml", length=50 * 1024 * 1024)
                    self.wfile.write(RSS)
                    return None
                if path.startswith("/redirect/"):
                    return self._redirect(f"/feeds/{path.removeprefix('/redirect/')}")
                if path == "/loop":
                    return self._redirect("/loop")
                return self._send(404, b"not found", "text/plain")

            def _feed(self, feed: dict) -> None:
                etag, last_modified = feed["etag"], feed["last_modified"]
                if etag is not None:
                    if_none_match = self.headers.get("If-None-Match")
                    if_modified_since = self.headers.get("If-Modified-Since")
                    if (if_none_match is not None and if_none_match == etag) or (
                        if_none_match is None and if_modified_since == last_modified
                    ):
                        self.send_response(304)
                        self.send_header("ETag", etag)
                        self.end_headers()
                        return
                self.send_response(200)
                self.send_header("Content-Type", feed["content_type"])
                self.send_header("Content-Length", str(len(feed["body"])))
                if etag is not None:
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", last_modified)
                self.end_headers()
                self.wfile.write(feed["body"])

            def _head(self, status: int, content_type: str, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()

            def _send(self, status: int, body: bytes, content_type: str = "application/rss+xml") -> None:
                self._head(status, content_type, len(body))
                self.wfile.write(body)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def short_timeouts(settings):
    settings.MEDIACHAT = {**settings.MEDIACHAT, "FEED_TIMEOUT_S": 0.3, "FEED_MAX_BYTES": 256 * 1024}
    return settings


# --- Parsing and mapping ------------------------------------------------------------------------------


def records_of(body: bytes, **kwargs):
    rows = list(feed_rows(feed_parse(body, content_type="application/rss+xml"), **kwargs))
    assert all(row.error is None for row in rows), [row.error for row in rows]
    return {row.record.external_id: row.record for row in rows}


def test_rss_entries_map_to_content_records():
    records = records_of(RSS, section="Harbour", publish=True)

    assert list(records) == ["gazette-1001", "https://gazette.example/podcast/12", "gazette-video-77"]
    article = records["gazette-1001"]
    assert article.title == "Council approves the new ferry terminal"
    assert article.kind == "article" and article.duration_seconds is None
    # content:encoded is the body (HTML, sanitised by feedparser); the description stays the summary.
    assert "<strong>approved</strong>" in article.body and "Construction starts" in article.body
    assert "trackReader" not in article.body
    assert article.summary == "<p>The council voted 9 to 2 for the terminal.</p>"
    assert article.url == "https://gazette.example/2024/03/ferry-terminal?utm_source=rss"
    assert article.published_at == datetime(2024, 3, 5, 8, 30, tzinfo=UTC)  # 09:30 +0100
    assert article.authors == ["Maria Lindqvist"]
    assert article.tags == article.categories == ["Local politics", "Transport"]
    assert article.section == "Harbour" and article.status == "published" and article.language == "en"

    podcast = records["https://gazette.example/podcast/12"]
    assert podcast.kind == "podcast" and podcast.duration_seconds == 42 * 60 + 15
    assert podcast.body == podcast.summary and podcast.body.startswith("Three families")
    assert podcast.authors == ["Jonas Berg"] and podcast.tags == ["Podcast", "Fishing"]
    assert records["gazette-video-77"].kind == "video"

    drafts = records_of(RSS, publish=False)
    assert {r.status for r in drafts.values()} == {"draft"} and {r.section for r in drafts.values()} == {""}


def test_atom_entries_map_to_content_records():
    records = records_of(ATOM)

    cable_car = records["tag:alpenblick.example,2024:seilbahn"]
    assert cable_car.title == "Neue Seilbahn auf den Hausberg eröffnet"
    assert cable_car.url == "https://alpenblick.example/2024/04/seilbahn"
    assert cable_car.authors == ["Anna Huber", "Peter Moser"]
    assert cable_car.tags == ["Tourismus", "Verkehr"]  # a category's label when it has one
    assert "<em>Seilbahn</em>" in cable_car.body and cable_car.summary.startswith("Die neue Seilbahn")
    assert cable_car.published_at == datetime(2024, 4, 1, 6, 15, tzinfo=UTC)
    assert cable_car.language == "de"
    parking = records["tag:alpenblick.example,2024:parken"]
    assert parking.published_at == datetime(2024, 4, 2, 7, 30, tzinfo=UTC)  # no published: updated
    assert parking.body == "<p>Die Gebühren im Zentrum sollen im Sommer steigen.</p>"


@pytest.mark.parametrize("content_type", ["", "application/xml", "text/xml", "application/rss+xml; charset=ISO-8859-1"])
def test_a_feed_declared_iso_8859_1_decodes(content_type):
    parsed = feed_parse(LATIN1, content_type=content_type)

    (row,) = feed_rows(parsed)
    assert parsed.warning == ""
    assert row.record.title == "Le café de la place rouvre à Noël"
    assert "crème brûlée" in row.record.body and row.record.tags == ["Vie locale"] and row.record.language == "fr"


def test_malformed_xml_keeps_the_entries_it_could_read_and_says_why():
    parsed = feed_parse(MALFORMED)

    assert "Malformed feed" in parsed.warning and "not well-formed" in parsed.warning
    assert [row.record.external_id for row in feed_rows(parsed)] == ["broken-1", "broken-2"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html><body><p>Our new website!</p></body></html>", "Not an RSS or Atom feed"),
        (b"", "Not an RSS or Atom feed"),
        (b"\x00\x01\x02 binary junk", "Not a readable feed"),
        (b'{"items": []}', "Not a readable feed"),
    ],
)
def test_a_body_without_any_entry_is_refused(body, reason):
    with pytest.raises(FeedParseError, match=reason):
        feed_parse(body)


def test_an_empty_but_valid_feed_is_no_error():
    parsed = feed_parse(b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>')

    assert parsed.entries == [] and parsed.warning == "" and parsed.title == "Quiet"


def test_entries_without_id_or_title_become_row_errors():
    body = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
      <item><title>No id, no link</title><description>text</description></item>
      <item><guid>only-a-guid</guid><description>no title</description></item>
      <item><title>Fine</title><link>/news/fine</link></item>
    </channel></rss>"""

    rows = list(feed_rows(feed_parse(body, url="https://x.example/feeds/all.xml")))

    assert [row.line for row in rows] == [1, 2, 3]
    assert rows[0].error.field == "external_id" and "neither a guid" in rows[0].error.message
    assert rows[1].error.field == "title" and rows[1].error.external_id == "only-a-guid"
    assert "no title" in rows[1].error.raw
    # No guid: the link, made absolute against the feed's address, identifies it.
    assert rows[2].record.external_id == rows[2].record.url == "https://x.example/news/fine"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:42:15", 2535), ("42:15", 2535), ("2535", 2535), ("1:02:03.6", 3724), ("", None), ("soon", None)],
)
def test_itunes_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_backoff_doubles_with_jitter_up_to_a_day():
    delays = [feed_backoff(interval_minutes=30, failures=n) for n in range(1, 8)]

    for n, delay in enumerate(delays, start=1):
        full = min(timedelta(minutes=30) * 2**n, MAX_BACKOFF)
        assert full * 0.85 <= delay <= full
    assert all(
        later > earlier for earlier, later in itertools.pairwise(delays[:6])
    )  # the seventh is capped, as the sixth
    assert feed_backoff(interval_minutes=30, failures=500) <= MAX_BACKOFF
    assert len({feed_backoff(interval_minutes=30, failures=3) for _ in range(20)}) > 1  # jittered


# --- Fetching over HTTP ---------------------------------------------------------------------------------


def test_fetch_sends_validators_and_a_304_is_not_modified(feed_server):
    url = feed_server.put("rss", RSS)

    first = feed_fetch(url=url)
    again = feed_fetch(url=url, etag=first.etag, last_modified=first.last_modified)
    by_date = feed_fetch(url=url, last_modified=first.last_modified)

    assert not first.not_modified and first.content == RSS and first.etag.startswith('"')
    assert first.last_modified == "Wed, 06 Mar 2024 07:00:00 GMT"
    assert again.not_modified and again.content == b"" and by_date.not_modified
    plain, conditional, dated = feed_server.hits("/feeds/rss")
    assert plain["user-agent"] == USER_AGENT and "mediachat" in USER_AGENT
    assert "if-none-match" not in plain and "if-modified-since" not in plain
    assert conditional["if-none-match"] == first.etag
    assert conditional["if-modified-since"] == first.last_modified
    assert dated["if-modified-since"] == first.last_modified


def test_fetch_follows_a_few_redirects_but_not_a_loop(feed_server):
    feed_server.put("atom", ATOM, content_type="application/atom+xml")

    response = feed_fetch(url=feed_server.url("/redirect/atom"))

    assert response.content == ATOM and response.url == feed_server.url("/feeds/atom")
    with pytest.raises(FeedFetchError, match="More than 5 redirects"):
        feed_fetch(url=feed_server.url("/loop"))


@pytest.mark.parametrize(
    ("path", "kwargs", "reason"),
    [
        ("/slow", {"timeout_s": 0.3}, "Timed out after 0.3 s"),
        ("/trickle", {"timeout_s": 0.2}, "sent the feed too slowly"),
        ("/error", {}, "HTTP 500 Internal Server Error"),
        ("/missing", {}, "HTTP 404"),
        ("/huge", {"max_bytes": 256 * 1024}, "larger than the 0.25 MiB limit"),
        ("/huge-declared", {"max_bytes": 1024 * 1024}, "declares 52,428,800 bytes"),
    ],
)
def test_fetch_failures_say_why(feed_server, path, kwargs, reason):
    started = time.monotonic()

    with pytest.raises(FeedFetchError, match=reason):
        feed_fetch(url=feed_server.url(path), **kwargs)
    assert time.monotonic() - started < 1.5


def test_fetch_of_a_closed_port_says_why():
    with pytest.raises(FeedFetchError, match=r"Could not fetch http://127\.0\.0\.1:9/feed: ConnectError"):
        feed_fetch(url="http://127.0.0.1:9/feed", timeout_s=1)


# --- Registering feeds ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_feed_source_create_validates_and_is_due_at_once():
    section = Section.objects.create(name="Harbour", slug="harbour")

    feed = feed_source_create(url=" https://gazette.example/feed.xml ", section_id=section.pk, publish=False)

    assert feed.url == "https://gazette.example/feed.xml" and feed.name == "gazette.example"
    assert feed.section == section and not feed.publish and feed.is_active
    assert feed.next_poll_at is not None and feed.next_poll_at <= timezone.now()
    for bad in ["ftp://gazette.example/feed.xml", "javascript:alert(1)", "gazette.example/feed", "", "http://"]:
        with pytest.raises(FeedError, match="Not a feed address"):
            feed_source_create(url=bad)
    with pytest.raises(FeedError, match="already exists"):
        feed_source_create(url="https://gazette.example/feed.xml", name="Again")
    with pytest.raises(FeedError, match="poll interval"):
        feed_source_create(url="https://other.example/feed", poll_interval_minutes=0)
    with pytest.raises(FeedError, match="No section 999999"):
        feed_source_create(url="https://other.example/feed", section_id=999_999)
    assert FeedSource.objects.count() == 1


# --- Polls ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_first_poll_creates_items_and_a_repoll_gets_304_and_writes_nothing(feed_server):
    harbour = Section.objects.create(name="Harbour", slug="harbour")
    feed = feed_source_create(url=feed_server.put("rss", RSS), section_id=harbour.pk)

    job = feed_poll(feed_id=feed.pk)

    assert job.status == ImportJob.Status.SUCCEEDED, job.error
    assert job.format == ImportJob.Format.FEED and job.feed_id == feed.pk and job.error == ""
    assert (job.created_count, job.updated_count, job.skipped_count, job.failed_count) == (3, 0, 0, 0)
    items = {c.external_id: c for c in Content.objects.prefetch_related("tags", "authors")}
    assert set(items) == {"gazette-1001", "https://gazette.example/podcast/12", "gazette-video-77"}
    article = items["gazette-1001"]
    assert article.title == "Council approves the new ferry terminal" and article.section == harbour
    assert article.status == Content.Status.PUBLISHED
    assert article.published_at == datetime(2024, 3, 5, 8, 30, tzinfo=UTC)
    assert "approved the new ferry terminal" in article.body and "<" not in article.body  # cleaned to text
    assert "trackReader" not in article.body
    assert {t.name for t in article.tags.all()} >= {"Local politics", "Transport"}
    assert [a.name for a in article.authors.all()] == ["Maria Lindqvist"]
    assert items["https://gazette.example/podcast/12"].kind == Content.Kind.PODCAST
    assert items["https://gazette.example/podcast/12"].duration_seconds == 2535
    assert items["gazette-video-77"].kind == Content.Kind.VIDEO
    feed.refresh_from_db()
    assert feed.etag and feed.last_modified == "Wed, 06 Mar 2024 07:00:00 GMT"
    assert (feed.items_created, feed.items_updated, feed.items_skipped) == (3, 0, 0)
    assert feed.last_success_at == feed.last_polled_at and feed.last_error == ""
    assert feed.next_poll_at - feed.last_polled_at == timedelta(minutes=30)
    stamps = dict(Content.objects.values_list("external_id", "updated_at"))
    first_success = feed.last_success_at

    again = feed_poll(feed_id=feed.pk)

    assert feed_server.hits("/feeds/rss")[-1]["if-none-match"] == feed.etag
    assert again.pk != job.pk and again.status == ImportJob.Status.SUCCEEDED
    assert (again.created_count, again.updated_count, again.skipped_count, again.rows_seen) == (0, 0, 0, 0)
    assert not again.row_errors.exists()
    assert dict(Content.objects.values_list("external_id", "updated_at")) == stamps
    feed.refresh_from_db()
    assert feed.last_success_at > first_success and feed.last_polled_at == feed.last_success_at
    assert (feed.items_created, feed.items_updated, feed.items_skipped) == (3, 0, 0)


@pytest.mark.django_db
def test_a_corrected_entry_updates_its_item_and_keeps_a_revision(feed_server):
    url = feed_server.put("rss", RSS)
    feed = feed_source_create(url=url)
    feed_poll(feed_id=feed.pk)
    article = Content.objects.get(external_id="gazette-1001")
    old_body = article.body

    feed_server.put("rss", RSS.replace(b"voted 9 to 2", b"voted 8 to 3").replace(b"three-hour", b"four-hour"))
    job = feed_poll(feed_id=feed.pk)

    assert job.status == ImportJob.Status.SUCCEEDED, job.error
    assert (job.created_count, job.updated_count, job.skipped_count) == (0, 1, 2)
    article.refresh_from_db()
    assert "four-hour debate" in article.body
    revision = ContentRevision.objects.get(content=article)
    assert revision.body == old_body and "three-hour debate" in revision.body and revision.job_id == job.pk
    feed.refresh_from_db()
    assert (feed.items_created, feed.items_updated, feed.items_skipped) == (3, 1, 2)
    assert Content.objects.count() == 3


@pytest.mark.django_db
def test_repolling_a_feed_without_validators_skips_everything(feed_server):
    feed = feed_source_create(url=feed_server.put("atom", ATOM, content_type="application/atom+xml", validators=False))
    feed_poll(feed_id=feed.pk)

    job = feed_poll(feed_id=feed.pk)

    assert "if-none-match" not in feed_server.hits("/feeds/atom")[-1]
    assert (job.created_count, job.updated_count, job.skipped_count) == (0, 0, 2)
    assert job.status == ImportJob.Status.SUCCEEDED and Content.objects.count() == 2
    assert Content.objects.get(external_id="tag:alpenblick.example,2024:seilbahn").language == "de"
    feed.refresh_from_db()
    assert feed.etag == "" and (feed.items_created, feed.items_skipped) == (2, 2)


@pytest.mark.django_db
def test_drafts_and_latin1_text_arrive_intact(feed_server):
    feed = feed_source_create(url=feed_server.put("echo", LATIN1, content_type="text/xml"), publish=False)

    job = feed_poll(feed_id=feed.pk)

    assert job.status == ImportJob.Status.SUCCEEDED and job.error == ""
    item = Content.objects.get()
    assert item.title == "Le café de la place rouvre à Noël" and item.status == Content.Status.DRAFT
    assert "crème brûlée" in item.body


@pytest.mark.django_db
def test_a_malformed_feed_imports_what_it_could_read_and_the_job_says_so(feed_server):
    feed = feed_source_create(url=feed_server.put("broken", MALFORMED))

    job = feed_poll(feed_id=feed.pk)

    assert job.status == ImportJob.Status.SUCCEEDED and job.created_count == 2
    assert "Malformed feed" in job.error and "not well-formed" in job.error
    assert set(Content.objects.values_list("external_id", flat=True)) == {"broken-1", "broken-2"}


@pytest.mark.django_db
def test_failures_keep_the_error_and_back_off_until_a_success(feed_server, short_timeouts):
    feed = feed_source_create(url=feed_server.url("/slow"), poll_interval_minutes=10)

    job = feed_poll(feed_id=feed.pk)

    assert job.status == ImportJob.Status.FAILED and "Timed out after 0.3 s" in job.error
    assert job.finished_at is not None and Content.objects.count() == 0
    feed.refresh_from_db()
    assert feed.consecutive_failures == 1 and feed.last_error == job.error and feed.last_success_at is None
    first_wait = feed.next_poll_at - feed.last_error_at
    assert timedelta(minutes=17) <= first_wait <= timedelta(minutes=20)  # 10 min, doubled, jittered

    waits = []
    for path, reason in [("/error", "HTTP 500"), ("/huge", "larger than the 0.25 MiB limit")]:
        FeedSource.objects.filter(pk=feed.pk).update(url=feed_server.url(path))
        job = feed_poll(feed_id=feed.pk)
        assert job.status == ImportJob.Status.FAILED and reason in job.error
        feed.refresh_from_db()
        assert feed.last_error == job.error
        waits.append(feed.next_poll_at - feed.last_error_at)
    assert first_wait < waits[0] < waits[1] and feed.consecutive_failures == 3
    assert Content.objects.count() == 0 and not ImportJob.objects.filter(created_count__gt=0).exists()

    FeedSource.objects.filter(pk=feed.pk).update(url=feed_server.put("rss", RSS))
    job = feed_poll(feed_id=feed.pk)

    assert job.status == ImportJob.Status.SUCCEEDED
    feed.refresh_from_db()
    assert feed.consecutive_failures == 0 and "larger than" in feed.last_error  # the last error stays on record
    assert feed.last_success_at > feed.last_error_at
    assert feed.next_poll_at - feed.last_success_at == timedelta(minutes=10)


@pytest.mark.django_db
def test_a_page_that_is_not_a_feed_fails_the_poll(feed_server):
    feed = feed_source_create(
        url=feed_server.put("page", b"<html><body>Welcome</body></html>", content_type="text/html")
    )

    job = feed_poll(feed_id=feed.pk)

    assert job.status == ImportJob.Status.FAILED and "Not an RSS or Atom feed" in job.error
    feed.refresh_from_db()
    assert feed.consecutive_failures == 1 and feed.etag == "" and Content.objects.count() == 0


@pytest.mark.django_db
def test_a_poll_of_a_feed_already_being_polled_returns_that_poll(feed_server):
    feed = feed_source_create(url=feed_server.put("rss", RSS))
    running = ImportJob.objects.create(
        format=ImportJob.Format.FEED, feed=feed, status=ImportJob.Status.RUNNING, started_at=timezone.now()
    )

    assert feed_poll(feed_id=feed.pk).pk == running.pk
    assert feed_server.hits("/feeds/rss") == []

    ImportJob.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(hours=1))
    job = feed_poll(feed_id=feed.pk)

    assert job.pk != running.pk and job.status == ImportJob.Status.SUCCEEDED
    running.refresh_from_db()
    assert running.status == ImportJob.Status.FAILED and "Abandoned" in running.error
    with pytest.raises(FeedError, match="No feed 999999"):
        feed_poll(feed_id=999_999)


# --- Celery: a real worker, and the beat schedule ----------------------------------------------------------


def test_the_beat_schedule_polls_due_feeds_every_minute():
    from mediachat.celery import app

    entry = django_settings.CELERY_BEAT_SCHEDULE["feeds-poll-due"]
    assert entry == {"task": "personalization.ingest.feed_tasks.feeds_poll_due", "schedule": 60.0}
    app.loader.import_default_modules()
    assert {"personalization.ingest.feed_tasks.feeds_poll_due", "personalization.ingest.feed_tasks.feed_poll"} <= set(
        app.tasks
    )


def finished_jobs(feed: FeedSource) -> list[ImportJob]:
    return list(ImportJob.objects.filter(feed=feed, finished_at__isnull=False))


@pytest.mark.django_db(transaction=True)
def test_a_worker_polls_a_feed_end_to_end(celery_worker, feed_server):
    from personalization.ingest.feed_tasks import feed_poll as feed_poll_task

    feed = feed_source_create(url=feed_server.put("atom", ATOM, content_type="application/atom+xml"))

    feed_poll_task.delay(feed.pk)

    (job,) = wait_until(lambda: finished_jobs(feed), timeout=60, what="the worker's poll")
    assert job.status == ImportJob.Status.SUCCEEDED, job.error
    assert job.created_count == 2 and Content.objects.filter(source=f"feed:{feed.pk}").count() == 2
    assert feed_server.hits("/feeds/atom")[0]["user-agent"] == USER_AGENT
    feed.refresh_from_db()
    assert feed.items_created == 2 and feed.last_success_at is not None and feed.etag


@pytest.mark.django_db(transaction=True)
def test_feeds_poll_due_enqueues_only_due_active_feeds(celery_worker, feed_server):
    due = feed_source_create(url=feed_server.put("due", RSS))
    never_polled = feed_source_create(url=feed_server.put("never", LATIN1))
    FeedSource.objects.filter(pk=never_polled.pk).update(next_poll_at=None)
    now = timezone.now()
    later = feed_source_create(url=feed_server.put("later", ATOM))
    FeedSource.objects.filter(pk=later.pk).update(next_poll_at=now + timedelta(minutes=5))
    paused = feed_source_create(url=feed_server.put("paused", MALFORMED))
    FeedSource.objects.filter(pk=paused.pk).update(is_active=False, next_poll_at=now - timedelta(hours=1))

    assert feeds_poll_due(now=now) == 2
    assert feeds_poll_due(now=now) == 0  # claimed: a second beat in the same minute enqueues nothing

    (job,) = wait_until(lambda: finished_jobs(due), timeout=60, what="the due feed's poll")
    assert job.status == ImportJob.Status.SUCCEEDED and job.created_count == 3
    (job,) = wait_until(lambda: finished_jobs(never_polled), timeout=60, what="the never-polled feed's poll")
    assert job.status == ImportJob.Status.SUCCEEDED and job.created_count == 1
    assert not ImportJob.objects.filter(feed__in=[later, paused]).exists()
    assert feed_server.hits("/feeds/later") == [] and feed_server.hits("/feeds/paused") == []
    due.refresh_from_db()
    assert due.next_poll_at > now + timedelta(minutes=29)
