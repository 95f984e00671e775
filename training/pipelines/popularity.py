"""A popularity recommender: items scored by time-decayed, kind-weighted reading signals.

Plain Python, no Django: the caller streams `(content_id, kind, value, occurred_at)` rows in and gets
scores out. It is the baseline every personalized recommender has to beat, and the fallback for readers
with no history.
"""

import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime

Row = tuple[int, str, float | None, datetime]

FORMAT = "mediachat.popularity/1"


def default_kind_weights() -> dict[str, float]:
    return {
        "impression": 0.0,
        "click": 1.0,
        "view": 1.0,
        "dwell": 1.0,
        "complete": 2.0,
        "share": 3.0,
        "rate": 2.0,
    }


@dataclass
class PopularityConfig:
    half_life_days: float = 14.0  # a signal this old counts half as much as one from the newest day in the data
    kind_weights: dict[str, float] = field(default_factory=default_kind_weights)  # weight per Interaction.kind
    dwell_cap_s: float = 300.0  # dwell seconds are scaled by this cap, so a long read counts at most its kind weight
    top_k: int = 10  # list length for the hit-rate evaluation
    holdout_fraction: float = 0.2  # the latest share of interactions held out to evaluate on
    chunk_size: int = 1000  # rows between progress checkpoints (where a cancelled run stops)
    step_delay_s: float = 0.0  # pause at each checkpoint; only for tests and demos that watch progress or cancel

    def __post_init__(self) -> None:
        if not self.half_life_days > 0:
            raise ValueError("half_life_days must be positive.")
        if not self.dwell_cap_s > 0:
            raise ValueError("dwell_cap_s must be positive.")
        if not 1 <= self.top_k <= 1000:
            raise ValueError("top_k must be between 1 and 1000.")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError("holdout_fraction must be between 0 and 1 (exclusive).")
        if not 1 <= self.chunk_size <= 1_000_000:
            raise ValueError("chunk_size must be between 1 and 1,000,000.")
        if not 0 <= self.step_delay_s <= 10:
            raise ValueError("step_delay_s must be between 0 and 10 seconds.")
        unknown = set(self.kind_weights) - set(default_kind_weights())
        if unknown:
            raise ValueError(
                f"kind_weights has unknown kinds {sorted(unknown)}; known: {sorted(default_kind_weights())}."
            )

    @classmethod
    def from_parameters(cls, parameters: dict) -> "PopularityConfig":
        """A config from user-supplied parameters; ValueError names what is wrong with them."""
        if not isinstance(parameters, dict):
            raise ValueError("Parameters must be a JSON object.")
        known = {f.name: f for f in fields(cls)}
        unknown = set(parameters) - set(known)
        if unknown:
            raise ValueError(f"Unknown parameters {sorted(unknown)}; known: {sorted(known)}.")
        values: dict = {}
        for name, value in parameters.items():
            if name == "kind_weights":
                if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
                    raise ValueError("kind_weights must map interaction kinds to numbers.")
                values[name] = {**default_kind_weights(), **{k: float(v) for k, v in value.items()}}
            elif name in ("top_k", "chunk_size"):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"{name} must be an integer.")
                values[name] = value
            else:
                if not _is_number(value):
                    raise ValueError(f"{name} must be a number.")
                values[name] = float(value)
        return cls(**values)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class PopularityModel:
    scores: dict[int, float]  # content id -> decayed, weighted signal mass
    rows: int  # rows it was trained on
    data_sha256: str  # hash of those rows, in the order given
    reference_time: datetime | None  # the newest signal; ages are measured from it

    def ranking(self, k: int | None = None) -> list[int]:
        """Content ids, most popular first (ties broken by id, so the order is reproducible)."""
        ranked = sorted((item for item, score in self.scores.items() if score > 0), key=lambda i: (-self.scores[i], i))
        return ranked if k is None else ranked[:k]

    def to_artifact(self, config: PopularityConfig, **extra: object) -> dict:
        """The JSON-serialisable artifact: scores plus everything needed to reproduce them."""
        return {
            "format": FORMAT,
            "config": asdict(config),
            "data": {"rows": self.rows, "sha256": self.data_sha256},
            "reference_time": self.reference_time.isoformat() if self.reference_time else None,
            "scores": {str(item): round(score, 6) for item, score in self.scores.items()},
            "ranking": self.ranking(),
            **extra,
        }


def signal_weight(kind: str, value: float | None, config: PopularityConfig) -> float:
    """How much one interaction says about an item, before time decay."""
    weight = config.kind_weights.get(kind, 0.0)
    if kind == "dwell":
        return weight * min(max(value or 0.0, 0.0), config.dwell_cap_s) / config.dwell_cap_s
    if kind == "rate" and value is not None:
        # Stars 1..5 around a neutral 3: a one-star rating pushes an item down.
        return weight * (min(max(value, 1.0), 5.0) - 3.0) / 2.0
    return weight


def fit(
    rows: Iterable[Row], config: PopularityConfig, *, checkpoint: Callable[[int], None] | None = None
) -> PopularityModel:
    """Score items from `rows` (oldest first is not required).

    Two passes over the buffered rows: the first finds the newest timestamp, the second sums decayed
    weights. `checkpoint(rows_done)` is called every `chunk_size` rows; it may raise to stop training.
    """
    data = list(rows)
    digest = hashlib.sha256()
    for content_id, kind, value, occurred_at in data:
        digest.update(f"{content_id}|{kind}|{value}|{occurred_at.isoformat()}\n".encode())
    reference = max((row[3] for row in data), default=None)
    decay = math.log(2) / (config.half_life_days * 86400.0)
    scores: dict[int, float] = {}
    for done, (content_id, kind, value, occurred_at) in enumerate(data, start=1):
        age_s = (reference - occurred_at).total_seconds()
        scores[content_id] = scores.get(content_id, 0.0) + signal_weight(kind, value, config) * math.exp(-decay * age_s)
        if done % config.chunk_size == 0 or done == len(data):
            if config.step_delay_s:
                time.sleep(config.step_delay_s)
            if checkpoint is not None:
                checkpoint(done)
    return PopularityModel(scores=scores, rows=len(data), data_sha256=digest.hexdigest(), reference_time=reference)


def hit_rate(model: PopularityModel, held_out: Iterable[int], *, k: int, catalog_size: int) -> dict:
    """Hit rate@k of the model's top k on held-out clicks and views, against a random top k.

    The random baseline is its expectation: k items drawn from `catalog_size` contain a given item
    with probability k / catalog_size.
    """
    top = set(model.ranking(k))
    events = hits = 0
    for content_id in held_out:
        events += 1
        hits += content_id in top
    random_rate = min(k, catalog_size) / catalog_size if catalog_size else 0.0
    rate = hits / events if events else None
    return {
        f"hit_rate_at_{k}": round(rate, 4) if rate is not None else None,
        f"random_hit_rate_at_{k}": round(random_rate, 4) if events else None,
        "lift": round(rate / random_rate, 3) if rate is not None and random_rate else None,
        "eval_events": events,
        "catalog_size": catalog_size,
    }
