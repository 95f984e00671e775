"""A synthetic catalog with planted structure, planned in plain Python (no Django) from one seed.

What is planted, so that benchmarks can check whether a recommender recovers it:
- popularity: item weights follow Zipf's law over a random ranking (`zipf_exponent`);
- taste: each reader has 1-3 favourites (sections or tags) and most of their sessions draw from them;
- time: items are published across `days`; a session follows publication after an exponential delay,
  so interest decays with age; in the last `trend_days`, a few tags trend and draw extra sessions.

The same config gives the same catalog, readers and interactions, row for row.
"""

import bisect
import itertools
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

VOCABULARY_PATH = Path(__file__).resolve().parent / "data" / "vocabulary.json"
SLUG_PREFIX = "gen-"
READER_PREFIX = "gen-reader-"
KEY_PREFIX = "gen:"
WORDS_PER_MINUTE = 230
KINDS = ("article", "video", "podcast")
KIND_WEIGHTS = (0.8, 0.12, 0.08)
FORMAT_TAGS = ("explainer", "interview", "analysis", "investigation")
SOURCES = ("web", "app", "chat")
SOURCE_WEIGHTS = (0.6, 0.3, 0.1)


@dataclass(frozen=True)
class SyntheticConfig:
    items: int  # catalog size
    readers: int  # number of synthetic readers
    interactions: int  # Interaction rows, exactly
    seed: int  # one seed for everything; names carry it, so two seeds never collide
    end: datetime  # aware; nothing is published or happens at or after it
    days: int = 365  # items are published over the `days` before `end`
    zipf_exponent: float = 1.05  # item popularity ∝ 1 / rank ** zipf_exponent
    affinity_share: float = 0.75  # of non-trending sessions, the share drawn from a reader's favourites
    trend_share: float = 0.12  # share of sessions spent on trending tags in the last `trend_days`
    trend_days: int = 21  # how recent "trending" is
    trending_tags: int = 2  # how many tags trend
    mean_delay_days: float = 5.0  # mean wait between publication and a session (recency decay)

    @property
    def prefix(self) -> str:
        return f"{SLUG_PREFIX}s{self.seed}-"

    @property
    def reader_prefix(self) -> str:
        return f"{READER_PREFIX}s{self.seed}-"

    @property
    def key_prefix(self) -> str:
        return f"{KEY_PREFIX}s{self.seed}:"


@dataclass(frozen=True)
class SyntheticAuthor:
    slug: str
    name: str
    bio: str


@dataclass(frozen=True)
class SyntheticItem:
    index: int
    slug: str
    kind: str
    title: str
    summary: str
    body: str
    section: str
    tags: tuple[str, ...]
    authors: tuple[int, ...]  # indices into the plan's authors
    published_at: datetime
    duration_seconds: int | None
    popularity: float  # planted Zipf weight

    @property
    def full_seconds(self) -> float:
        if self.kind == "article":
            return len(self.body.split()) / WORDS_PER_MINUTE * 60
        return float(self.duration_seconds or 0)


@dataclass(frozen=True)
class SyntheticReader:
    index: int
    username: str
    first_name: str
    last_name: str
    sections: dict[str, float]  # favourite sections → weight
    tags: dict[str, float]  # favourite tags → weight
    activity: float  # relative share of sessions
    stated_sections: tuple[str, ...]  # what the reader told us in their profile (may be empty)

    def likes(self, item: SyntheticItem) -> bool:
        return item.section in self.sections or any(t in self.tags for t in item.tags)


@dataclass(frozen=True)
class SyntheticInteraction:
    key: str
    reader: int
    item: int
    kind: str
    value: float | None
    source: str
    occurred_at: datetime


@dataclass
class SyntheticPlan:
    config: SyntheticConfig
    authors: list[SyntheticAuthor]
    items: list[SyntheticItem]
    readers: list[SyntheticReader]
    trending: list[str]
    interactions: list[SyntheticInteraction] = field(default_factory=list)

    def truth(self) -> dict:
        """The planted structure as JSON-ready data: each reader's true affinities, trends, top items."""
        c = self.config
        top = sorted(self.items, key=lambda i: -i.popularity)[: max(1, len(self.items) // 100)]
        return {
            "seed": c.seed,
            "end": c.end.isoformat(),
            "days": c.days,
            "counts": {"items": len(self.items), "readers": len(self.readers), "interactions": c.interactions},
            "zipf_exponent": c.zipf_exponent,
            "affinity_share": c.affinity_share,
            "trending": {"tags": self.trending, "window_days": c.trend_days, "share": c.trend_share},
            "popular_items": [i.slug for i in top],
            "readers": {
                r.username: {
                    "sections": r.sections,
                    "tags": r.tags,
                    "activity": round(r.activity, 4),
                    "stated_sections": list(r.stated_sections),
                }
                for r in self.readers
            },
        }


@cache
def vocabulary() -> dict:
    return json.loads(VOCABULARY_PATH.read_text(encoding="utf-8"))


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, rng: random.Random, vocab: dict, section: dict, topic: str) -> str:
    place = rng.choice(vocab["places"])
    actor = rng.choice(section["actors"])
    return _capitalize(
        template.format(
            topic=topic,
            Topic=_capitalize(topic),
            place=place,
            Place=_capitalize(place),
            actor=actor,
            Actor=_capitalize(actor),
            number=rng.randint(3, 900),
            month=rng.choice(vocab["months"]),
            sentence="{sentence}",
        )
    )


def _text(rng: random.Random, vocab: dict, section: dict, kind: str) -> tuple[str, str, str]:
    """Title, summary and body for one item, assembled from the section's vocabulary."""
    topic = rng.choice(section["topics"])
    title = _fill(rng.choice(vocab["title_templates"]), rng, vocab, section, topic)
    if kind != "article":
        title = f"{_capitalize(kind)}: {title}"
    sentence = _fill(rng.choice(section["sentences"]), rng, vocab, section, topic)
    summary = _fill(rng.choice(vocab["summary_templates"]), rng, vocab, section, topic).replace("{sentence}", sentence)
    paragraphs = []
    for _ in range(rng.randint(3, 5) if kind == "article" else 1):
        picks = rng.sample(section["sentences"], rng.randint(3, 4))
        # Mostly about the item's own topic; now and then a neighbouring one, as real stories are.
        paragraphs.append(
            " ".join(
                _fill(s, rng, vocab, section, topic if rng.random() < 0.7 else rng.choice(section["topics"]))
                for s in picks
            )
        )
    return title, summary, "\n\n".join(paragraphs)


def _cumulative(weights: list[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])


def plan_catalog(config: SyntheticConfig) -> tuple[list[SyntheticAuthor], list[SyntheticItem], list[str]]:
    """Authors, items (with Zipf popularity) and the trending tags."""
    vocab = vocabulary()
    rng = random.Random(f"catalog:{config.seed}")
    sections = vocab["sections"]
    section_slugs = list(sections)
    section_cum = _cumulative([sections[s]["weight"] for s in section_slugs])
    authors = []
    for k in range(max(5, config.items // 200)):
        name = f"{rng.choice(vocab['first_names'])} {rng.choice(vocab['last_names'])}"
        beat = sections[rng.choice(section_slugs)]["topics"][0]
        authors.append(SyntheticAuthor(f"{config.prefix}author-{k:04d}", name, f"Synthetic writer covering {beat}."))
    ranks = list(range(config.items))
    rng.shuffle(ranks)
    span = timedelta(days=config.days) - timedelta(days=1)  # the last day stays free for sessions
    start = config.end - timedelta(days=config.days)
    items = []
    for i in range(config.items):
        slug = section_slugs[_pick(rng, section_cum)]
        section = sections[slug]
        kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
        title, summary, body = _text(rng, vocab, section, kind)
        tags = rng.sample(section["tags"], min(len(section["tags"]), rng.randint(1, 3)))
        if rng.random() < 0.2:
            tags.append(rng.choice(FORMAT_TAGS))
        duration = None
        if kind == "video":
            duration = rng.randint(60, 900)
        elif kind == "podcast":
            duration = rng.randint(900, 3600)
        items.append(
            SyntheticItem(
                index=i,
                slug=f"{config.prefix}{i:06d}",
                kind=kind,
                title=title,
                summary=summary,
                body=body,
                section=slug,
                tags=tuple(dict.fromkeys(tags)),
                authors=tuple(sorted(rng.sample(range(len(authors)), rng.choice((1, 1, 1, 2))))),
                published_at=start + timedelta(seconds=rng.uniform(0, span.total_seconds())),
                duration_seconds=duration,
                popularity=1.0 / (ranks[i] + 1) ** config.zipf_exponent,
            )
        )
    used_tags = sorted({t for item in items for t in item.tags if t not in FORMAT_TAGS})
    trending = sorted(rng.sample(used_tags, min(config.trending_tags, len(used_tags))))
    return authors, items, trending


def plan_readers(config: SyntheticConfig) -> list[SyntheticReader]:
    """Readers with 1-3 favourites each (the first always a section), activity from a Pareto law."""
    vocab = vocabulary()
    rng = random.Random(f"readers:{config.seed}")
    sections = vocab["sections"]
    section_slugs = list(sections)
    all_tags = sorted({t for s in sections.values() for t in s["tags"]})
    readers = []
    for j in range(config.readers):
        favourites: list[tuple[str, str]] = []
        for n in range(rng.choices((1, 2, 3), (0.3, 0.4, 0.3))[0]):
            if n == 0 or rng.random() < 0.7:
                choice = ("section", rng.choice([s for s in section_slugs if ("section", s) not in favourites]))
            else:
                choice = ("tag", rng.choice([t for t in all_tags if ("tag", t) not in favourites]))
            favourites.append(choice)
        raw = [rng.uniform(0.5, 1.5) for _ in favourites]
        weights = [round(w / sum(raw), 4) for w in raw]
        first = favourites[0][1]
        readers.append(
            SyntheticReader(
                index=j,
                username=f"{config.reader_prefix}{j:05d}",
                first_name=rng.choice(vocab["first_names"]),
                last_name=rng.choice(vocab["last_names"]),
                sections={s: w for (k, s), w in zip(favourites, weights, strict=True) if k == "section"},
                tags={t: w for (k, t), w in zip(favourites, weights, strict=True) if k == "tag"},
                activity=min(rng.paretovariate(1.3), 50.0),
                stated_sections=(first,) if rng.random() < 0.5 else (),
            )
        )
    return readers


def plan_interactions(
    config: SyntheticConfig, items: list[SyntheticItem], readers: list[SyntheticReader], trending: list[str]
) -> list[SyntheticInteraction]:
    """Exactly `config.interactions` rows, in sessions: impression, then for some a click, view, dwell,
    completion, share or rating. Every row falls after its item's publication and before `end`."""
    rng = random.Random(f"interactions:{config.seed}")
    if not items or not readers:
        return []
    end = config.end
    reader_cum = _cumulative([r.activity for r in readers])
    pools: dict[tuple[str, str], list[int]] = {}
    for item in items:
        pools.setdefault(("section", item.section), []).append(item.index)
        for tag in item.tags:
            pools.setdefault(("tag", tag), []).append(item.index)
    trend_since = end - timedelta(days=config.trend_days)
    pools[("trend", "")] = [
        i.index for i in items if set(i.tags) & set(trending) and i.published_at >= trend_since - timedelta(days=30)
    ]
    pool_cum = {key: _cumulative([items[i].popularity for i in pool]) for key, pool in pools.items() if pool}
    global_cum = _cumulative([i.popularity for i in items])
    favourite_keys = [
        (
            [("section", s) for s in r.sections] + [("tag", t) for t in r.tags],
            list(r.sections.values()) + list(r.tags.values()),
        )
        for r in readers
    ]
    latest = end - timedelta(hours=2)  # room for a session's later rows before `end`
    rows: list[SyntheticInteraction] = []
    while len(rows) < config.interactions:
        reader = readers[_pick(rng, reader_cum)]
        mode = "global"
        draw = rng.random()
        if draw < config.trend_share and ("trend", "") in pool_cum:
            mode, key = "trend", ("trend", "")
        elif draw < config.trend_share + (1 - config.trend_share) * config.affinity_share:
            keys, weights = favourite_keys[reader.index]
            key = rng.choices(keys, weights)[0]
            mode = "affinity" if key in pool_cum else "global"
        if mode == "global":
            item = items[_pick(rng, global_cum)]
        else:
            item = items[pools[key][_pick(rng, pool_cum[key])]]
        published = item.published_at + timedelta(minutes=1)
        if mode == "trend":
            since = max(published, trend_since)
            at = since + (latest - since) * rng.random()
        else:
            at = published + timedelta(days=rng.expovariate(1 / config.mean_delay_days))
            if at >= latest:
                at = published + (latest - published) * rng.random()
        at = min(at, latest)
        likes = reader.likes(item)
        source = rng.choices(SOURCES, SOURCE_WEIGHTS)[0]
        session = [("impression", None, at)]
        p_click = 0.6 if likes else 0.3 if mode == "trend" else 0.12
        if rng.random() < p_click:
            at += timedelta(seconds=rng.uniform(3, 90))
            session.append(("click", None, at))
            at += timedelta(seconds=rng.uniform(1, 3))
            session.append(("view", None, at))
            fraction = rng.uniform(0.5, 1.05) if likes else rng.uniform(0.05, 0.5)
            dwell = max(round(item.full_seconds * min(fraction, 1.0)), 3)
            at += timedelta(seconds=dwell)
            session.append(("dwell", float(dwell), at))
            if fraction >= 0.9:
                session.append(("complete", None, at))
            if likes and rng.random() < 0.06:
                session.append(("share", None, at + timedelta(seconds=rng.uniform(5, 60))))
            if rng.random() < 0.1:
                stars = rng.choice((4, 5)) if likes else rng.choice((1, 2, 3))
                session.append(("rate", float(stars), at + timedelta(seconds=rng.uniform(5, 30))))
        for kind, value, when in session:
            if len(rows) == config.interactions:
                break
            key_ = f"{config.key_prefix}{len(rows):09d}"  # padded: sorted keys insert in order
            rows.append(SyntheticInteraction(key_, reader.index, item.index, kind, value, source, when))
    return rows


def plan(config: SyntheticConfig) -> SyntheticPlan:
    """The whole synthetic world for `config`."""
    authors, items, trending = plan_catalog(config)
    readers = plan_readers(config)
    result = SyntheticPlan(config=config, authors=authors, items=items, readers=readers, trending=trending)
    result.interactions = plan_interactions(config, items, readers, trending)
    return result
