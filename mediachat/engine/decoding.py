"""Decoding parameters: the defaults, the bounds a request may move them within, and `generate` kwargs.

Where they come from, weakest first: `settings.MEDIACHAT["DECODING"]`, the default `DecodingProfile`
editors keep in the admin (or the profile a request names), then the fields a `message` frame sets in
`decoding`. Every step goes through `decoding_resolve`, so a value out of bounds is refused with the
field's name wherever it comes from.

Plain Python: no Django imports.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass


class Strategy:
    GREEDY = "greedy"
    SAMPLE = "sample"  # temperature, top-k and top-p sampling
    BEAM = "beam"
    ALL = (GREEDY, SAMPLE, BEAM)


@dataclass(frozen=True)
class DecodingParams:
    strategy: str = Strategy.GREEDY  # greedy, sample or beam
    max_new_tokens: int = 96  # the reply's length limit in tokens; generation also stops at end of turn
    temperature: float = 0.8  # sample: below 1 sharpens the distribution, above 1 flattens it
    top_k: int = 40  # sample: keep the k most likely tokens (0 keeps all)
    top_p: float = 0.95  # sample: keep the smallest set of tokens whose probability reaches p
    repetition_penalty: float = 1.1  # divides the logits of tokens already in the sequence (1 = off)
    num_beams: int = 4  # beam: beams kept per step
    seed: int | None = None  # sample: a seed makes a sampled reply reproducible

    def as_dict(self) -> dict:
        """What a stored reply records as its `decoding`."""
        return dataclasses.asdict(self)


# Inclusive bounds per numeric field; a request outside them gets an `invalid_decoding` error.
BOUNDS: dict[str, tuple[float, float]] = {
    "max_new_tokens": (1, 512),
    "temperature": (0.05, 2.0),
    "top_k": (0, 500),
    "top_p": (0.05, 1.0),
    "repetition_penalty": (1.0, 2.0),
    "num_beams": (2, 8),
    "seed": (0, 2**31 - 1),
}
INTEGER_FIELDS = frozenset({"max_new_tokens", "top_k", "num_beams", "seed"})
FIELDS = frozenset(f.name for f in dataclasses.fields(DecodingParams))


class DecodingError(ValueError):
    """A decoding value that is unknown, of the wrong type or out of bounds; `field` names it."""

    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field = field
        self.detail = detail


def _check(name: str, value: object) -> object:
    if name == "strategy":
        if value not in Strategy.ALL:
            raise DecodingError(name, f"'strategy' must be one of {', '.join(Strategy.ALL)}.")
        return value
    if name == "seed" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodingError(name, f"'{name}' must be a number.")
    if name in INTEGER_FIELDS:
        if isinstance(value, float) and not value.is_integer():
            raise DecodingError(name, f"'{name}' must be a whole number.")
        value = int(value)
    else:
        value = float(value)
    low, high = BOUNDS[name]
    if not low <= value <= high:
        raise DecodingError(name, f"'{name}' must be between {low:g} and {high:g}; got {value:g}.")
    return value


def decoding_resolve(base: DecodingParams, override: Mapping[str, object] | None = None) -> DecodingParams:
    """`base` with the fields of `override` replaced, each checked; raises DecodingError."""
    if not override:
        return base
    if not isinstance(override, Mapping):
        raise DecodingError("decoding", "'decoding' must be an object.")
    unknown = sorted(set(override) - FIELDS)
    if unknown:
        raise DecodingError(unknown[0], f"Unknown decoding field {unknown[0]!r}; known: {', '.join(sorted(FIELDS))}.")
    changes = {name: _check(name, value) for name, value in override.items()}
    return dataclasses.replace(base, **changes)


def generate_kwargs(params: DecodingParams, *, eos_token_id: int | list[int], pad_token_id: int) -> dict:
    """Keyword arguments for `model.generate` that decode as `params` says."""
    kwargs: dict = {
        "max_new_tokens": params.max_new_tokens,
        "repetition_penalty": params.repetition_penalty,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "do_sample": params.strategy == Strategy.SAMPLE,
        "num_beams": params.num_beams if params.strategy == Strategy.BEAM else 1,
    }
    if params.strategy == Strategy.SAMPLE:
        kwargs.update(temperature=params.temperature, top_k=params.top_k or None, top_p=params.top_p)
    else:  # no sampling: none of the sampling flags, which transformers warns about when it ignores them
        kwargs.update(temperature=None, top_k=None, top_p=None)
    return kwargs
