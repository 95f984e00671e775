"""Editors' mapping rules: sections and tags of imported items, against the real database."""

import logging

import pytest
from django.core.exceptions import ValidationError

from personalization.ingest.records import ContentRecord
from personalization.ingest.rules import RuleSet
from personalization.models import MappingRule, Section, Tag

pytestmark = pytest.mark.django_db

F = MappingRule.Field
M = MappingRule.MatchType


@pytest.fixture
def catalog():
    sections = {
        name: Section.objects.create(name=name, slug=name.lower().replace(" ", "-"))
        for name in ("Sport", "Culture", "City News", "Politics")
    }
    tags = {name: Tag.objects.create(name=name, slug=name.lower()) for name in ("Cycling", "Budget", "Art", "Wire")}
    return sections, tags


def rule(name, pattern, *, field=F.ANY, match_type=M.KEYWORD, section=None, tag=None, priority=100, active=True):
    return MappingRule.objects.create(
        name=name,
        pattern=pattern,
        field=field,
        match_type=match_type,
        section=section,
        tag=tag,
        priority=priority,
        is_active=active,
    )


def record(**fields) -> ContentRecord:
    defaults = {"external_id": "x", "title": "A quiet day", "summary": "", "body": "Nothing happened."}
    return ContentRecord(**{**defaults, **fields})


def test_first_matching_section_rule_by_priority_wins(catalog):
    sections, _ = catalog
    rule("later", "council", section=sections["Politics"], priority=50)
    rule("first", "bike lanes", section=sections["City News"], priority=10)
    rule("same priority, newer", "bike", section=sections["Sport"], priority=10)
    item = record(title="Council backs new bike lanes")
    assert RuleSet.load().apply(item) == (sections["City News"].id, [])
    # At equal priority the older rule runs first; without it, the newer one decides.
    MappingRule.objects.filter(name="first").update(is_active=False)
    assert RuleSet.load().apply(item) == (sections["Sport"].id, [])


def test_tags_come_from_every_matching_rule_once_in_rule_order(catalog):
    sections, tags = catalog
    rule("budget", "million", tag=tags["Budget"], priority=30)
    rule("cycling", "bike", tag=tags["Cycling"], priority=20)
    rule("cycling again", "lanes", tag=tags["Cycling"], priority=25)
    rule("both", "council", section=sections["Politics"], tag=tags["Wire"], priority=40)
    rule("unmatched", "orchestra", tag=tags["Art"])
    item = record(title="Council backs bike lanes", body="The plan costs twelve million euros.")
    assert RuleSet.load().apply(item) == (
        sections["Politics"].id,
        [tags["Cycling"].id, tags["Budget"].id, tags["Wire"].id],
    )


def test_each_field(catalog):
    _, tags = catalog
    rule("title", "exhibition", field=F.TITLE, tag=tags["Art"])
    rule("body", "million", field=F.BODY, tag=tags["Budget"])
    rule("url", "https://wire.example.com/", field=F.URL, match_type=M.PREFIX, tag=tags["Wire"])
    rule("category", "cycling", field=F.CATEGORY, tag=tags["Cycling"])
    rules = RuleSet.load()
    art, budget, wire, cycling = tags["Art"].id, tags["Budget"].id, tags["Wire"].id, tags["Cycling"].id
    assert rules.apply(record(title="A new exhibition opens")) == (None, [art])
    assert rules.apply(record(body="A new exhibition opens")) == (None, [])  # title rule: the body is not read
    assert rules.apply(record(body="It costs a million.")) == (None, [budget])
    assert rules.apply(record(title="A million visitors")) == (None, [])
    assert rules.apply(record(url="https://wire.example.com/2026/story")) == (None, [wire])
    # The canonical URL counts too: the address as given may differ in case or tracking parameters.
    assert rules.apply(record(url="https://wire.example.com:443/s", canonical_url="https://wire.example.com/s")) == (
        None,
        [wire],
    )
    assert rules.apply(record(url="https://example.com/?from=https://wire.example.com/")) == (None, [])
    assert rules.apply(record(categories=["Sport", "Cycling"])) == (None, [cycling])
    assert rules.apply(record(tags=["cycling"])) == (None, [cycling])
    assert rules.apply(record(title="Cycling news")) == (None, [])  # category rule: the title is not read


def test_any_field_reads_title_summary_and_body(catalog):
    _, tags = catalog
    rule("any", "budget", tag=tags["Budget"])
    rules = RuleSet.load()
    for where in ("title", "summary", "body"):
        assert rules.apply(record(**{where: "The budget was approved"})) == (None, [tags["Budget"].id])
    assert rules.apply(record(url="https://example.com/budget", categories=["budget"])) == (None, [])


def test_keyword_matches_whole_words_and_phrases_ignoring_case(catalog):
    _, tags = catalog
    rule("art", "art", tag=tags["Art"])
    rule("phrase", "bike lane", tag=tags["Cycling"])
    rules = RuleSet.load()
    art, cycling = tags["Art"].id, tags["Cycling"].id
    assert rules.apply(record(title="Modern ART in the park")) == (None, [art])
    assert rules.apply(record(title="Art.")) == (None, [art])
    assert rules.apply(record(title="The party started early")) == (None, [])
    assert rules.apply(record(title="An artist speaks")) == (None, [])
    assert rules.apply(record(body="A new Bike\nLane opens")) == (None, [cycling])
    assert rules.apply(record(body="bike lanes everywhere")) == (None, [])
    assert rules.apply(record(body="e-bike lane")) == (None, [cycling])  # "-" is no letter: the words stand alone


def test_regex_and_prefix(catalog):
    sections, tags = catalog
    rule("regex", r"\b(world|euro) cup\b", match_type=M.REGEX, section=sections["Sport"])
    rule("case-sensitive part", r"(?-i:AFP)\b", match_type=M.REGEX, tag=tags["Wire"])
    rule("prefix", "Review:", field=F.TITLE, match_type=M.PREFIX, section=sections["Culture"], priority=200)
    rules = RuleSet.load()
    assert rules.apply(record(body="Fans celebrate the World Cup win")) == (sections["Sport"].id, [])
    assert rules.apply(record(body="Fans celebrate the world cupcake")) == (None, [])
    assert rules.apply(record(body="Reported by AFP")) == (None, [tags["Wire"].id])
    assert rules.apply(record(body="Reported by afp")) == (None, [])
    assert rules.apply(record(title="review: a quiet opera")) == (sections["Culture"].id, [])
    assert rules.apply(record(title="A review: a quiet opera")) == (None, [])


def test_inactive_rules_are_ignored(catalog):
    sections, tags = catalog
    rule("off", "council", section=sections["Politics"], tag=tags["Wire"], active=False)
    assert RuleSet.load().apply(record(title="Council meets")) == (None, [])


def test_section_named_by_the_source_when_no_rule_sets_one(catalog):
    sections, tags = catalog
    rule("tag only", "council", tag=tags["Wire"])
    rules = RuleSet.load()
    assert rules.apply(record(section="sport")) == (sections["Sport"].id, [])
    assert rules.apply(record(section=" CITY NEWS ")) == (sections["City News"].id, [])
    assert rules.apply(record(section="city-news")) == (sections["City News"].id, [])
    assert rules.apply(record(section="Weather")) == (None, [])
    assert rules.apply(record(title="Council meets", section="Culture")) == (sections["Culture"].id, [tags["Wire"].id])
    rule("section rule", "council", section=sections["Politics"])
    assert RuleSet.load().apply(record(title="Council meets", section="Culture")) == (
        sections["Politics"].id,
        [tags["Wire"].id],
    )


def test_invalid_regex_is_rejected_by_the_form_and_left_out_at_load(catalog, caplog):
    sections, tags = catalog
    bad = MappingRule(name="bad", pattern="(unclosed", match_type=M.REGEX, tag=tags["Wire"])
    with pytest.raises(ValidationError) as excinfo:
        bad.full_clean()
    assert "pattern" in excinfo.value.message_dict
    assert "Not a valid regular expression" in excinfo.value.message_dict["pattern"][0]
    with pytest.raises(ValidationError):
        MappingRule(name="nothing to do", pattern="x").full_clean()
    # Saved past the validation (a script, a fixture): the import goes on without it.
    bad.save()
    rule("good", "council", section=sections["Politics"])
    with caplog.at_level(logging.WARNING, logger="personalization.ingest.rules"):
        rules = RuleSet.load()
    assert "left out" in caplog.text and "bad" in caplog.text
    assert rules.apply(record(title="Council (unclosed")) == (sections["Politics"].id, [])


def test_rules_load_in_two_queries_and_apply_in_none(catalog, django_assert_num_queries):
    sections, tags = catalog
    for i in range(20):
        rule(f"rule {i}", f"word{i}", tag=tags["Wire"], section=sections["Sport"] if i % 2 else None)
    with django_assert_num_queries(2):
        rules = RuleSet.load()
    with django_assert_num_queries(0):
        for i in range(50):
            rules.apply(record(body=f"text with word{i % 25} in it", section="culture"))
