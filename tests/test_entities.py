"""Entity extraction against a gazetteer rebuilt from a small catalog: every kind with its span, fuzzy titles and
names, synonyms, no overlaps, bad input, and the cached extractor reloading after a rebuild."""

import datetime as dt
import itertools
import json

import pytest

from personalization.models import Tag
from personalization.understanding.entities import (
    Entity,
    EntityExtractor,
    GazetteerEntryData,
    entities_extract,
    extractor_load,
)
from personalization.understanding.gazetteer import gazetteer_rebuild

from .test_gazetteer import make_catalog

NOW = dt.datetime(2026, 1, 7, 15, 30, tzinfo=dt.UTC)  # a Wednesday


@pytest.fixture
def catalog(db) -> dict[str, object]:
    objects = make_catalog()
    gazetteer_rebuild()
    return objects


@pytest.fixture
def extractor(catalog) -> EntityExtractor:
    return extractor_load(check_after_s=0)


def found(extractor: EntityExtractor, text: str) -> list[tuple[str, str, str]]:
    entities = extractor.extract(text, now=NOW)
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text
    return [(e.kind, e.value, e.text) for e in entities]


def test_each_kind_is_found_with_its_span(extractor, catalog):
    text = "Did Lucia Marenco write about Flooding in the Climate Change section since Monday?"
    entities = extractor.extract(text, now=NOW)
    assert [(e.kind, e.value, e.text, e.start, e.end) for e in entities] == [
        ("author", "lucia-marenco", "Lucia Marenco", 4, 17),
        ("tag", "flooding", "Flooding", 30, 38),
        ("section", "climate-change", "Climate Change", 46, 60),
        ("date", "2026-01-05T00:00:00+00:00/2026-01-07T15:30:00+00:00", "since Monday", 69, 81),
    ]
    assert entities[0].ref_id == catalog["lucia"].pk and entities[0].score == 1.0
    assert found(extractor, "more from Mira Okonkwo at the Bayside Marine Institute in Saltmarsh") == [
        ("person", "Mira Okonkwo", "Mira Okonkwo"),
        ("organization", "Bayside Marine Institute", "Bayside Marine Institute"),
        ("place", "Saltmarsh", "Saltmarsh"),
    ]
    entity = extractor.extract("summarize seahorses return to ellery bay", now=NOW)[0]
    assert (entity.kind, entity.value, entity.ref_id, entity.start) == (
        "content",
        "seahorses",
        catalog["seahorses"].pk,
        10,
    )
    assert found(extractor, "anything by achterberg") == [("author", "tomasz-achterberg", "achterberg")]


def test_synonyms_stand_for_their_entity(extractor, catalog):
    assert found(extractor, "AI news and global warming, in the Marsh") == [
        ("tag", "artificial-intelligence", "AI"),
        ("section", "climate-change", "global warming"),
        ("place", "Saltmarsh", "the Marsh"),
    ]
    assert extractor.extract("ai", now=NOW)[0].ref_id == catalog["ai"].pk


def test_fuzzy_titles_and_names_with_a_typo(extractor, catalog):
    [title] = extractor.extract("can you summarise Seahorses retrun to Elery Bay", now=NOW)
    assert (title.kind, title.value, title.text, title.ref_id) == (
        "content",
        "seahorses",
        "Seahorses retrun to Elery Bay",
        catalog["seahorses"].pk,
    )
    assert 0.85 <= title.score < 1
    [author] = extractor.extract("latest from Tomasz Achterbreg", now=NOW)
    assert (author.kind, author.value, author.text) == ("author", "tomasz-achterberg", "Tomasz Achterbreg")
    [place] = extractor.extract("flood defences at Saltmarch", now=NOW)
    assert (place.kind, place.value, place.text) == ("place", "Saltmarsh", "Saltmarch")
    # Words that are merely close to nothing in particular stay unmatched.
    assert extractor.extract("sea horses and robots", now=NOW) == []


def test_the_longest_match_wins_and_spans_never_overlap(extractor, catalog):
    Tag.objects.create(name="Climate", slug="climate")
    Tag.objects.create(name="Tomasz", slug="tomasz")
    gazetteer_rebuild()
    extractor = extractor_load(check_after_s=0)
    assert found(extractor, "climate change by Tomasz Achterberg") == [
        ("section", "climate-change", "climate change"),
        ("author", "tomasz-achterberg", "Tomasz Achterberg"),
    ]
    assert found(extractor, "climate and tomasz") == [("tag", "climate", "climate"), ("tag", "tomasz", "tomasz")]
    texts = [
        "Science: Seahorses return to Ellery Bay, by Tomasz Achterberg, last week in Saltmarsh, AI and flooding",
        "the marsh the marsh themarsh saltmarsh saltmarsh's Saltmarsh-based",
        "in March 2024 and since 3 May, science science science",
    ]
    for text in texts:
        entities = extractor.extract(text, now=NOW)
        assert entities
        for before, after in itertools.pairwise(entities):
            assert before.end <= after.start, (before, after)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "x" * 10_000,
        ("Saltmarsh flooding today " * 500)[:10_000],
        "😀🌊 Saltmarsh 🌊😀",
        "塩沼 のニュース Saltmarsh",
        "Новости Saltmarsh сегодня",
        "<script>alert('Saltmarsh')</script><b>today</b>",
        "Salt\x00marsh\x00today",
        "\ud83d broken surrogate",
        "'; DROP TABLE personalization_gazetteerentry; --",
    ],
)
def test_bad_input_gives_a_result_not_an_exception(extractor, text):
    entities = extractor.extract(text, now=NOW)
    assert isinstance(entities, list)
    assert all(text[e.start : e.end] == e.text for e in entities)
    json.dumps([e.to_dict() for e in entities])
    assert extractor.extract(None, now=NOW) == []  # type: ignore[arg-type]


def test_to_dict_is_what_a_message_stores(extractor):
    [entity] = extractor.extract("in Saltmarsh", now=NOW)
    assert entity.to_dict() == {
        "kind": "place",
        "value": "Saltmarsh",
        "text": "Saltmarsh",
        "start": 3,
        "end": 12,
        "ref_id": None,
        "score": 1.0,
    }
    assert Entity(**entity.to_dict()) == entity


def test_the_extractor_reloads_after_a_rebuild(extractor, catalog):
    assert found(extractor, "anything on Tidal Power?") == []
    Tag.objects.create(name="Tidal Power", slug="tidal-power")
    cached = extractor_load(check_after_s=3600)
    assert cached is extractor  # no rebuild yet: the cached extractor is served without asking again
    gazetteer_rebuild()
    assert extractor_load(check_after_s=3600) is extractor  # checked at most every check_after_s seconds
    reloaded = extractor_load(check_after_s=0)
    assert reloaded is not extractor and reloaded.built_at > extractor.built_at
    assert found(reloaded, "anything on Tidal Power?") == [("tag", "tidal-power", "Tidal Power")]
    assert [e.value for e in entities_extract("Tidal Power", now=NOW)] == ["tidal-power"]


def test_an_extractor_from_entries_needs_no_database():
    extractor = EntityExtractor.from_entries(
        [
            GazetteerEntryData("tag", "us", "united-states"),  # a lone stop word is never matched
            GazetteerEntryData("place", "new york", "New York", None, 3.0),
            GazetteerEntryData("tag", "new york", "new-york", 7, 1.0),  # the same surface: the tag is more specific
            GazetteerEntryData("content", "a tale of two cities", "tale", 9),
        ]
    )
    assert len(extractor) == 2  # surfaces: the stop word is dropped, New York is one
    assert found(extractor, "tell us about New York") == [("tag", "new-york", "New York")]
    assert found(extractor, "A Tale of Two Citys") == [("content", "tale", "A Tale of Two Citys")]
    assert found(EntityExtractor.from_entries([]), "today") == [
        ("date", "2026-01-07T00:00:00+00:00/2026-01-08T00:00:00+00:00", "today")
    ]
