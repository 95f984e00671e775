"""Choosing each row's next token in one batch, with per-row decoding parameters.

The same steps and order as transformers' `generate` (repetition penalty, then temperature, top-k, top-p, then
sampling or argmax), so a greedy row equals `model.generate`'s greedy output for the same prompt. Sampling rows draw
from their own `torch.Generator`, so a seeded reply does not depend on which other requests share the batch.

Plain Python and torch: no Django imports.
"""

import torch

from .decoding import DecodingParams, Strategy


def repetition_penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """`logits` [B, V] with the tokens in `seen` [B, V] (bool) penalised as transformers does.

    A seen token's logit is divided by the row's `penalty` [B, 1] when positive and multiplied when negative.
    """
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """One row [V] with every logit below the k-th largest set to -inf (0 keeps all)."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """One row [V] keeping the smallest set of tokens whose probability reaches `top_p` (at least one)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_index = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[-1:] = False
    remove = remove_sorted.scatter(0, sorted_index, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def sample_row(logits: torch.Tensor, params: DecodingParams, generator: torch.Generator | None) -> int:
    """Draw one token from a row [V] of (already penalised) logits with temperature, top-k and top-p."""
    scores = logits / params.temperature
    scores = top_k_filter(scores, params.top_k)
    scores = top_p_filter(scores, params.top_p)
    probs = scores.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def next_tokens(
    logits: torch.Tensor,
    *,
    seen: torch.Tensor,
    penalty: torch.Tensor,
    params: list[DecodingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """The next token of each row of `logits` [B, V] (float32), decoded as that row's `params` say."""
    penalised = any(p.repetition_penalty != 1.0 for p in params)
    scores = repetition_penalize(logits, seen, penalty) if penalised else logits
    chosen = scores.argmax(dim=-1).tolist()
    for row, row_params in enumerate(params):
        if row_params.strategy == Strategy.SAMPLE:
            chosen[row] = sample_row(scores[row], row_params, generators[row])
    return chosen
