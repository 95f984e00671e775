"""The import readers on real bytes: JSON Lines, JSON arrays, CSV with column mapping, WordPress exports.

Every bad input ends as a row error with its line number, or (for a file that cannot be read on) a
FormatError naming the line, after the rows before it.
"""

import codecs
import io
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest

from personalization.ingest.formats import CHUNK, FormatError, detect_encoding, read_rows, sniff
from personalization.ingest.records import ContentRecord, CustomerRecord, SourceRow
from tests.conftest import ROOT


def rows(data: bytes, fmt: str = "jsonl", target: str = "content", **kwargs) -> list[SourceRow]:
    return list(read_rows(format=fmt, target=target, stream=io.BytesIO(data), **kwargs))


def by_line(result: list[SourceRow]) -> dict[int, ContentRecord | CustomerRecord | str]:
    """line → record, or line → the error's message."""
    return {r.line: r.record if r.record is not None else r.error.message for r in result}


def jsonl(*objects: object) -> bytes:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects).encode()


# --- JSON Lines -------------------------------------------------------------------------------


def test_jsonl_reads_common_field_names_into_records():
    data = jsonl(
        {
            "id": 17,
            "headline": "Glaciers in retreat",
            "content": "<p>The Alps.</p>",
            "excerpt": "Short",
            "link": "https://news.example/glaciers",
            "date": "2024-05-01T09:30:00+02:00",
            "keywords": "climate; alps|ice, climate",
            "authors": [{"name": "Ana Lima"}, "Bo Chen"],
            "section": "Science",
            "lang": "en",
        }
    )
    (row,) = rows(data)
    record = row.record
    assert row.line == 1 and row.error is None
    assert record.external_id == "17" and record.title == "Glaciers in retreat"
    assert record.body == "<p>The Alps.</p>" and record.summary == "Short"
    assert record.url == "https://news.example/glaciers" and record.section == "Science" and record.language == "en"
    assert record.published_at == datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
    assert record.tags == ["climate", "alps", "ice"]
    assert record.authors == ["Ana Lima", "Bo Chen"]
    assert record.kind == "article" and record.status == "published"


def test_jsonl_bad_lines_are_row_errors_with_their_line_and_the_rest_is_read():
    data = jsonl(
        {"id": "a", "title": "First"},
        "",
        "{not json",
        [1, 2],
        {"id": "b", "body": "no title"},
        {"id": "c", "title": "Too old", "date": "1850-03-01"},
        {"id": "d", "title": "Too new", "date": "2999-01-01T00:00:00Z"},
        {"id": "e", "title": "Bad date", "date": "yesterday-ish"},
        {"id": "a", "title": "Again"},
        {"id": "f", "title": "Last", "date": 1714555800},
    )
    found = by_line(rows(data))
    assert found[1].title == "First"
    assert 2 not in found  # a blank line is no row
    assert found[3].startswith("Not valid JSON")
    assert found[4] == "Each line must hold one JSON object, not an array."
    assert found[5] == "The title is missing."
    assert found[6] == "The date '1850-03-01' is before 1900."
    assert "more than a day in the future" in found[7]
    assert found[8].startswith("Not a date: 'yesterday-ish'")
    assert found[9] == "Duplicate id in this file, first seen on line 1."
    assert found[10].title == "Last" and found[10].published_at == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def test_row_errors_carry_the_field_the_id_and_the_raw_line():
    (row,) = rows(jsonl({"id": "x-1", "title": "T", "likes": 1, "date": "1800-01-01"}))
    assert row.error.field == "published_at" and row.error.external_id == "x-1"
    assert json.loads(row.error.raw)["id"] == "x-1"


def test_an_id_falls_back_to_the_url_and_ids_are_compared_after_that():
    found = by_line(
        rows(jsonl({"title": "A", "url": "https://x.example/a"}, {"id": "https://x.example/a", "title": "B"}))
    )
    assert found[1].external_id == "https://x.example/a"
    assert found[2] == "Duplicate id in this file, first seen on line 1."


def test_a_column_mapping_applies_to_json_keys_too():
    (row,) = rows(
        jsonl({"hed": "Mapped", "copy": "Text", "title": "ignored"}), column_mapping={"title": "hed", "body": "copy"}
    )
    assert row.record.title == "Mapped" and row.record.body == "Text"


# --- JSON arrays ------------------------------------------------------------------------------


def test_json_array_streams_elements_across_buffer_refills_with_line_numbers():
    big = "x" * (CHUNK * 3)  # one element spans several reads
    items = [{"id": i, "title": f"Item {i}", "body": big if i == 3 else "short"} for i in range(6)]
    text = "[\n" + ",\n".join(json.dumps(item) for item in items) + "\n]\n"
    result = rows(text.encode(), "json")
    assert [r.record.title for r in result] == [f"Item {i}" for i in range(6)]
    assert [r.line for r in result] == [2, 3, 4, 5, 6, 7]
    assert len(result[3].record.body) == CHUNK * 3


def test_json_array_element_that_is_not_an_object_is_a_row_error():
    found = by_line(rows(b'[{"id": 1, "title": "A"},\n "text",\n 12,\n {"id": 2, "title": "B"}]', "json"))
    assert found[1].title == "A" and found[4].title == "B"
    assert found[2] == "Each element must be a JSON object, not a string."
    assert found[3] == "Each element must be a JSON object, not a number."


def test_broken_json_array_keeps_the_rows_before_it_and_names_the_line():
    stream = read_rows(
        format="json",
        target="content",
        stream=io.BytesIO(b'[\n{"id": 1, "title": "A"},\n{"id": 2, "title": "B"},\n{"id": 3, "title": }\n]'),
    )
    assert [next(stream).record.title, next(stream).record.title] == ["A", "B"]
    with pytest.raises(FormatError, match="Not valid JSON at line 4") as caught:
        next(stream)
    assert caught.value.line == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"id": 1}', "must hold an array"),
        (b'[{"id": 1, "title": "A"}', "not closed"),
        (b'[{"id": 1, "title": "A"} {"id": 2}]', "expected ',' or ']'"),
        (b'[{"id": 1, "title": "A"}] trailing', "Unexpected text after the JSON array"),
    ],
)
def test_json_that_is_not_an_array_of_objects_is_a_format_error(data, message):
    with pytest.raises(FormatError, match=message):
        rows(data, "json")


# --- CSV --------------------------------------------------------------------------------------


def test_csv_with_a_column_mapping_defaults_and_a_detected_delimiter():
    data = (
        b"Headline;Copy;Published;Tags;Byline;Slug\n"
        b"Jazz in the city;<p>Three clubs.</p>;2024-02-01;music|nightlife;Ana Lima, Bo Chen;jazz\n"
        b'"A title\nover two lines";Body;;;;x\n'
        b";no title here;2024-02-01;;;y\n"
        b"Extra;b;2024-02-01;;;z;surplus\n"
    )
    found = by_line(rows(data, "csv", column_mapping={"title": "Headline", "body": "Copy", "external_id": "Slug"}))
    first = found[2]
    assert (first.title, first.body, first.external_id) == ("Jazz in the city", "<p>Three clubs.</p>", "jazz")
    assert first.published_at == datetime(2024, 2, 1, tzinfo=UTC)
    assert first.tags == ["music", "nightlife"] and first.authors == ["Ana Lima", "Bo Chen"]
    assert found[3].title == "A title\nover two lines"
    assert found[5] == "The title is missing."  # line numbers count the quoted line break
    assert found[6] == "The row has 7 fields; the header has 6."


def test_csv_mapping_to_a_missing_column_or_no_title_column_is_a_format_error():
    with pytest.raises(
        FormatError, match=r"Mapped columns not in the header: title=headline\. The header has: name_x, b"
    ):
        rows(b"name_x,b\n1,2\n", "csv", column_mapping={"title": "headline"})
    with pytest.raises(FormatError, match="No column for the required field title"):
        rows(b"foo,bar\n1,2\n", "csv")
    with pytest.raises(FormatError, match="no header row"):
        rows(b"\n\n", "csv")


def test_csv_given_delimiter_wins():
    (row,) = rows(b"title|body\nA|B,C\n", "csv", options={"delimiter": "|"})
    assert (row.record.title, row.record.body) == ("A", "B,C")


# --- Encodings --------------------------------------------------------------------------------


def test_windows_1252_csv_is_detected_and_decoded():
    text = "title,body\n" + "".join(
        f'Café crème {i},"Une crème brûlée à la française, déjà servie à l\'hôtel où la façade est belle."\n'
        for i in range(20)
    )
    data = text.encode("cp1252")
    assert detect_encoding(data) == "cp1252"
    result = rows(data, "csv")
    assert result[0].record.title == "Café crème 0"
    assert result[0].record.body.startswith("Une crème brûlée à la française")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_byte_order_marks_are_honoured(encoding):
    data = jsonl({"id": 1, "title": "Ünïcödé ✓"}).decode().encode(encoding)
    (row,) = rows(data)
    assert row.record.title == "Ünïcödé ✓"


def test_a_line_that_does_not_decode_is_a_row_error_and_the_rest_is_read():
    good = jsonl(*({"id": i, "title": f"Ok ✓ {i}"} for i in range(3000)))  # past the detection window
    bad = b'{"id": "bad", "title": "caf\xe9"}\n'
    result = by_line(rows(good + bad + jsonl({"id": "after", "title": "After"})))
    assert result[3001] == "Not valid utf-8 text: byte 0xe9 at character 28."
    assert result[3002].title == "After" and result[1].title == "Ok ✓ 0"


def test_lone_surrogates_and_nul_characters_never_reach_a_record():
    found = by_line(rows(b'{"id": 1, "title": "A\\u0000B"}\n{"id": 2, "title": "\\ud800x"}\n'))
    assert found[1].title == "AB"
    assert found[2] == "The title holds invalid unicode (a lone surrogate)."


# --- Social posts and customer messages -------------------------------------------------------


def test_social_target_reads_platform_handle_and_engagement():
    data = (
        b"post_id,network,username,full_text,retweet_count,favorite_count,replies,impressions,created_at,hashtags\n"
        b'991,X,@newsdesk,Polls close at 8,12,340,5,"10,200",2024-06-01T20:00:00Z,#vote #elections\n'
        b"992,x,newsdesk,,1,1,1,1,2024-06-01T20:00:00Z,\n"
        b"993,x,newsdesk,Hello,-3,1,1,1,2024-06-01T20:00:00Z,\n"
        b"994,x,newsdesk,Hello,1.5,1,1,1,2024-06-01T20:00:00Z,\n"
    )
    found = by_line(rows(data, "csv", "social"))
    post = found[2]
    assert post.kind == "post" and post.external_id == "991" and post.body == "Polls close at 8"
    assert (post.social.platform, post.social.handle) == ("x", "newsdesk")
    assert (post.social.likes, post.social.shares, post.social.comments, post.social.views) == (340, 12, 5, 10200)
    assert post.published_at == datetime(2024, 6, 1, 20, tzinfo=UTC) and post.tags == ["vote", "elections"]
    assert found[3] == "The text is missing."
    assert found[4] == "The shares must be a whole number from 0 up, not '-3'."
    assert found[5] == "The shares must be a whole number from 0 up, not '1.5'."


def test_social_platform_comes_from_the_job_option_when_the_file_has_none():
    (row,) = rows(jsonl({"id": 1, "text": "Hi"}), target="social", options={"platform": "mastodon"})
    assert row.record.social.platform == "mastodon" and row.record.title == ""


def test_customer_target_reads_channel_labels_and_consent():
    data = jsonl(
        {
            "ticket_id": "T-1", "channel": "E-mail", "subject": "Refund", "body": "I want my money back",
            "created_at": "2024-03-02T10:00:00Z", "labels": "billing, refund", "consent": "yes", "source": "zendesk",
        },
        {"ticket_id": "T-2", "channel": "fax", "body": "x", "created_at": "2024-03-02"},
        {"ticket_id": "T-3", "channel": "ticket", "body": "no date"},
        {"ticket_id": "T-4", "channel": "ticket", "body": "x", "created_at": "2024-03-02", "consent": "maybe"},
        {"ticket_id": "T-5", "body": "no channel", "created_at": "2024-03-02"},
    )  # fmt: skip
    found = by_line(rows(data, target="customer"))
    message = found[1]
    assert isinstance(message, CustomerRecord)
    assert (message.channel, message.external_id, message.source, message.subject) == (
        "email",
        "T-1",
        "zendesk",
        "Refund",
    )
    assert message.labels == ["billing", "refund"] and message.training_consent is True
    assert found[2].startswith("Unknown channel 'fax'")
    assert found[3] == "The date is missing."
    assert found[4].startswith("The consent must be yes or no")
    assert found[5].startswith("The channel is missing")
    (defaulted,) = rows(
        jsonl({"id": 1, "text": "hi", "date": "2024-01-01"}), target="customer", options={"channel": "comment"}
    )
    assert defaulted.record.channel == "comment" and defaulted.record.training_consent is False


# --- WordPress exports ------------------------------------------------------------------------

WXR = """<?xml version="1.0" encoding="UTF-8" ?>
<rss version="2.0"
  xmlns:excerpt="http://wordpress.org/export/1.2/excerpt/"
  xmlns:content="http://purl.org/rss/1.0/modules/content/"
  xmlns:wfw="http://wellformedweb.org/CommentAPI/"
  xmlns:dc="http://purl.org/dc/elements/1.1/"
  xmlns:wp="http://wordpress.org/export/1.2/">
<channel>
  <title>Daily Example</title>
  <link>https://daily.example</link>
  <wp:wxr_version>1.2</wp:wxr_version>
  <wp:author><wp:author_id>2</wp:author_id><wp:author_login><![CDATA[jdoe]]></wp:author_login>
    <wp:author_display_name><![CDATA[Jane Doe]]></wp:author_display_name></wp:author>
  <wp:category><wp:term_id>3</wp:term_id><wp:category_nicename>world</wp:category_nicename>
    <wp:cat_name><![CDATA[World]]></wp:cat_name></wp:category>
  <item>
    <title>Floods in the valley</title>
    <link>https://daily.example/2024/03/floods/</link>
    <pubDate>Fri, 01 Mar 2024 09:00:00 +0000</pubDate>
    <dc:creator><![CDATA[jdoe]]></dc:creator>
    <guid isPermaLink="false">https://daily.example/?p=101</guid>
    <description></description>
    <content:encoded><![CDATA[<!-- wp:paragraph --><p>Rivers <b>rose</b>.</p><!-- /wp:paragraph -->]]></content:encoded>
    <excerpt:encoded><![CDATA[Rivers rose.]]></excerpt:encoded>
    <wp:post_id>101</wp:post_id>
    <wp:post_date><![CDATA[2024-03-01 10:00:00]]></wp:post_date>
    <wp:post_date_gmt><![CDATA[2024-03-01 09:00:00]]></wp:post_date_gmt>
    <wp:post_name><![CDATA[floods]]></wp:post_name>
    <wp:status><![CDATA[publish]]></wp:status>
    <wp:post_type><![CDATA[post]]></wp:post_type>
    <category domain="category" nicename="world"><![CDATA[World]]></category>
    <category domain="category" nicename="weather"><![CDATA[Weather]]></category>
    <category domain="post_tag" nicename="rivers"><![CDATA[Rivers]]></category>
    <category domain="post_tag" nicename="climate"><![CDATA[Climate]]></category>
    <wp:postmeta><wp:meta_key><![CDATA[_edit_last]]></wp:meta_key><wp:meta_value>2</wp:meta_value></wp:postmeta>
    <wp:comment><wp:comment_id>5</wp:comment_id><wp:comment_content>Stay safe</wp:comment_content></wp:comment>
  </item>
  <item>
    <title>header.jpg</title>
    <wp:post_id>102</wp:post_id>
    <wp:status><![CDATA[inherit]]></wp:status>
    <wp:post_type><![CDATA[attachment]]></wp:post_type>
  </item>
  <item>
    <title>About us</title>
    <link>https://daily.example/about/</link>
    <dc:creator><![CDATA[someone-else]]></dc:creator>
    <content:encoded><![CDATA[<p>We report.</p>]]></content:encoded>
    <wp:post_id>103</wp:post_id>
    <wp:post_date><![CDATA[2023-01-05 08:00:00]]></wp:post_date>
    <wp:post_date_gmt><![CDATA[0000-00-00 00:00:00]]></wp:post_date_gmt>
    <wp:status><![CDATA[draft]]></wp:status>
    <wp:post_type><![CDATA[page]]></wp:post_type>
  </item>
  <item>
    <title>In the bin</title>
    <wp:post_id>104</wp:post_id>
    <wp:status><![CDATA[trash]]></wp:status>
    <wp:post_type><![CDATA[post]]></wp:post_type>
  </item>
  <item>
    <title></title>
    <wp:post_id>105</wp:post_id>
    <wp:status><![CDATA[publish]]></wp:status>
    <wp:post_type><![CDATA[post]]></wp:post_type>
  </item>
</channel>
</rss>
"""


def test_wxr_posts_and_pages_with_categories_tags_authors_and_dates():
    found = by_line(rows(WXR.encode(), "wxr"))
    post = found[16]
    assert post.external_id == "101" and post.title == "Floods in the valley"
    assert post.body.startswith("<!-- wp:paragraph --><p>Rivers <b>rose</b>.</p><!-- /wp:paragraph -->")
    assert post.summary == "Rivers rose." and post.url == "https://daily.example/2024/03/floods/"
    assert post.published_at == datetime(2024, 3, 1, 9, tzinfo=UTC) and post.status == "published"
    assert post.categories == ["World", "Weather"] and post.section == "World"
    assert post.tags == ["Rivers", "Climate"] and post.authors == ["Jane Doe"]
    page = found[44]
    assert page.status == "draft" and page.authors == ["someone-else"]
    assert page.published_at == datetime(2023, 1, 5, 8, tzinfo=UTC)  # the zero GMT date falls back
    assert found[61] == "The title is missing."
    assert set(found) == {16, 44, 61}  # the attachment and the trashed post are not rows


def test_malformed_wxr_keeps_the_items_before_the_break_and_names_the_line():
    broken = WXR.replace("<title>About us</title>", "<title>About us</titel>")
    stream = read_rows(format="wxr", target="content", stream=io.BytesIO(broken.encode()))
    assert next(stream).record.external_id == "101"
    with pytest.raises(
        FormatError, match=r"The XML is malformed at line 45, .*The 2 items before it were read"
    ) as caught:
        next(stream)
    assert caught.value.line == 45


def test_wxr_does_not_resolve_external_entities(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    doc = WXR.replace(
        '<?xml version="1.0" encoding="UTF-8" ?>',
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    )
    doc = doc.replace("<title>Floods in the valley</title>", "<title>Floods &xxe;</title>")
    post = next(r.record for r in rows(doc.encode(), "wxr") if r.record is not None)
    assert "TOP-SECRET" not in post.title


def test_an_rss_feed_or_another_target_is_not_a_wordpress_export():
    feed = b'<?xml version="1.0"?><rss version="2.0"><channel><item><title>x</title></item></channel></rss>'
    with pytest.raises(FormatError, match="RSS feed, not a WordPress export"):
        rows(feed, "wxr")
    with pytest.raises(FormatError, match="root element is <html>"):
        rows(b"<html><body>hi</body></html>", "wxr")
    with pytest.raises(FormatError, match="import it as content"):
        rows(WXR.encode(), "wxr", target="social")


# --- What a file is ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "fmt", "message"),
    [
        (b"PK\x03\x04\x14\x00rest", "csv", "a ZIP archive"),
        (b"\x1f\x8b\x08\x00", "jsonl", "gzip-compressed"),
        (b"%PDF-1.7\n", "json", "a PDF document"),
        (b"\x89PNG\r\n", "csv", "a PNG image"),
        (b"  \n", "jsonl", "The file is empty"),
        (b"title,body\x00\x01\x02", "csv", "binary file"),
        (b'[{"a": 1}]', "jsonl", "choose the JSON format"),
        (b'{"a": 1}\n', "json", "choose JSON Lines"),
        (b"<rss></rss>", "csv", "not CSV"),
        (b"title,body\n", "wxr", "not XML"),
        (b'<feed xmlns="http://www.w3.org/2005/Atom">', "wxr", "Atom feed"),
    ],
)
def test_sniff_refuses_files_of_another_type(head, fmt, message):
    with pytest.raises(FormatError, match=message):
        sniff(head, format=fmt)


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b'{"title": "x"}\n', "jsonl"),
        (codecs.BOM_UTF8 + b' [{"title": "x"}]', "json"),
        (b"title,body\n", "csv"),
        (WXR.encode()[:2000], "wxr"),
        ('{"title": "é"}'.encode("utf-16"), "jsonl"),
    ],
)
def test_sniff_takes_files_of_their_type(head, fmt):
    sniff(head, format=fmt)


# --- Bounded memory ---------------------------------------------------------------------------

READ_FILE = textwrap.dedent(
    """
    import json, resource, sys, tempfile, django
    django.setup()
    from personalization.ingest.formats import read_rows
    n, fmt = int(sys.argv[1]), sys.argv[2]
    body = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 18 + "</p>"
    with tempfile.TemporaryFile() as f:
        items = ({"id": i, "title": f"Item {i}", "body": body, "tags": ["a"], "date": "2024-01-01"} for i in range(n))
        f.write(b"[\\n" if fmt == "json" else b"")
        for i, item in enumerate(items):
            sep = b",\\n" if fmt == "json" and i else b""
            f.write(sep + json.dumps(item).encode() + (b"\\n" if fmt == "jsonl" else b""))
        f.write(b"\\n]" if fmt == "json" else b"")
        size = f.tell()
        f.seek(0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        count = sum(1 for row in read_rows(format=fmt, target="content", stream=f) if row.record is not None)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": count, "bytes": size, "growth_kb": after - before, "peak_kb": after}))
    """
)


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_reading_stays_in_flat_memory_as_the_file_grows(fmt):
    """10k and 40k rows (about 11 and 45 MB, written without holding them): the peak barely moves."""
    env = {
        "DJANGO_SETTINGS_MODULE": "mediachat.settings",
        "PATH": "/usr/bin:/bin",
        "MEDIACHAT_DATA_DIR": str(ROOT / "var"),
    }

    def measure(n: int) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", READ_FILE, str(n), fmt],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    small, large = measure(10_000), measure(40_000)
    assert (small["rows"], large["rows"]) == (10_000, 40_000)
    assert large["bytes"] - small["bytes"] > 30_000_000
    # Reading everything would add the file's size (tens of MB); streaming adds a few buffers.
    assert large["peak_kb"] - small["peak_kb"] < 8_000, (small, large)
    assert large["growth_kb"] < 12_000, large
