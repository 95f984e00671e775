"""Deduplication at import: exact duplicates by canonical URL and content hash, near duplicates by
MinHash, against the real database."""

import dataclasses
import subprocess
import sys

import pytest
from django.utils.text import slugify

from personalization.ingest import dedup
from personalization.ingest.cleaning import clean_content
from personalization.ingest.dedup import (
    DuplicateFinder,
    Match,
    fingerprint_store,
    fingerprints_backfill,
    fingerprints_store,
    record_signature,
)
from personalization.ingest.records import ContentRecord
from personalization.models import Content, ContentFingerprint

from .conftest import child_env

pytestmark = pytest.mark.django_db

BIKES = [
    "The city council voted on Tuesday to expand the bike lane network by forty kilometres over the next two years.",
    "Supporters said the decision would make the streets safer for children, commuters and delivery riders alike.",
    "Opponents argued that the cost, estimated at twelve million euros, was too high given other priorities.",
    "The mayor said the money would come from the regional transport budget rather than from local taxes.",
    "Construction is expected to begin next spring along the river, where the first segments will open.",
    "Shop owners on the main street asked for loading zones to be kept, and the council promised a consultation.",
    "Cycling groups welcomed the plan but warned that painted lanes without barriers do little for safety.",
    "A final vote on the detailed route is planned for the autumn, after the public consultation has closed.",
]
# The same article after a correction: a figure changed in one sentence, and a note added.
BIKES_CORRECTED = [
    *BIKES[:2],
    "Opponents argued that the cost, estimated at fourteen million euros, was too high given other priorities.",
    *BIKES[3:],
    "Correction: an earlier version of this article gave the wrong estimate of the cost.",
]
ORCHESTRA = [
    "The national orchestra announced its new season on Monday with a programme built around forgotten composers.",
    "The conductor said she wanted audiences to hear works that had not been performed in the capital for decades.",
    "Tickets go on sale next week, with reduced prices for students and a series of free concerts in the parks.",
    "The season opens in September with a symphony written in 1911 and lost for most of the twentieth century.",
    "Critics praised the choice, although some regular subscribers said they would miss the familiar repertoire.",
    "The orchestra will also tour three neighbouring countries in the spring, its first tour since the pandemic.",
]


def make(external_id: str, sentences: list[str], **fields) -> ContentRecord:
    title = fields.pop("title", "Council backs forty kilometres of new bike lanes")
    body = "".join(f"<p>{sentence}</p>" for sentence in sentences)
    return clean_content(ContentRecord(external_id=external_id, title=title, body=body, language="en", **fields))


def write(record: ContentRecord, *, fingerprint: bool = True) -> int:
    """What the importer's writer does with a new record: create the item, then its fingerprint."""
    content = Content.objects.create(
        title=record.title,
        slug=slugify(f"{record.title}-{record.external_id}")[:300],
        body=record.body,
        summary=record.summary,
        source="test",
        external_id=record.external_id,
        canonical_url=record.canonical_url,
        content_hash=record.content_hash,
    )
    if fingerprint:
        fingerprint_store(content_id=content.id, record=record)
    return content.id


def test_exact_duplicate_by_content_hash():
    original = make("a-1", BIKES, url="https://news.example.com/bikes")
    item_id = write(original)
    # The same text under another address, in other markup and spacing.
    copy = clean_content(
        ContentRecord(
            external_id="syndicated-9",
            title="  Council backs forty kilometres of new <b>bike lanes</b> ",
            body="\n\n".join(BIKES),
            url="https://partner.example.org/story/77",
        )
    )
    assert copy.content_hash == original.content_hash
    finder = DuplicateFinder()
    assert finder.find(copy) == item_id
    assert finder.match(copy) == Match("hash", content_id=item_id)


def test_exact_duplicate_by_canonical_url():
    item_id = write(make("a-1", BIKES, url="https://news.example.com/city/bikes?id=3&page=1"))
    other_text = make("feed-2", ORCHESTRA, url="https://NEWS.example.com/city/bikes/?page=1&utm_source=rss&id=3#top")
    assert DuplicateFinder().match(other_text) == Match("url", content_id=item_id)


def test_near_duplicate_found_and_unrelated_article_not():
    item_id = write(make("a-1", BIKES, url="https://news.example.com/bikes"))
    write(make("o-1", ORCHESTRA, title="Orchestra revives forgotten composers", url="https://news.example.com/music"))
    corrected = make("a-1-corrected", BIKES_CORRECTED, url="https://other.example.com/bikes-corrected")
    unrelated = make(
        "o-2",
        [*ORCHESTRA[:3], *BIKES[:1], "The programme will be broadcast live on national radio."],
        title="Orchestra season",
    )
    assert corrected.content_hash != make("a-1", BIKES).content_hash
    finder = DuplicateFinder()
    match = finder.match(corrected)
    assert match.reason == "near" and match.content_id == item_id
    assert 0.8 <= match.similarity < 1.0
    assert finder.find(unrelated) is None


def test_candidates_below_the_threshold_are_no_match():
    item_id = write(make("a-1", BIKES))
    corrected = make("a-2", BIKES_CORRECTED)
    strict = DuplicateFinder(threshold=0.95)
    assert strict.find(corrected) is None
    assert item_id in strict._lsh.query(dedup._lean(record_signature(corrected)))  # a candidate, refused
    assert DuplicateFinder(threshold=0.8).find(corrected) == item_id


def test_index_loads_from_stored_fingerprints_with_bounded_queries(django_assert_max_num_queries):
    ids = [write(make(f"a-{i}", [f"Story number {i} of the day.", *BIKES], title=f"Story {i}")) for i in range(3)]
    corrected = make("corrected", ["Story number 1 of the day.", *BIKES_CORRECTED], title="Story 1")
    records = [make(f"new-{i}", [f"Item {i}: ", *ORCHESTRA], title=f"New {i}") for i in range(120)]
    records.append(corrected)
    finder = DuplicateFinder()
    # Two exact lookups, one read of the fingerprints, one check that the near match still exists.
    with django_assert_max_num_queries(4):
        found = finder.find_many(records)
    assert found[-1] == ids[1]
    # The 120 orchestra records repeat each other (near duplicates within the batch), none repeats the catalog.
    assert found[:-1] == [None] * 120


def test_duplicates_inside_one_batch_are_found_through_add():
    finder = DuplicateFinder()
    first = make("a-1", BIKES, url="https://news.example.com/bikes")
    assert finder.find(first) is None  # loads the (empty) index
    first_id = write(first, fingerprint=False)  # not yet fingerprinted, as within a batch
    corrected = make("a-2", BIKES_CORRECTED, url="https://news.example.com/bikes-2")
    assert finder.find(corrected) is None
    finder.add(first_id, first)
    match = finder.match(corrected)
    assert match.reason == "near" and match.content_id == first_id
    exact = dataclasses.replace(first, external_id="a-3", canonical_url="")
    assert finder.match(exact) == Match("hash", content_id=first_id)


def test_match_many_points_at_earlier_records_of_the_same_batch():
    bikes = make("a-1", BIKES, url="https://news.example.com/bikes")
    same_url = make("a-1-again", ORCHESTRA, url="https://news.example.com/bikes?utm_campaign=x")
    same_text = make("a-1-copy", BIKES, url="https://other.example.com/bikes")
    corrected = make("a-1-fix", BIKES_CORRECTED)
    unrelated = make("o-1", ORCHESTRA, title="Orchestra season")
    batch = [bikes, same_url, same_text, corrected, unrelated]
    finder = DuplicateFinder()
    matches = finder.match_many(batch)
    assert matches[0] is None and matches[4] is None
    assert matches[1] == Match("url", batch_index=0)
    assert matches[2] == Match("hash", batch_index=0)
    assert matches[3].reason == "near" and matches[3].batch_index == 0 and matches[3].content_id is None
    assert finder.find_many(batch) == [None] * 5


def test_short_texts_match_exactly_only():
    post = make("p-1", ["Goal! United lead 1-0 against City after twelve minutes at the stadium tonight."], title="")
    item_id = write(post)
    assert record_signature(post) is None
    assert not ContentFingerprint.objects.filter(content_id=item_id).exists()
    next_goal = make(
        "p-2", ["Goal! United lead 2-0 against City after twelve minutes at the stadium tonight."], title=""
    )
    finder = DuplicateFinder()
    assert finder.find(next_goal) is None
    assert finder.find(dataclasses.replace(post, external_id="p-3", canonical_url="")) == item_id


def test_window_bounds_the_index():
    finder = DuplicateFinder(window=2)
    stories = [
        make(f"s-{i}", [f"Edition {i}."] + (BIKES if i % 2 else ORCHESTRA), title=f"Story {i}") for i in range(4)
    ]
    ids = [write(story, fingerprint=False) for story in stories]
    for item_id, story in zip(ids, stories, strict=True):
        finder.add(item_id, story)
    assert len(finder._signatures) == len(finder._order) == 2
    # Story 0 (orchestra) was evicted: a near copy of it now finds story 2, its newest look-alike.
    near_zero = make("n-0", ["Edition zero.", *ORCHESTRA], title="Story 0")
    assert finder.find(near_zero) == ids[2]
    # A fresh finder loads only the most recent fingerprints.
    fingerprints_store(items=list(zip(ids, stories, strict=True)))
    fresh = DuplicateFinder(window=1)
    assert fresh.find(make("n-3", ["Edition three.", *BIKES], title="Story 3")) == ids[3]
    assert list(fresh._signatures) == [ids[3]]


def test_deleted_item_is_no_match():
    item_id = write(make("a-1", BIKES))
    finder = DuplicateFinder()
    corrected = make("a-2", BIKES_CORRECTED)
    assert finder.find(corrected) == item_id
    Content.objects.filter(id=item_id).delete()
    assert finder.find(corrected) is None
    assert item_id not in finder._signatures


def test_fingerprints_are_replaced_and_dropped_with_the_text():
    record = make("a-1", BIKES)
    item_id = write(record)
    before = bytes(ContentFingerprint.objects.get(content_id=item_id).signature)
    assert fingerprints_store(items=[(item_id, make("a-1", ORCHESTRA))]) == 1
    after = ContentFingerprint.objects.get(content_id=item_id)
    assert bytes(after.signature) != before and after.num_perm == dedup.NUM_PERM
    assert len(bytes(after.signature)) == 4 * dedup.NUM_PERM
    assert fingerprints_store(items=[(item_id, make("a-1", ["Now a short text."]))]) == 0
    assert not ContentFingerprint.objects.filter(content_id=item_id).exists()


def test_backfill_fingerprints_items_written_without_one():
    long_id = write(make("a-1", BIKES), fingerprint=False)
    write(make("p-1", ["Too short to fingerprint."]), fingerprint=False)
    assert fingerprints_backfill(batch_size=1) == 1
    assert list(ContentFingerprint.objects.values_list("content_id", flat=True)) == [long_id]
    assert DuplicateFinder().find(make("a-2", BIKES_CORRECTED)) == long_id


def test_signature_ignores_case_and_markup():
    a = make("a", BIKES)
    b = clean_content(ContentRecord(external_id="b", title=a.title.upper(), body="\n".join(BIKES)))
    assert (record_signature(a) == record_signature(b)).all()
    assert record_signature(a).dtype.str == "<u4" and len(record_signature(a)) == dedup.NUM_PERM


def test_signature_is_the_same_in_another_process():
    """Stored signatures are compared across workers: no per-process hash seed may leak in."""
    record = make("a", BIKES)
    code = (
        "import django, sys; django.setup(); from personalization.ingest.dedup import text_signature; "
        "print(text_signature(sys.argv[1], sys.argv[2]).tobytes().hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, record.title, record.body],
        env=child_env(PYTHONHASHSEED="12345", DJANGO_SETTINGS_MODULE="mediachat.settings"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == record_signature(record).tobytes().hex()


def test_threshold_is_checked():
    with pytest.raises(ValueError):
        DuplicateFinder(threshold=0)
