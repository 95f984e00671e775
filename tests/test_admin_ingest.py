"""The data-collection admin: every page for each role, the Import page end to end with a real Celery worker
(files and a feed served over loopback), live progress, row errors as CSV, Poll now, Run again, and roles."""

import csv
import functools
import html.parser
import http.server
import io
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect, sync_playwright

from personalization.admin_import import counts_chart, guess_format, parse_column_mapping
from personalization.models import (
    Content,
    ContentEmbedding,
    ContentRevision,
    CustomerMessage,
    FeedSource,
    ImportJob,
    ImportRowError,
    MappingRule,
    Section,
    SocialPost,
    Tag,
)
from personalization.roles import EDITORS, STAFF, roles_sync

from .conftest import wait_until

MODELS = [
    "feedsource",
    "importjob",
    "importrowerror",
    "mappingrule",
    "contentrevision",
    "socialpost",
    "customermessage",
    "contentembedding",
]
# Add pages that exist (the import job's redirects to the Import page); the others are the pipeline's record.
ADDABLE = ["feedsource", "importjob", "mappingrule", "socialpost"]
ROLES = ["superuser", "staff", "editor"]
# Debian's chromium under Playwright, as in test_browser_chat.py.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
CHROMIUM_ARGS += ["--disable-sync", "--no-first-run"]
JOB_DONE = (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED)

ROWS = [
    {"external_id": "a-1", "title": "Comets return", "body": "<p>A comet comes back every 76 years.</p>"},
    {"external_id": "a-2", "title": "Rivers in spring", "body": "<p>Snow melts and the rivers rise.</p>"},
    None,  # line 3: not JSON
    {"external_id": "a-3", "title": "Bread at home", "body": "<p>Flour, water, salt and time.</p>"},
]
JSONL = "".join((json.dumps(row) if row else "{this line is not JSON") + "\n" for row in ROWS).encode()

RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Loopback news</title><link>http://127.0.0.1/</link><description>Tests</description>
<item><title>Tides explained</title><link>http://127.0.0.1/tides</link><guid>tides-1</guid>
<description>&lt;p&gt;The moon pulls the sea.&lt;/p&gt;</description>
<pubDate>Mon, 02 Jun 2025 08:00:00 GMT</pubDate></item>
<item><title>Night trains are back</title><link>http://127.0.0.1/trains</link><guid>trains-1</guid>
<description>&lt;p&gt;Sleepers across the continent.&lt;/p&gt;</description>
<pubDate>Tue, 03 Jun 2025 08:00:00 GMT</pubDate></item>
</channel></rss>
"""


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:personalization_{model}_{view}", args=args)


def make_users() -> dict[str, User]:
    roles_sync()  # a flush by a transactional test drops the groups the migration made
    superuser = User.objects.create_superuser("root", "root@example.com", "x")
    staff = User.objects.create_user("stella", is_staff=True)
    staff.groups.add(Group.objects.get(name=STAFF))
    editor = User.objects.create_user("eddie", is_staff=True)
    editor.groups.add(Group.objects.get(name=EDITORS))
    reader = User.objects.create_user("rita")
    return {"superuser": superuser, "staff": staff, "editor": editor, "reader": reader}


@pytest.fixture
def users(db) -> dict[str, User]:
    return make_users()


@pytest.fixture
def objects(users) -> dict[str, object]:
    """One row of every data-collection model, so every change page exists."""
    section = Section.objects.create(name="Science", slug="science")
    tag = Tag.objects.create(name="Space", slug="space")
    post = Content.objects.create(
        title="Launch day thread", slug="launch-day", kind=Content.Kind.POST, source="file", external_id="p-1"
    )
    social = SocialPost.objects.create(content=post, platform="mastodon", handle="spacedesk", likes=12, shares=3)
    revision = ContentRevision.objects.create(content=post, title="Launch day (first version)", body="Old text.")
    vector = np.linspace(-1, 1, 384, dtype="<f4")
    embedding = ContentEmbedding.objects.create(
        content=post,
        model_name="all-MiniLM-L6-v2",
        dimensions=384,
        vector=(vector / np.linalg.norm(vector)).tobytes(),
        text_hash="h",
    )
    feed = FeedSource.objects.create(name="Wire", url="https://example.com/wire.xml", last_error="HTTP 500 " * 30)
    job = ImportJob.objects.create(
        format=ImportJob.Format.JSONL,
        filename="archive.jsonl",
        status=ImportJob.Status.SUCCEEDED,
        progress=1.0,
        rows_seen=5,
        created_count=3,
        updated_count=1,
        failed_count=1,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        created_by=users["editor"],
    )
    row_error = ImportRowError.objects.create(job=job, line=4, field="title", message="Missing title.", raw="{}")
    message = CustomerMessage.objects.create(
        channel=CustomerMessage.Channel.TICKET,
        source="zendesk",
        external_id="t-9",
        subject="Refund",
        text="I was charged twice.",
        received_at=timezone.now(),
        labels=["billing"],
        content_hash="c",
    )
    rule = MappingRule.objects.create(name="Space words", pattern="comet", section=section, tag=tag)
    return {
        "feedsource": feed,
        "importjob": job,
        "importrowerror": row_error,
        "mappingrule": rule,
        "contentrevision": revision,
        "socialpost": social,
        "customermessage": message,
        "contentembedding": embedding,
        "post": post,
        "section": section,
    }


# --- Pages and roles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_page_renders_for_each_role(client, users, objects, role):
    client.force_login(users[role])
    index = client.get(reverse("admin:index")).content.decode()
    assert url("importjob", "import") in index  # the Import page is one click from the index
    for model in MODELS:
        assert client.get(url(model, "changelist")).status_code == 200, (role, model, "changelist")
        assert client.get(url(model, "change", objects[model].pk)).status_code == 200, (role, model, "change")
        add = client.get(url(model, "add"))
        if model == "importjob":
            assert (add.status_code, add["Location"]) == (302, url("importjob", "import")), role
        else:
            assert add.status_code == (200 if model in ADDABLE else 403), (role, model, "add")
    assert client.get(url("importjob", "import")).status_code == 200
    content_page = client.get(reverse("admin:personalization_content_change", args=[objects["post"].pk]))
    page = content_page.content.decode()
    assert "spacedesk" in page and "Launch day (first version)" in page  # both inlines


def test_a_reader_is_sent_to_the_login_page(client, users, objects):
    client.force_login(users["reader"])
    login = reverse("admin:login")
    job, feed = objects["importjob"], objects["feedsource"]
    pages = [url("importjob", "import"), url("importjob", "progress", job.pk), url("importjob", "errors_csv", job.pk)]
    for model in MODELS:
        pages += [url(model, "changelist"), url(model, "change", objects[model].pk)]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith(login), page
    for page in (url("feedsource", "poll", feed.pk), url("importjob", "run_again", job.pk)):
        response = client.post(page)
        assert response.status_code == 302 and response["Location"].startswith(login), page
    assert ImportJob.objects.count() == 1


def test_sync_roles_gives_editors_the_data_collection_permissions(db):
    roles_sync()
    editors = Group.objects.get(name=EDITORS)
    editors.permissions.remove(*Permission.objects.filter(content_type__model__in=MODELS))
    editors.permissions.add(Permission.objects.get(codename="delete_importjob"))  # a grant nobody gave
    out = io.StringIO()
    call_command("sync_roles", stdout=out)
    assert "Editors: " in out.getvalue()
    granted = set(editors.permissions.values_list("codename", flat=True))
    expected = {
        f"{action}_{model}"
        for model in ("feedsource", "mappingrule", "socialpost")
        for action in "add change delete view".split()
    }
    expected |= {"add_importjob", "view_importjob", "view_importrowerror", "view_contentrevision"}
    expected |= {"view_contentembedding", "view_customermessage", "change_customermessage"}
    assert expected <= granted
    refused = {"change_importjob", "delete_importjob", "add_customermessage", "delete_customermessage"}
    refused |= {"change_contentrevision", "change_contentembedding", "change_importrowerror"}
    assert not refused & granted
    staff = set(Group.objects.get(name=STAFF).permissions.values_list("codename", flat=True))
    assert expected <= staff


def test_changelists_do_not_grow_queries_with_rows(client, users, objects):
    client.force_login(users["superuser"])

    def queries(model: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url(model, "changelist")).status_code == 200
        return len(ctx.captured_queries)

    before = {model: queries(model) for model in MODELS}
    feed = objects["feedsource"]
    for i in range(4):
        item = Content.objects.create(title=f"Post {i}", slug=f"post-{i}", kind=Content.Kind.POST)
        SocialPost.objects.create(content=item, platform="x", handle=f"h{i}")
        ContentRevision.objects.create(content=item, title=f"old {i}")
        ContentEmbedding.objects.create(content=item, model_name="m", dimensions=1, vector=b"\0\0\0\0", text_hash="t")
        job = ImportJob.objects.create(format=ImportJob.Format.FEED, feed=feed, created_by=users["staff"])
        ImportRowError.objects.create(job=job, line=i + 1, message="bad")
        FeedSource.objects.create(name=f"Feed {i}", url=f"https://example.com/{i}.xml", section=objects["section"])
        MappingRule.objects.create(name=f"r{i}", pattern=f"p{i}", section=objects["section"])
        CustomerMessage.objects.create(
            channel="email", source="mail", text=f"t{i}", received_at=timezone.now(), content_hash=f"c{i}"
        )
    assert {model: queries(model) for model in MODELS} == before


# --- Import jobs: the change page, progress, row errors --------------------------------------------------


def test_job_page_shows_counts_chart_and_paginated_row_errors(client, users, objects):
    job = objects["importjob"]
    ImportRowError.objects.bulk_create(
        ImportRowError(job=job, line=100 + i, message=f"Bad date on row {i}.", raw=f"row {i}") for i in range(60)
    )
    client.force_login(users["editor"])
    page = client.get(url("importjob", "change", job.pk)).content.decode()
    assert 'id="job-created">3<' in page and 'id="job-updated">1<' in page and 'id="job-failed">1<' in page
    assert "<svg" in page and "Rows by outcome" in page and "3 created" in page
    assert "Row errors (61)" in page
    assert "Missing title." in page and "Bad date on row 48." in page and "Bad date on row 49." not in page
    assert url("importjob", "errors_csv", job.pk) in page
    assert 'name="_save"' not in page  # a job is read, never edited
    second = client.get(url("importjob", "change", job.pk), {"errors_page": 2}).content.decode()
    assert "Bad date on row 49." in second and "Missing title." not in second
    assert client.get(url("importjob", "change", job.pk), {"errors_page": "x"}).status_code == 200
    # A finished job's page does not poll; a running one does.
    assert "window.setTimeout(poll" not in page
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, finished_at=None, progress=0.5)
    running = client.get(url("importjob", "change", job.pk)).content.decode()
    assert "window.setTimeout(poll" in running and url("importjob", "progress", job.pk) in running
    changelist = client.get(url("importjob", "changelist")).content.decode()
    assert '<progress max="100" value="50"' in changelist
    filtered = client.get(url("importjob", "changelist"), {"status__exact": "failed"}).content.decode()
    assert "archive.jsonl" not in filtered


def test_job_change_is_refused(client, users, objects):
    job = objects["importjob"]
    client.force_login(users["superuser"])
    response = client.post(url("importjob", "change", job.pk), {"status": "failed", "created_count": 0})
    assert response.status_code == 403
    assert ImportJob.objects.get(pk=job.pk).created_count == 3


def test_progress_endpoint(client, users, objects):
    job = objects["importjob"]
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, progress=0.25, finished_at=None)
    client.force_login(users["editor"])
    response = client.get(url("importjob", "progress", job.pk))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = response.json()
    assert data["status"] == "running" and data["finished"] is False and data["percent"] == 25
    assert (data["created"], data["updated"], data["skipped"], data["failed"], data["rows_seen"]) == (3, 1, 0, 1, 5)
    assert data["duration_s"] is not None
    assert client.get(url("importjob", "progress", 999999)).status_code == 404
    assert client.get(url("importjob", "progress", "nope")).status_code == 404


def test_row_errors_download_as_csv(client, users, objects):
    job = objects["importjob"]
    ImportRowError.objects.create(job=job, line=2, external_id="a-2", message="Bad date.", raw='{"date": "=1+1"}')
    ImportRowError.objects.create(job=job, line=9, message="Formula", raw='=HYPERLINK("http://x")')
    client.force_login(users["editor"])
    response = client.get(url("importjob", "errors_csv", job.pk))
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="import-{job.pk}-errors.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(row["line"], row["message"]) for row in rows] == [
        ("2", "Bad date."),
        ("4", "Missing title."),
        ("9", "Formula"),
    ]
    assert rows[0]["external_id"] == "a-2" and rows[0]["raw"] == '{"date": "=1+1"}'
    assert rows[2]["raw"] == '\'=HYPERLINK("http://x")'  # a spreadsheet would run it as a formula
    # Someone who may see jobs but not their row errors gets no CSV and no list.
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    client.force_login(viewer)
    assert client.get(url("importjob", "errors_csv", job.pk)).status_code == 403
    page = client.get(url("importjob", "change", job.pk)).content.decode()
    assert "Missing title." not in page and url("importjob", "errors_csv", job.pk) not in page


# --- The Import page: form errors -------------------------------------------------------------------------


def test_import_form_helpers():
    assert parse_column_mapping("title = headline\n\n# comment\nbody=text") == {"title": "headline", "body": "text"}
    for bad in ("title", "=headline", "title=", "title=a\ntitle=b"):
        with pytest.raises(Exception, match="Line"):
            parse_column_mapping(bad)
    assert guess_format("Archive.JSONL") == "jsonl" and guess_format("export.xml") == "wxr"
    assert guess_format("photo.png") is None and guess_format("noextension") is None
    job = ImportJob(created_count=7, updated_count=0, skipped_count=2, failed_count=1)
    chart = counts_chart(job)
    heights = {bar.title: bar.height for bar in chart.bars}
    assert heights["7 created"] > heights["2 skipped"] > heights["1 failed"] > 0 == heights["0 updated"]


def test_a_bad_file_type_is_a_form_error_and_no_job(client, users, objects):
    client.force_login(users["editor"])
    before = ImportJob.objects.count()
    upload = SimpleUploadedFile("photo.png", b"\x89PNG\r\n\x1a\n", content_type="image/png")
    response = client.post(url("importjob", "import"), {"file": upload, "target": "content"})
    assert response.status_code == 200
    assert "Cannot tell the format of &#x27;photo.png&#x27;" in response.content.decode()
    assert response.context["form"].errors["file"]
    # The extension says JSON Lines, the bytes say otherwise: the service refuses it, the form says why.
    upload = SimpleUploadedFile("photo.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00", content_type="image/png")
    response = client.post(url("importjob", "import"), {"file": upload, "target": "content"})
    assert response.status_code == 200
    assert "photo.jsonl: " in response.context["form"].errors["file"][0]
    wxr = SimpleUploadedFile("export.xml", b"<?xml version='1.0'?><rss></rss>")
    response = client.post(url("importjob", "import"), {"file": wxr, "target": "customer"})
    assert "import it as content" in response.context["form"].errors["file"][0]
    upload = SimpleUploadedFile("items.jsonl", JSONL)
    response = client.post(
        url("importjob", "import"), {"file": upload, "target": "content", "column_mapping": "nope=x"}
    )
    assert response.status_code == 200 and response.context["form"].errors["file"]
    for data in (
        {"target": "content"},  # neither a file nor a feed
        {"target": "content", "column_mapping": "title"},
        {"target": "nonsense", "feed_url": "https://example.com/feed.xml"},
        {"target": "content", "feed_url": "not a url at all"},
    ):
        response = client.post(url("importjob", "import"), data)
        assert response.status_code == 200 and response.context["form"].errors, data
    assert ImportJob.objects.count() == before
    assert FeedSource.objects.count() == 1


def test_a_known_feed_url_is_a_form_error(client, users, objects):
    client.force_login(users["editor"])
    response = client.post(url("importjob", "import"), {"target": "content", "feed_url": objects["feedsource"].url})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert FeedSource.objects.count() == 1


def test_the_import_page_needs_the_add_permission(client, users, objects):
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    client.force_login(viewer)
    assert client.get(url("importjob", "import")).status_code == 403
    upload = SimpleUploadedFile("items.jsonl", JSONL)
    assert client.post(url("importjob", "import"), {"file": upload, "target": "content"}).status_code == 403
    assert url("importjob", "import") not in client.get(url("importjob", "changelist")).content.decode()
    # May import files but not add feeds: the feed part is not offered and not taken.
    viewer.user_permissions.add(Permission.objects.get(codename="add_importjob"))
    page = client.get(url("importjob", "import")).content.decode()
    assert 'name="file"' in page and 'name="feed_url"' not in page
    response = client.post(url("importjob", "import"), {"target": "content", "feed_url": "https://example.com/f.xml"})
    assert response.status_code == 200 and response.context["form"].errors
    assert FeedSource.objects.count() == 1


# --- Feeds and rules -------------------------------------------------------------------------------


def test_poll_now_is_post_only_and_permission_checked(client, users, objects, django_capture_on_commit_callbacks):
    feed = objects["feedsource"]
    poll = url("feedsource", "poll", feed.pk)
    client.force_login(users["editor"])
    assert client.get(poll).status_code == 405
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_feedsource"))
    client.force_login(viewer)
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(poll).status_code == 403
        page = client.get(url("feedsource", "change", feed.pk)).content.decode()
        assert 'id="poll-now"' not in page
        changelist = url("feedsource", "changelist")
        assert 'value="poll_now"' not in client.get(changelist).content.decode()
        client.post(changelist, {"action": "poll_now", "_selected_action": [feed.pk]})
    assert callbacks == []
    assert client.post(url("feedsource", "poll", 999999)).status_code == 404
    client.force_login(users["editor"])
    assert 'id="poll-now"' in client.get(url("feedsource", "change", feed.pk)).content.decode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(poll)
    assert (response.status_code, response["Location"]) == (302, url("feedsource", "change", feed.pk))
    assert len(callbacks) == 1  # feed_poll.delay(feed.pk) once the request commits


def test_feed_list_actions_and_add_form(client, users, objects, django_capture_on_commit_callbacks):
    feed = objects["feedsource"]
    changelist = url("feedsource", "changelist")
    client.force_login(users["editor"])
    page = client.get(changelist).content.decode()
    assert "HTTP 500 HTTP 500" in page and "HTTP 500 " * 30 not in page  # the last error, cut short
    client.post(changelist, {"action": "deactivate", "_selected_action": [feed.pk]})
    assert FeedSource.objects.get(pk=feed.pk).is_active is False
    client.post(changelist, {"action": "activate", "_selected_action": [feed.pk]})
    assert FeedSource.objects.get(pk=feed.pk).is_active is True
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(changelist, {"action": "poll_now", "_selected_action": [feed.pk]}, follow=True)
    assert "Polling 1 feeds now." in response.content.decode() and len(callbacks) == 1
    add = {"name": "", "url": "https://example.com/new.xml", "poll_interval_minutes": 15, "publish": "on"}
    add["is_active"] = "on"
    response = client.post(url("feedsource", "add"), add)
    assert response.status_code == 302
    new = FeedSource.objects.get(url="https://example.com/new.xml")
    assert new.name == "example.com" and new.next_poll_at is not None and new.poll_interval_minutes == 15
    for bad in ({"url": "ftp://example.com/feed.xml"}, {"poll_interval_minutes": 0}, {"url": feed.url}):
        response = client.post(url("feedsource", "add"), {**add, "url": "https://example.com/other.xml", **bad})
        assert response.status_code == 200 and response.context["adminform"].form.errors, bad
    assert FeedSource.objects.count() == 2


def test_mapping_rules_validate_and_edit_in_the_list(client, users, objects):
    client.force_login(users["editor"])
    section = objects["section"]
    data = {"name": "Bad", "field": "any", "match_type": "regex", "pattern": "(unclosed", "section": section.pk}
    data |= {"priority": 10, "is_active": "on"}
    response = client.post(url("mappingrule", "add"), data)
    assert response.status_code == 200
    assert "Not a valid regular expression" in response.content.decode()
    response = client.post(url("mappingrule", "add"), {**data, "pattern": "comet", "section": ""})
    assert "A rule sets a section, adds a tag, or both." in response.content.decode()
    assert MappingRule.objects.count() == 1
    assert client.post(url("mappingrule", "add"), {**data, "pattern": r"\bcomets?\b"}).status_code == 302
    rule = objects["mappingrule"]
    edit = {
        "form-TOTAL_FORMS": 2,
        "form-INITIAL_FORMS": 2,
        "form-0-id": rule.pk,
        "form-0-priority": 5,
        "form-1-id": MappingRule.objects.exclude(pk=rule.pk).get().pk,
        "form-1-priority": 20,
        "form-1-is_active": "on",
        "_save": "Save",
    }
    assert client.post(url("mappingrule", "changelist"), edit).status_code == 302
    rule.refresh_from_db()
    assert (rule.priority, rule.is_active) == (5, False)


def test_customer_message_labels_and_consent(client, users, objects):
    message = objects["customermessage"]
    client.force_login(users["editor"])
    page = client.get(url("customermessage", "change", message.pk)).content.decode()
    assert 'value="billing"' in page and "I was charged twice." in page
    data = {"labels": "billing, refund,  billing, ", "training_consent": "on", "text": "rewritten", "source": "x"}
    assert client.post(url("customermessage", "change", message.pk), data).status_code == 302
    message.refresh_from_db()
    assert message.labels == ["billing", "refund"] and message.training_consent is True
    assert (message.text, message.source) == ("I was charged twice.", "zendesk")  # the record stays
    response = client.post(url("customermessage", "change", message.pk), {"labels": "x" * 101})
    assert response.status_code == 200 and response.context["adminform"].form.errors["labels"]


# --- The Content page's inlines --------------------------------------------------------------------


class FormScraper(html.parser.HTMLParser):
    """The values a browser would submit from one form of a page (inputs, selects, textareas)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.data = form_id, False, {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.setdefault(name, []).append(a.get("value", "on" if a.get("type") == "checkbox" else ""))
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select].append(a.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea][0] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self.inside = False


def scrape(page: str, form_id: str) -> dict[str, list[str]]:
    parser = FormScraper(form_id)
    parser.feed(page)
    return parser.data


def test_editors_edit_the_social_post_inline_and_see_revisions(client, users, objects):
    post = objects["post"]
    client.force_login(users["editor"])
    change = reverse("admin:personalization_content_change", args=[post.pk])
    page = client.get(change).content.decode()
    assert "Earlier versions" in page and "Launch day (first version)" in page
    data = scrape(page, "content_form")
    assert data["social-0-handle"] == ["spacedesk"]
    data["social-0-likes"] = ["40"]
    data["social-0-handle"] = ["spacedesk_news"]
    response = client.post(change, {key: values for key, values in data.items()})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    social = SocialPost.objects.get(pk=post.pk)
    assert (social.handle, social.likes, social.shares) == ("spacedesk_news", 40, 3)
    assert ContentRevision.objects.filter(content=post).count() == 1  # read-only inline: untouched


# --- End to end: a real Celery worker runs the imports ---------------------------------------------------


@pytest.fixture
def feed_server(tmp_path) -> Iterator[str]:
    """A tiny RSS file served over loopback by http.server (it answers If-Modified-Since with 304)."""
    (tmp_path / "feed.xml").write_text(RSS, encoding="utf-8")
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/feed.xml"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


def finished(job_id: int) -> ImportJob | None:
    job = ImportJob.objects.get(pk=job_id)
    return job if job.status in JOB_DONE else None


def test_import_a_jsonl_file_end_to_end(client, transactional_db, celery_worker: Path):
    users = make_users()
    client.force_login(users["editor"])
    upload = SimpleUploadedFile("archive.jsonl", JSONL, content_type="application/octet-stream")
    response = client.post(
        url("importjob", "import"), {"file": upload, "target": "content", "source_name": "archive-2019"}
    )
    assert response.status_code == 302, response.context["form"].errors if response.context else ""
    job = ImportJob.objects.get()
    assert response["Location"] == url("importjob", "change", job.pk)
    assert (job.format, job.target, job.filename, job.created_by) == (
        "jsonl",
        "content",
        "archive.jsonl",
        users["editor"],
    )
    job = wait_until(lambda: finished(job.pk), timeout=60, what="the import job to finish")
    assert job.status == ImportJob.Status.SUCCEEDED, job.error
    assert (job.created_count, job.failed_count) == (3, 1)
    assert set(Content.objects.values_list("title", flat=True)) == {
        "Comets return",
        "Rivers in spring",
        "Bread at home",
    }
    page = client.get(url("importjob", "change", job.pk)).content.decode()
    assert 'id="job-created">3<' in page and 'id="job-failed">1<' in page and "Succeeded" in page
    assert client.get(url("importjob", "progress", job.pk)).json()["finished"] is True
    rows = list(
        csv.DictReader(
            io.StringIO(b"".join(client.get(url("importjob", "errors_csv", job.pk)).streaming_content).decode())
        )
    )
    assert [row["line"] for row in rows] == ["3"] and "this line is not JSON" in rows[0]["raw"]

    # Run again: GET is refused, a viewer is refused, an editor gets a new job on the same file that changes nothing.
    run_again = url("importjob", "run_again", job.pk)
    assert client.get(run_again).status_code == 405
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    client.force_login(viewer)
    assert client.post(run_again).status_code == 403
    assert 'id="run-again"' not in client.get(url("importjob", "change", job.pk)).content.decode()
    client.force_login(users["editor"])
    response = client.post(run_again)
    again = ImportJob.objects.exclude(pk=job.pk).get()
    assert response["Location"] == url("importjob", "change", again.pk)
    again = wait_until(lambda: finished(again.pk), timeout=60, what="the re-run to finish")
    assert again.status == ImportJob.Status.SUCCEEDED and again.created_count == 0
    assert again.updated_count + again.skipped_count == 3
    assert Content.objects.count() == 3
    # The action does the same for a selection.
    response = client.post(url("importjob", "changelist"), {"action": "run_again", "_selected_action": [job.pk]})
    assert response.status_code == 302 and ImportJob.objects.count() == 3


def test_import_a_feed_url_end_to_end(client, transactional_db, celery_worker: Path, feed_server: str):
    users = make_users()
    client.force_login(users["editor"])
    response = client.post(url("importjob", "import"), {"target": "content", "feed_url": feed_server, "publish": "on"})
    feed = FeedSource.objects.get()
    assert (response.status_code, response["Location"]) == (302, url("feedsource", "change", feed.pk))
    assert feed.url == feed_server and feed.publish

    def poll_job() -> ImportJob | None:
        job = feed.jobs.first()
        return job if job is not None and job.status in JOB_DONE else None

    job = wait_until(poll_job, timeout=60, what="the feed's first poll")
    assert job.status == ImportJob.Status.SUCCEEDED, job.error
    assert job.created_count == 2
    assert set(Content.objects.values_list("title", flat=True)) == {"Tides explained", "Night trains are back"}
    page = client.get(url("feedsource", "change", feed.pk)).content.decode()
    assert url("importjob", "change", job.pk) in page  # listed under the feed's recent imports
    # Poll now: a second poll, answered 304, creates nothing.
    assert client.post(url("feedsource", "poll", feed.pk)).status_code == 302
    second = wait_until(
        lambda: feed.jobs.exclude(pk=job.pk).filter(status__in=JOB_DONE).first(), timeout=60, what="the second poll"
    )
    assert second.status == ImportJob.Status.SUCCEEDED and second.created_count == 0
    assert Content.objects.count() == 2


@pytest.mark.browser
def test_the_job_page_follows_a_running_job_in_a_browser(live_server, transactional_db, monkeypatch):
    """Counts refresh from the progress endpoint while the job runs; once it ends the page reloads with its errors."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls between Playwright's steps
    users = make_users()
    job = ImportJob.objects.create(
        format=ImportJob.Format.JSONL,
        filename="big.jsonl",
        status=ImportJob.Status.RUNNING,
        progress=0.1,
        rows_seen=10,
        created_count=10,
        started_at=timezone.now(),
    )
    client = Client()
    client.force_login(users["editor"])
    cookie = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([cookie])
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            expect.set_options(timeout=15_000)
            page.goto(live_server.url + url("importjob", "change", job.pk))
            expect(page.locator("#job-created")).to_have_text("10")
            expect(page.locator("#job-refreshing")).to_be_visible()
            ImportJob.objects.filter(pk=job.pk).update(progress=0.6, rows_seen=60, created_count=55, failed_count=5)
            expect(page.locator("#job-created")).to_have_text("55")
            expect(page.locator("#job-percent")).to_have_text("60")
            expect(page.locator("#job-failed")).to_have_text("5")
            ImportRowError.objects.create(job=job, line=7, field="title", message="Missing title.")
            ImportJob.objects.filter(pk=job.pk).update(
                status=ImportJob.Status.SUCCEEDED, progress=1.0, finished_at=timezone.now()
            )
            expect(page.locator("#row-errors")).to_contain_text("Missing title.")  # the page reloaded
            expect(page.locator("#job-status")).to_have_text("Succeeded")
            expect(page.locator("#job-refreshing")).to_have_count(0)
            assert errors == []
        finally:
            browser.close()
            # The ORM calls above ran in Playwright's context, with connections of their own: close them here.
            connections.close_all()
