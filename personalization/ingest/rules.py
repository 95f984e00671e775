"""Editors' mapping rules (`MappingRule`): the section and tags of incoming items.

Rules run in priority order (lower first, then oldest). The first matching rule that sets a section
decides the section; every matching rule that adds a tag adds it. An item no section rule matches
keeps the section it names at its source, when a Section has that name or slug (ignoring case).

Fields: "any" (title, summary and body), "title", "body", "url" (as given and canonical), "category"
(the source's categories and tags, each on its own). Match types, all ignoring case: "keyword" (the
word or phrase as whole words: "art" does not match "party"), "regex" (Python syntax, searched
anywhere; `(?-i:...)` makes a part case-sensitive), "prefix" (the field starts with the pattern).
"""

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.utils.text import slugify

from ..models import MappingRule, Section
from .records import ContentRecord

logger = logging.getLogger(__name__)

Field = MappingRule.Field
MatchType = MappingRule.MatchType


@dataclass(frozen=True)
class CompiledRule:
    id: int
    field: str
    matches: Callable[[list[str], list[str]], bool]  # takes the field's texts, and the same in lower case
    section_id: int | None
    tag_id: int | None


class RuleSet:
    """The active rules, compiled once; `apply` them to each record of an import."""

    def __init__(self, rules: list[CompiledRule], sections: dict[str, int]) -> None:
        self.rules = rules
        self.sections = sections  # casefolded name or slug → Section id

    @classmethod
    def load(cls) -> "RuleSet":
        """The active rules by priority, and the sections by name and slug. A rule whose pattern does
        not compile (saved without the admin's validation) is left out with a warning."""
        rules = []
        for rule in MappingRule.objects.filter(is_active=True).order_by("priority", "id"):
            try:
                matches = compile_matcher(rule.match_type, rule.pattern)
            except ValueError as exc:
                logger.warning("mapping rule %s (%s) left out: %s", rule.pk, rule.name, exc)
                continue
            rules.append(CompiledRule(rule.pk, rule.field, matches, rule.section_id, rule.tag_id))
        sections: dict[str, int] = {}
        for section_id, name, slug in Section.objects.order_by("id").values_list("id", "name", "slug"):
            sections.setdefault(name.casefold(), section_id)
            sections.setdefault(slug.casefold(), section_id)
        return cls(rules, sections)

    def apply(self, record: ContentRecord) -> tuple[int | None, list[int]]:
        """(section id, tag ids) for a clean record: the section of the first matching section rule,
        else the Section its source names, else None; the tags of all matching tag rules, in rule
        order, each once."""
        section_id: int | None = None
        tag_ids: list[int] = []
        texts: dict[str, tuple[list[str], list[str]]] = {}
        for rule in self.rules:
            wants_section = rule.section_id is not None and section_id is None
            wants_tag = rule.tag_id is not None and rule.tag_id not in tag_ids
            if not (wants_section or wants_tag):
                continue
            if rule.field not in texts:
                originals = _field_texts(record, rule.field)
                texts[rule.field] = (originals, [text.lower() for text in originals])
            if not rule.matches(*texts[rule.field]):
                continue
            if wants_section:
                section_id = rule.section_id
            if wants_tag:
                tag_ids.append(rule.tag_id)
        if section_id is None and record.section:
            name = record.section.strip().casefold()
            section_id = self.sections.get(name) or self.sections.get(slugify(record.section))
        return section_id, tag_ids


def _field_texts(record: ContentRecord, field: str) -> list[str]:
    if field == Field.TITLE:
        texts = [record.title]
    elif field == Field.BODY:
        texts = [record.body]
    elif field == Field.URL:
        texts = [record.url, record.canonical_url] if record.canonical_url != record.url else [record.url]
    elif field == Field.CATEGORY:
        texts = [*record.categories, *record.tags]
    else:
        texts = [record.title, record.summary, record.body]
    return [text for text in texts if text]


def compile_matcher(match_type: str, pattern: str) -> Callable[[list[str], list[str]], bool]:
    """A function of (texts, the same texts in lower case) telling whether any of them matches;
    ValueError for a pattern that cannot match anything or does not compile."""
    if match_type == MatchType.REGEX:
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return lambda texts, lowered: any(regex.search(text) for text in texts)
    words = pattern.split()
    if not words:
        raise ValueError("the pattern is empty")
    if match_type == MatchType.PREFIX:
        prefix = pattern.strip().lower()
        return lambda texts, lowered: any(text.startswith(prefix) for text in lowered)
    if match_type == MatchType.KEYWORD:
        # Whole words: no letter, digit or underscore just before or after; any spacing between words.
        regex = re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE)
        # A substring test in C rules out most texts before the regex runs.
        needle = max(words, key=len).lower()
        return lambda texts, lowered: any(
            needle in low and regex.search(text) for text, low in zip(texts, lowered, strict=True)
        )
    raise ValueError(f"unknown match type {match_type!r}")
