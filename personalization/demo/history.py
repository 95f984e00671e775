"""Reading histories for the demo readers, simulated from each reader's taste.

Deterministic: each (reader, item) pair draws from its own random stream, so adding an item to the
catalog changes nobody's history of the other items, and a second run writes the same rows.
"""

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from .catalog import DemoItem, DemoReader

WORDS_PER_MINUTE = 230
SOURCES = ("web", "app", "chat")
SOURCE_WEIGHTS = (0.6, 0.3, 0.1)


@dataclass(frozen=True)
class HistoryEvent:
    key: str  # the Interaction's idempotency key
    username: str
    slug: str
    kind: str
    value: float | None
    source: str
    occurred_at: datetime


def affinity(reader: DemoReader, item: DemoItem) -> float:
    """How much `reader` wants `item`: section and tag taste, scaled by the taste for its kind."""
    topical = reader.section_taste.get(item.section, 0.0) + sum(reader.tag_taste.get(t, 0.0) for t in item.tags)
    return min(topical, 1.5) * reader.kind_taste.get(item.kind, 1.0)


def full_seconds(item: DemoItem) -> float:
    """Seconds to read an article at an ordinary pace, or to play a video or podcast through."""
    if item.kind == "article":
        return item.words / WORDS_PER_MINUTE * 60
    return float(item.duration_seconds or 0)


def _stars(rng: random.Random, level: str) -> int | None:
    """A rating, sometimes: good for strong affinity, middling for some, poor for none."""
    if level == "strong" and rng.random() < 0.25:
        return rng.choice((4, 5))
    if level == "medium" and rng.random() < 0.08:
        return rng.choice((3, 4))
    if level == "weak" and rng.random() < 0.3:
        return rng.choice((1, 2))
    return None


def reading_history(
    reader: DemoReader, published: list[tuple[DemoItem, datetime]], *, until: datetime
) -> list[HistoryEvent]:
    """The reader's impressions, clicks, views, dwell, completions, shares and ratings before `until`.

    Strong affinity gives long, complete reads and good ratings; none gives a glance and, now and then,
    a poor rating, so the history carries negative signal as well as positive.
    """
    joined = until - timedelta(days=reader.joined_days_ago)
    events: list[HistoryEvent] = []
    for item, published_at in published:
        rng = random.Random(f"demo:{reader.username}:{item.slug}")
        a = affinity(reader, item)
        level = "strong" if a >= 0.9 else "medium" if a >= 0.3 else "weak"
        # Items already old when the reader joined are less likely to reach them.
        age_at_join = max((joined - published_at).total_seconds() / 86400, 0.0)
        exposure = math.exp(-age_at_join / 30)
        p_seen = reader.activity * {"strong": 0.95, "medium": 0.8, "weak": 0.5}[level] * exposure
        if rng.random() >= p_seen:
            continue
        seen_at = max(published_at, joined) + timedelta(hours=rng.expovariate(1 / 20))
        if seen_at >= until:
            continue
        source = rng.choices(SOURCES, SOURCE_WEIGHTS)[0]
        session: list[tuple[str, datetime, float | None]] = [("impression", seen_at, None)]
        p_click = {"strong": 0.8, "medium": 0.4, "weak": 0.07}[level]
        if rng.random() < p_click:
            clicked_at = seen_at + timedelta(seconds=rng.uniform(5, 120))
            viewed_at = clicked_at + timedelta(seconds=rng.uniform(1, 3))
            low, high = {"strong": (0.7, 1.05), "medium": (0.3, 0.8), "weak": (0.05, 0.3)}[level]
            fraction = rng.uniform(low, high)
            dwell = max(round(full_seconds(item) * min(fraction, 1.0)), 5)
            ended_at = viewed_at + timedelta(seconds=dwell)
            session += [("click", clicked_at, None), ("view", viewed_at, None), ("dwell", ended_at, float(dwell))]
            if fraction >= 0.9:
                session.append(("complete", ended_at, None))
            if level == "strong" and rng.random() < 0.15:
                session.append(("share", ended_at + timedelta(seconds=rng.uniform(10, 60)), None))
            stars = _stars(rng, level)
            if stars is not None:
                session.append(("rate", ended_at + timedelta(seconds=rng.uniform(5, 30)), float(stars)))
        prefix = f"demo:{reader.username}:{item.slug}"
        events += [
            HistoryEvent(f"{prefix}:{kind}", reader.username, item.slug, kind, value, source, at)
            for kind, at, value in session
        ]
    return [e for e in events if e.occurred_at < until]
