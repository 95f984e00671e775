"""File imports against the real database: jobs, every format and target, corrections, bad input, the
import_content command, bounded memory, and a real Celery worker running a job."""

import io
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from personalization.ingest import writer
from personalization.ingest.records import ContentRecord, SocialFields, SourceRow
from personalization.ingest.services import (
    ImportRejected,
    import_job_create,
    import_job_enqueue,
    import_job_run,
    import_rows_write,
)
from personalization.models import (
    Author,
    Content,
    ContentEmbedding,
    ContentRevision,
    CustomerMessage,
    ImportJob,
    ImportRowError,
    MappingRule,
    Section,
    SocialPost,
    Tag,
)
from tests.conftest import ROOT, child_env, wait_until
from tests.test_ingest_formats import WXR

pytestmark = pytest.mark.django_db

PARAGRAPHS = [
    "The council voted on Tuesday to extend the tram line to the northern districts by 2027.",
    "Residents had asked for the extension for a decade; the budget comes from the regional fund.",
    "Work starts in the spring, and the old depot becomes a park with a market on Saturdays.",
]


def article(i: int, **extra) -> dict:
    item = {
        "id": f"a-{i}",
        "title": f"Tram line extended, part {i}",
        "body": "".join(f"<p>{p} ({i})</p>" for p in PARAGRAPHS),
        "url": f"https://news.example/trams/{i}?utm_source=feed",
        "date": "2024-04-02T08:00:00Z",
        "tags": ["Transport", "City"],
        "authors": ["Ana Lima"],
        "section": "Local",
        "language": "en",
    }
    item.update(extra)
    return item


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items), encoding="utf-8")
    return path


def run(path: Path, fmt: str = "jsonl", target: str = "content", **kwargs) -> ImportJob:
    job = import_job_create(format=fmt, target=target, path=path, **kwargs)
    ran = import_job_run(job_id=job.pk)
    assert ran is not None
    return ran


def counts(job: ImportJob) -> tuple[int, int, int, int, int]:
    return job.rows_seen, job.created_count, job.updated_count, job.skipped_count, job.failed_count


def errors(job: ImportJob) -> dict[int, str]:
    return dict(ImportRowError.objects.filter(job=job).values_list("line", "message"))


# --- Content from JSON Lines ------------------------------------------------------------------


def test_jsonl_import_writes_clean_items_with_tags_authors_and_section(tmp_path):
    path = write_jsonl(tmp_path / "archive.jsonl", [article(1), article(2, tags="Transport; Budget")])
    job = run(path)

    assert job.status == ImportJob.Status.SUCCEEDED and job.error == ""
    assert counts(job) == (2, 2, 0, 0, 0) and job.progress == 1.0
    assert job.started_at <= job.finished_at
    item = Content.objects.get(external_id="a-1")
    assert item.source == "file:archive.jsonl" and item.status == Content.Status.PUBLISHED
    assert item.title == "Tram line extended, part 1" and item.slug == "tram-line-extended-part-1"
    assert "<p>" not in item.body and item.body.startswith(PARAGRAPHS[0][:40])
    assert item.published_at == datetime(2024, 4, 2, 8, tzinfo=UTC)
    assert item.canonical_url == "https://news.example/trams/1" and len(item.content_hash) == 64
    assert item.section.name == "Local"
    assert sorted(item.tags.values_list("name", flat=True)) == ["City", "Transport"]
    assert list(item.authors.values_list("name", flat=True)) == ["Ana Lima"]
    other = Content.objects.get(external_id="a-2")
    assert sorted(other.tags.values_list("name", flat=True)) == ["Budget", "Transport"]
    assert Tag.objects.filter(name="Transport").count() == 1 and Author.objects.count() == 1


def test_bad_rows_become_row_errors_with_line_numbers_and_the_valid_rest_is_imported(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            article(1),
            "{broken",
            {"id": "no-title", "body": "x"},
            article(4, date="1812-06-24"),
            article(5, date="2999-01-01T00:00:00Z"),
            article(1, title="Same id again"),
            article(7),
        ],
    )
    job = run(path)

    assert job.status == ImportJob.Status.SUCCEEDED
    assert counts(job) == (7, 2, 0, 0, 5)
    found = errors(job)
    assert found[2].startswith("Not valid JSON")
    assert found[3] == "The title is missing."
    assert found[4] == "The date '1812-06-24' is before 1900."
    assert "more than a day in the future" in found[5]
    assert found[6] == "Duplicate id in this file, first seen on line 1."
    assert set(Content.objects.values_list("external_id", flat=True)) == {"a-1", "a-7"}
    row_error = ImportRowError.objects.get(job=job, line=4)
    assert row_error.field == "published_at" and row_error.external_id == "a-4" and '"a-4"' in row_error.raw


def test_rerunning_the_same_file_creates_nothing_and_skips_every_row(tmp_path):
    path = write_jsonl(tmp_path / "archive.jsonl", [article(i) for i in range(5)])
    first = run(path)
    links = Content.tags.through.objects.count()
    second = run(path)

    assert counts(first) == (5, 5, 0, 0, 0)
    assert counts(second) == (5, 0, 0, 5, 0)
    assert Content.objects.count() == 5 and Content.tags.through.objects.count() == links
    assert not ContentRevision.objects.exists()


def test_a_correction_updates_the_item_and_keeps_its_previous_text(tmp_path):
    run(write_jsonl(tmp_path / "v1.jsonl", [article(1), article(2)]))
    before = Content.objects.get(external_id="a-1")
    fixed = article(1, body="<p>The council voted on Wednesday, not Tuesday.</p>", tags=["Transport", "Correction"])
    job = run(write_jsonl(tmp_path / "v1.jsonl", [fixed, article(2)]))

    assert counts(job) == (2, 0, 1, 1, 0)
    item = Content.objects.get(pk=before.pk)
    assert item.body == "The council voted on Wednesday, not Tuesday." and item.content_hash != before.content_hash
    assert item.updated_at > before.updated_at
    assert sorted(item.tags.values_list("name", flat=True)) == ["City", "Correction", "Transport"]
    (revision,) = ContentRevision.objects.filter(content=item)
    assert revision.body == before.body and revision.content_hash == before.content_hash and revision.job == job


def test_the_same_article_from_another_source_merges_into_the_existing_item(tmp_path):
    run(write_jsonl(tmp_path / "wire.jsonl", [article(1)]))
    original = Content.objects.get()
    # Another export: another id, the same address (tracking parameters aside), a corrected text.
    copy = article(1, id="cms-991", url="https://news.example/trams/1?utm_medium=social", body="<p>Corrected.</p>")
    job = run(write_jsonl(tmp_path / "cms.jsonl", [copy]), options={"source": "cms"})

    assert counts(job) == (1, 0, 1, 0, 0)
    assert Content.objects.count() == 1
    item = Content.objects.get()
    assert item.pk == original.pk and item.body == "Corrected." and item.source == "file:wire.jsonl"
    assert ContentRevision.objects.get(content=item).body == original.body
    again = run(write_jsonl(tmp_path / "cms.jsonl", [copy]), options={"source": "cms"})
    assert counts(again) == (1, 0, 0, 1, 0)


def test_exact_duplicates_inside_one_batch_are_merged(tmp_path):
    twin = article(2, title=article(1)["title"], body=article(1)["body"], url="")
    job = run(write_jsonl(tmp_path / "twins.jsonl", [article(1), twin]))

    assert counts(job) == (2, 1, 0, 1, 0)
    assert Content.objects.count() == 1


def test_mapping_rules_set_the_section_and_add_tags(tmp_path):
    politics = Section.objects.create(name="Politics", slug="politics")
    vote = Tag.objects.create(name="Vote", slug="vote")
    MappingRule.objects.create(name="council", field="body", pattern="council", section=politics, tag=vote)
    run(write_jsonl(tmp_path / "a.jsonl", [article(1)]))

    item = Content.objects.get()
    assert item.section == politics
    assert sorted(item.tags.values_list("name", flat=True)) == ["City", "Transport", "Vote"]


# --- Other formats ----------------------------------------------------------------------------


def test_csv_with_a_column_mapping(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        "Headline;Copy;When;Keywords;Writer;Ref\n"
        "Jazz in the city;<p>Three clubs, one night.</p>;2024-02-01;music|nightlife;Bo Chen;j-1\n"
        ";No headline;2024-02-01;;;j-2\n",
        encoding="utf-8",
    )
    mapping = {"title": "Headline", "body": "Copy", "published_at": "When", "authors": "Writer", "id": "Ref"}
    job = run(path, "csv", column_mapping=mapping)

    assert counts(job) == (2, 1, 0, 0, 1) and errors(job) == {3: "The title is missing."}
    item = Content.objects.get()
    assert (item.title, item.body, item.external_id) == ("Jazz in the city", "Three clubs, one night.", "j-1")
    assert sorted(item.tags.values_list("name", flat=True)) == ["music", "nightlife"]
    stored = {"title": "Headline", "body": "Copy", "published_at": "When", "authors": "Writer", "external_id": "Ref"}
    assert job.column_mapping == stored  # field names made canonical


def test_json_array(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([article(1), "not an object", article(3)], indent=1))
    job = run(path, "json")

    assert counts(job) == (3, 2, 0, 0, 1)
    assert set(errors(job).values()) == {"Each element must be a JSON object, not a string."}


def test_wxr_import_with_categories_tags_authors_and_drafts(tmp_path):
    path = tmp_path / "site.xml"
    path.write_text(WXR, encoding="utf-8")
    job = run(path, "wxr")

    assert counts(job) == (3, 2, 0, 0, 1) and errors(job) == {61: "The title is missing."}
    post = Content.objects.get(external_id="101")
    assert post.body == "Rivers rose." and post.summary == "Rivers rose."
    assert post.section.name == "World" and post.status == Content.Status.PUBLISHED
    assert sorted(post.tags.values_list("name", flat=True)) == ["Climate", "Rivers"]
    assert list(post.authors.values_list("name", flat=True)) == ["Jane Doe"]
    page = Content.objects.get(external_id="103")
    assert page.status == Content.Status.DRAFT and page.body == "We report."


def test_malformed_wxr_keeps_the_items_before_the_break_and_fails_the_job_with_the_line(tmp_path):
    path = tmp_path / "site.xml"
    path.write_text(WXR.replace("<title>About us</title>", "<title>About us</titel>"), encoding="utf-8")
    job = run(path, "wxr")

    assert job.status == ImportJob.Status.FAILED
    assert job.error.startswith("The XML is malformed at line 45, column 28")
    assert list(Content.objects.values_list("external_id", flat=True)) == ["101"]
    assert job.created_count == 1


# --- Social posts and customer messages -------------------------------------------------------


def test_social_posts_with_engagement_counts(tmp_path):
    path = tmp_path / "posts.csv"
    header = "id,platform,handle,text,likes,shares,comments,views,posted_at,url\n"
    text = "Polls close at 8 tonight. Results from 9 on our live page."
    row = f"p1,x,@desk,{text},{{likes}},3,4,1000,2024-06-01T18:00:00Z,https://x.example/desk/p1\n"
    path.write_text(header + row.format(likes=10) + "p2,x,desk,,1,1,1,1,2024-06-01T18:00:00Z,\n")
    job = run(path, "csv", "social")

    assert counts(job) == (2, 1, 0, 0, 1) and errors(job) == {3: "The text is missing."}
    post = Content.objects.get()
    assert post.kind == Content.Kind.POST and post.title.startswith("Polls close at 8 tonight.")
    social = SocialPost.objects.get(content=post)
    assert (social.platform, social.handle, social.likes, social.shares, social.comments, social.views) == (
        "x", "desk", 10, 3, 4, 1000,
    )  # fmt: skip
    assert counts(run(path, "csv", "social")) == (2, 0, 0, 1, 1)
    # New engagement counts update the post without a revision: the text did not change.
    path.write_text(header + row.format(likes=25))
    assert counts(run(path, "csv", "social")) == (1, 0, 1, 0, 0)
    assert SocialPost.objects.get(content=post).likes == 25 and not ContentRevision.objects.exists()


def test_customer_messages_with_labels_and_consent(tmp_path):
    items = [
        {"id": "T-1", "channel": "email", "subject": "Refund", "text": "<p>I was charged twice.</p>",
         "date": "2024-03-02T10:00:00Z", "labels": ["billing"], "consent": True, "source": "zendesk"},
        {"id": "T-2", "channel": "ticket", "text": "Where is my paper?", "date": "2024-03-03"},
        {"id": "T-3", "channel": "ticket", "text": "", "date": "2024-03-03"},
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "tickets.jsonl", items)
    job = run(path, target="customer")

    assert counts(job) == (3, 2, 0, 0, 1) and errors(job) == {3: "The text is missing."}
    first = CustomerMessage.objects.get(external_id="T-1")
    assert (first.channel, first.source, first.subject, first.text) == (
        "email",
        "zendesk",
        "Refund",
        "I was charged twice.",
    )
    assert first.labels == ["billing"] and first.training_consent and first.job == job and len(first.content_hash) == 64
    second = CustomerMessage.objects.get(external_id="T-2")
    assert second.source == "file:tickets.jsonl" and not second.training_consent
    assert not Content.objects.exists()  # kept apart from the catalog
    assert counts(run(path, target="customer")) == (3, 0, 0, 2, 1)
    items[0]["consent"] = False  # a withdrawn consent is an update, though the text is the same
    assert counts(run(write_jsonl(path, items), target="customer")) == (3, 0, 1, 1, 1)
    assert not CustomerMessage.objects.get(external_id="T-1").training_consent


# --- The writer's batches ---------------------------------------------------------------------


def post_row(line: int, likes: int) -> SourceRow:
    record = ContentRecord(
        external_id=f"post-{line}",
        title="",
        body=f"Post number {line} about the tram line.",
        kind="post",
        published_at=datetime(2024, 1, 1, tzinfo=UTC),
        tags=[f"tag-{line}"],
        social=SocialFields(platform="x", handle="desk", likes=likes),
    )
    return SourceRow(line=line, record=record)


def test_a_row_the_database_refuses_leaves_nothing_behind_and_its_batch_is_written_without_it():
    """A negative like count passes no reader, but the writer is shared: the database's CHECK refuses it
    after the item's Content row was inserted. The batch is retried row by row; that row leaves no trace."""
    job = ImportJob.objects.create(format="jsonl", target="social", status="running", options={"source": "test"})
    rows = [post_row(1, 5), post_row(2, -1), post_row(3, 7)]

    import_rows_write(job=job, rows=rows)

    job.refresh_from_db()
    assert counts(job) == (3, 2, 0, 0, 1)
    message = errors(job)[2]
    assert message.startswith("The database refused the row:") and "likes" in message
    assert set(Content.objects.values_list("external_id", flat=True)) == {"post-1", "post-3"}
    assert SocialPost.objects.count() == 2
    assert set(Tag.objects.values_list("name", flat=True)) == {"tag-1", "tag-3"}  # no tag of the refused row


def test_a_batch_is_one_transaction(monkeypatch):
    """Rows are written a batch at a time: when a batch fails at its end, none of its rows stay."""
    job = ImportJob.objects.create(format="jsonl", target="social", status="running", options={"source": "test"})
    monkeypatch.setattr(writer, "BATCH_SIZE", 3)
    calls = []

    def fail_second_batch(self, result, *, fraction, stored_errors):
        calls.append(result.created)
        if len(calls) == 2:
            raise RuntimeError("the database went away mid-batch")
        return original(self, result, fraction=fraction, stored_errors=stored_errors)

    original = writer.BatchWriter._record
    monkeypatch.setattr(writer.BatchWriter, "_record", fail_second_batch)
    with pytest.raises(RuntimeError):
        import_rows_write(job=job, rows=[post_row(i, 1) for i in range(1, 8)])

    assert sorted(Content.objects.values_list("external_id", flat=True)) == ["post-1", "post-2", "post-3"]
    assert SocialPost.objects.count() == 3
    job.refresh_from_db()
    assert counts(job) == (3, 3, 0, 0, 0)


def test_a_file_where_every_row_fails_stops_early_with_a_clear_job_error(tmp_path):
    path = write_jsonl(tmp_path / "wrong.jsonl", [{"label": f"n{i}", "note": "no title field"} for i in range(1500)])
    job = run(path)

    assert job.status == ImportJob.Status.FAILED
    assert job.error.startswith("The first 1,000 rows all failed (line 1: The title is missing.)")
    assert job.failed_count == 1000 and not Content.objects.exists()


# --- Jobs: refused files, uploads, leases -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "xlsx", "target": "content"}, "Unknown file format 'xlsx'"),
        ({"format": "jsonl", "target": "readers"}, "Unknown target 'readers'"),
        ({"format": "wxr", "target": "customer"}, "import it as content"),
        ({"format": "jsonl", "target": "content", "column_mapping": {"headline": "x"}}, "Unknown field 'headline'"),
        ({"format": "jsonl", "target": "content", "options": {"colour": "red"}}, "Unknown options: colour"),
        ({"format": "jsonl", "target": "content", "options": {"delimiter": "x"}}, "The CSV delimiter"),
        ({"format": "jsonl", "target": "customer", "options": {"channel": "fax"}}, "The channel is one of"),
    ],
)
def test_import_job_create_refuses_bad_requests(kwargs, message):
    upload = SimpleUploadedFile("a.jsonl", b'{"title": "x"}\n')
    with pytest.raises(ImportRejected, match=message):
        import_job_create(file=upload, **kwargs)
    assert not ImportJob.objects.exists()


@pytest.mark.parametrize(
    ("name", "data", "fmt", "message"),
    [
        ("report.xlsx", b"PK\x03\x04\x14\x00\x06\x00", "csv", "report.xlsx: This is a ZIP archive"),
        ("dump.jsonl.gz", b"\x1f\x8b\x08\x00\x00", "jsonl", "gzip-compressed file: decompress it first"),
        ("scan.pdf", b"%PDF-1.4\n", "json", "a PDF document"),
        ("feed.xml", b'<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "wxr", "add its address as a feed"),
        ("empty.csv", b"", "csv", "The file is empty"),
    ],
)
def test_a_file_of_a_type_the_importer_does_not_take_is_refused(name, data, fmt, message):
    with pytest.raises(ImportRejected, match=message):
        import_job_create(format=fmt, target="content", file=SimpleUploadedFile(name, data))


def test_an_uploaded_file_is_stored_with_the_job_and_a_wrong_one_fails_at_run_time():
    upload = SimpleUploadedFile("items.jsonl", b"".join(json.dumps(article(i)).encode() + b"\n" for i in range(3)))
    job = import_job_create(format="jsonl", target="content", file=upload, filename="items.jsonl", user_id=None)
    assert job.status == ImportJob.Status.QUEUED and job.file.name.startswith("imports/")
    assert counts(import_job_run(job_id=job.pk)) == (3, 3, 0, 0, 0)

    # Looks like a JSON array at first, then is cut short: the job fails and says where.
    truncated = SimpleUploadedFile("cut.json", b'[{"id": "z1", "title": "Whole"},\n{"id": "z2", "title": "Cu')
    job = import_job_run(job_id=import_job_create(format="json", target="content", file=truncated).pk)
    assert job.status == ImportJob.Status.FAILED and job.error.startswith("Not valid JSON at line 2")
    assert Content.objects.filter(external_id="z1").exists()

    # A CSV whose mapping names a column the file lacks.
    csv_file = SimpleUploadedFile("x.csv", b"name,text\nA,B\n")
    job = import_job_create(format="csv", target="content", file=csv_file, column_mapping={"title": "headline"})
    job = import_job_run(job_id=job.pk)
    assert job.status == ImportJob.Status.FAILED
    assert job.error == "Mapped columns not in the header: title=headline. The header has: name, text."


def test_a_job_runs_once(tmp_path):
    job = import_job_create(format="jsonl", target="content", path=write_jsonl(tmp_path / "a.jsonl", [article(1)]))
    assert import_job_run(job_id=job.pk) is not None
    assert import_job_run(job_id=job.pk) is None
    assert Content.objects.count() == 1


def test_progress_is_reported_by_bytes_read(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "BATCH_SIZE", 50)
    monkeypatch.setattr(writer, "PROGRESS_INTERVAL_S", 0.0)
    bodies = [" ".join(f"w{i}x{j}" for j in range(1500)) for i in range(400)]  # 12 KB each, all different
    path = write_jsonl(tmp_path / "a.jsonl", [article(i, body=body) for i, body in enumerate(bodies)])
    job = import_job_create(format="jsonl", target="content", path=path)
    seen: list[float] = []
    import_job_run(job_id=job.pk, on_batch=lambda state: seen.append(state.fraction))

    assert len(seen) == 8 and seen == sorted(seen) and 0 < seen[0] < 0.5 and seen[-1] == 1.0
    assert ImportJob.objects.get(pk=job.pk).progress == 1.0


# --- The command ------------------------------------------------------------------------------


def test_import_content_command_prints_counts_and_row_errors(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("headline,text,tags\nHello,<p>World</p>,a|b\n,missing title,\n")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_content", str(path), "--map", "title=headline", "--source", "desk", stdout=out, stderr=err)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Import #") and " succeeded in " in lines[0]
    assert "2 rows, 1 created, 0 updated, 0 skipped, 1 failed" in lines[0]
    assert lines[1:] == ["Row errors (first 1 of 1):", "  line 3: The title is missing."]
    assert "100%" in err.getvalue() and "1 created" in err.getvalue()
    assert Content.objects.get().source == "desk"


def test_import_content_command_errors(tmp_path):
    with pytest.raises(CommandError, match=r"Cannot tell the format of notes\.txt"):
        call_command("import_content", str(tmp_path / "notes.txt"))
    with pytest.raises(CommandError, match="No file at"):
        call_command("import_content", str(tmp_path / "missing.jsonl"))
    with pytest.raises(CommandError, match="--map takes FIELD=COLUMN"):
        call_command("import_content", str(tmp_path / "x.csv"), "--map", "title")
    broken = tmp_path / "site.xml"
    broken.write_text(WXR.replace("</channel>", ""))
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"Import #\d+ failed: The XML is malformed at line"):
        call_command("import_content", str(broken), stdout=out, stderr=io.StringIO())
    assert " failed in " in out.getvalue() and "2 created" in out.getvalue()


def test_import_content_async_queues_the_job(tmp_path, django_capture_on_commit_callbacks):
    path = write_jsonl(tmp_path / "a.jsonl", [article(1)])
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        call_command("import_content", str(path), "--async", stdout=out)

    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.QUEUED and job.celery_task_id and len(callbacks) == 1
    assert out.getvalue().strip() == f"Import #{job.pk} queued: a worker reads {path.resolve()}."


# --- Bounded memory ---------------------------------------------------------------------------

IMPORT_FILE = textwrap.dedent(
    """
    import io, json, resource, sys, tempfile, django
    django.setup()
    from django.core.management import call_command
    from mediachat.celery import app
    app.conf.broker_url = "memory://localhost/"  # the embedding tasks each batch enqueues stay here, unrun
    n = int(sys.argv[1])
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
        for i in range(n):
            item = {"id": f"m{n}-{i}", "title": f"Item {i} of {n}", "body": f"<p>Short text {i}.</p>" * 3,
                    "tags": [f"t{i % 50}"], "date": "2024-01-01", "language": "en"}
            f.write(json.dumps(item).encode() + b"\\n")
        f.flush()
        call_command("import_content", f.name, "--source", f"mem-{n}", stdout=io.StringIO(), stderr=io.StringIO())
    print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


@pytest.mark.django_db(transaction=True)
def test_importing_stays_in_flat_memory_as_the_file_grows():
    env = child_env(DJANGO_SETTINGS_MODULE="mediachat.settings")

    def peak_kb(n: int) -> int:
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_FILE, str(n)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])["peak_kb"]

    small, large = peak_kb(1_500), peak_kb(6_000)
    assert Content.objects.count() == 7_500
    assert large - small < 10_000, (small, large)


# --- A real Celery worker ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_runs_an_uploaded_import(celery_worker):
    upload = SimpleUploadedFile("w.jsonl", b"".join(json.dumps(article(i)).encode() + b"\n" for i in range(20)))
    job = import_job_create(format="jsonl", target="content", file=upload)
    import_job_enqueue(job_id=job.pk)

    done = wait_until(
        lambda: ImportJob.objects.filter(pk=job.pk, finished_at__isnull=False).first(), timeout=60, what="the import"
    )
    assert done.status == ImportJob.Status.SUCCEEDED, (done.error, celery_worker.read_text()[-2000:])
    assert counts(done) == (20, 20, 0, 0, 0) and done.celery_task_id
    assert Content.objects.count() == 20
    assert f"personalization.ingest.tasks.import_job_run[{done.celery_task_id}]" in celery_worker.read_text()
    # The batch enqueued the embeddings of the items it created; the same worker computes them.
    wait_until(lambda: ContentEmbedding.objects.count() == 20, timeout=90, what="the embeddings of the import")
