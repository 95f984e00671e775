"""The written demo catalog, loaded from `data/` and checked before anything touches the database."""

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from django.utils.text import slugify

from .synthetic import READER_PREFIX, SLUG_PREFIX

DATA_DIR = Path(__file__).resolve().parent / "data"
KINDS = ("article", "video", "podcast")
STATUSES = ("draft", "published", "archived")


class DemoDataError(Exception):
    """The data files contradict themselves (an unknown tag, a duplicate slug, a missing field)."""


@dataclass(frozen=True)
class DemoSection:
    slug: str
    name: str
    description: str
    position: int


@dataclass(frozen=True)
class DemoTag:
    slug: str
    name: str


@dataclass(frozen=True)
class DemoAuthor:
    slug: str
    name: str
    bio: str


@dataclass(frozen=True)
class DemoItem:
    slug: str
    kind: str
    title: str
    summary: str
    paragraphs: tuple[str, ...]
    section: str
    tags: tuple[str, ...]
    authors: tuple[str, ...]
    status: str
    days_ago: int | None  # None for drafts: they have no publication date yet
    hour: int
    embargo_days: int | None
    duration_seconds: int | None

    @property
    def body(self) -> str:
        return "\n\n".join(self.paragraphs)

    @property
    def words(self) -> int:
        return sum(len(p.split()) for p in self.paragraphs)


@dataclass(frozen=True)
class DemoReader:
    username: str
    first_name: str
    last_name: str
    about: str
    preferences: dict
    training_consent: bool
    joined_days_ago: int
    activity: float
    section_taste: dict[str, float] = field(default_factory=dict)
    tag_taste: dict[str, float] = field(default_factory=dict)
    kind_taste: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoCatalog:
    newsroom: str
    city: str
    sections: tuple[DemoSection, ...]
    tags: tuple[DemoTag, ...]
    authors: tuple[DemoAuthor, ...]
    items: tuple[DemoItem, ...]
    readers: tuple[DemoReader, ...]


def _read(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DemoDataError(f"{path.name}: {exc}") from exc


def _item(raw: dict, section: str, source: str) -> DemoItem:
    try:
        status = raw.get("status", "published")
        item = DemoItem(
            slug=raw["slug"],
            kind=raw["kind"],
            title=raw["title"],
            summary=raw["summary"],
            paragraphs=tuple(raw["body"]),
            section=section,
            tags=tuple(slugify(t) for t in raw["tags"]),
            authors=tuple(raw["authors"]),
            status=status,
            days_ago=None if status == "draft" else int(raw["days_ago"]),
            hour=int(raw.get("hour", 9)),
            embargo_days=raw.get("embargo_days"),
            duration_seconds=raw.get("duration_seconds"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DemoDataError(f"{source}: item {raw.get('slug', '?')!r} is missing or has a bad {exc}") from exc
    if item.kind not in KINDS or item.status not in STATUSES:
        raise DemoDataError(f"{source}: item {item.slug!r} has kind {item.kind!r} and status {item.status!r}")
    if item.kind != "article" and not item.duration_seconds:
        raise DemoDataError(f"{source}: {item.kind} {item.slug!r} needs duration_seconds")
    return item


def _reader(raw: dict) -> DemoReader:
    taste = raw.get("taste", {})
    return DemoReader(
        username=raw["username"],
        first_name=raw["first_name"],
        last_name=raw["last_name"],
        about=raw.get("about", ""),
        preferences=raw.get("preferences", {}),
        training_consent=bool(raw.get("training_consent", False)),
        joined_days_ago=int(raw["joined_days_ago"]),
        activity=float(raw["activity"]),
        section_taste=dict(taste.get("sections", {})),
        tag_taste=dict(taste.get("tags", {})),
        kind_taste=dict(taste.get("kinds", {})),
    )


@cache
def demo_catalog() -> DemoCatalog:
    """The demo catalog from `data/`: taxonomy.json, readers.json and items/<section slug>.json."""
    taxonomy = _read(DATA_DIR / "taxonomy.json")
    sections = tuple(
        DemoSection(slug=s["slug"], name=s["name"], description=s["description"], position=i)
        for i, s in enumerate(taxonomy["sections"], start=1)
    )
    tags = tuple(DemoTag(slug=slugify(name), name=name) for name in taxonomy["tags"])
    authors = tuple(DemoAuthor(slug=a["slug"], name=a["name"], bio=a["bio"]) for a in taxonomy["authors"])
    items: list[DemoItem] = []
    for section in sections:
        path = DATA_DIR / "items" / f"{section.slug}.json"
        items.extend(_item(raw, section.slug, path.name) for raw in _read(path))
    readers = tuple(_reader(raw) for raw in _read(DATA_DIR / "readers.json"))
    catalog = DemoCatalog(
        newsroom=taxonomy["newsroom"],
        city=taxonomy["city"],
        sections=sections,
        tags=tags,
        authors=authors,
        items=tuple(items),
        readers=readers,
    )
    _check(catalog)
    return catalog


def _check(catalog: DemoCatalog) -> None:
    tag_slugs = {t.slug for t in catalog.tags}
    author_slugs = {a.slug for a in catalog.authors}
    section_slugs = {s.slug for s in catalog.sections}
    seen: set[str] = set()
    for item in catalog.items:
        if item.slug in seen or item.slug.startswith(SLUG_PREFIX):
            raise DemoDataError(f"item slug {item.slug!r} is a duplicate or has the generated prefix {SLUG_PREFIX!r}")
        seen.add(item.slug)
        unknown = (set(item.tags) - tag_slugs) | (set(item.authors) - author_slugs)
        if unknown:
            raise DemoDataError(f"item {item.slug!r} names unknown tags or authors: {sorted(unknown)}")
    for reader in catalog.readers:
        if reader.username.startswith(READER_PREFIX):
            raise DemoDataError(f"reader {reader.username!r} has the generated prefix {READER_PREFIX!r}")
        unknown = (set(reader.section_taste) - section_slugs) | (set(reader.tag_taste) - tag_slugs)
        if unknown:
            raise DemoDataError(f"reader {reader.username!r} has a taste for unknown {sorted(unknown)}")
