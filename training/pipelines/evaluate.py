"""Evaluation of a chat model: validation perplexity, fluency, coherence and groundedness.

- Perplexity: exp of the mean next-token loss over every predicted token of the validation texts
  (token-weighted, so long texts count by their length).
- Fluency, over the generated replies: distinct-1/2 (unique n-grams over all n-grams, pooled over the
  replies, Li et al. 2016) and the repetition rate (the share of a reply's n-grams that repeat an
  earlier n-gram of the same reply, averaged over replies).
- Coherence: the mean cosine similarity of each reply's embedding to its question and context's.
- Groundedness: on held-out catalog questions, the share of replies that cite only items of their
  context and at least one relevant item.

Replies are generated greedily, in left-padded batches, stopping at the end-of-turn token.

Plain Python and torch: no Django imports. The caller passes the embedder as an `embed` callable.
"""

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .chat_format import END, citations

Embed = Callable[[list[str]], np.ndarray]

WORD_RE = re.compile(r"\w+|[^\w\s]")
SAMPLES_KEPT = 5  # replies stored with the metrics, for people to read


@dataclass(frozen=True)
class HeldoutReply:
    """One held-out question, the reply the model wrote, and what grounds it."""

    question: str
    context: str
    reply: str
    context_ids: tuple[int, ...]
    relevant_ids: tuple[int, ...]


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of `text`: the unit of the fluency metrics."""
    return WORD_RE.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(replies: Sequence[str], n: int) -> float | None:
    """Unique n-grams over all n-grams of `replies`, pooled; None when they hold no n-gram."""
    pooled = [gram for reply in replies for gram in ngrams(words(reply), n)]
    return len(set(pooled)) / len(pooled) if pooled else None


def repetition_rate(replies: Sequence[str], n: int = 2) -> float | None:
    """The mean over replies of the share of a reply's n-grams that repeat an earlier one of it.

    "the cat the cat" has bigrams (the cat) (cat the) (the cat): one of three repeats, 1/3. Replies with
    no n-gram are left out; None when none has one.
    """
    rates = []
    for reply in replies:
        grams = ngrams(words(reply), n)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else None


def coherence(replies: Sequence[str], prompts: Sequence[str], embed: Embed) -> float | None:
    """Mean cosine similarity of each reply to its prompt (question and context), by `embed`'s vectors."""
    if len(replies) != len(prompts):
        raise ValueError("coherence needs one prompt per reply.")
    if not replies:
        return None
    a = np.asarray(embed(list(replies)), dtype=np.float64)
    b = np.asarray(embed(list(prompts)), dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    # An empty reply's vector may be zero: it scores 0, not NaN.
    cosines = np.divide((a * b).sum(axis=1), norms, out=np.zeros(len(replies)), where=norms > 0)
    return float(cosines.mean())


def is_grounded(reply: str, context_ids: Sequence[int], relevant_ids: Sequence[int]) -> bool:
    """Whether `reply` cites only context items and at least one relevant item."""
    cited = set(citations(reply))
    return bool(cited) and cited <= set(context_ids) and bool(cited & set(relevant_ids))


def groundedness(replies: Sequence[HeldoutReply]) -> dict:
    """Share of grounded replies, and the shares that cite anything and that cite outside their context."""
    n = len(replies)
    if not n:
        return {"groundedness": None, "citing_share": None, "ungrounded_citation_share": None, "heldout_questions": 0}
    cited = [set(citations(r.reply)) for r in replies]
    grounded = sum(is_grounded(r.reply, r.context_ids, r.relevant_ids) for r in replies)
    outside = sum(bool(c - set(r.context_ids)) for c, r in zip(cited, replies, strict=True))
    return {
        "groundedness": grounded / n,
        "citing_share": sum(bool(c) for c in cited) / n,
        "ungrounded_citation_share": outside / n,
        "heldout_questions": n,
    }


def _max_positions(model) -> int:
    config = model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1024


def _device(model):
    return next(model.parameters()).device


def perplexity(model, tokenizer, texts: Sequence[str], *, batch_size: int = 8) -> dict:
    """Token-weighted validation loss and perplexity of `model` on `texts`.

    Each text is followed by the end-of-turn token and cut into windows of the model's context length;
    every token after a window's first is predicted once. Returns `val_loss`, `val_perplexity` (None
    without a predictable token) and `val_tokens`.
    """
    import torch

    window = _max_positions(model)
    end_id = tokenizer.convert_tokens_to_ids(END)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
    chunks: list[list[int]] = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [end_id]
        chunks += [ids[i : i + window] for i in range(0, len(ids), window) if len(ids[i : i + window]) > 1]
    chunks.sort(key=len)  # batches of similar lengths waste less padding
    total_nll, total_tokens = 0.0, 0
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(chunks), batch_size):
                batch = chunks[start : start + batch_size]
                width = max(len(c) for c in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, chunk in enumerate(batch):
                    input_ids[row, : len(chunk)] = torch.tensor(chunk)
                    mask[row, : len(chunk)] = 1
                input_ids, mask = input_ids.to(device), mask.to(device)
                logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
                targets = input_ids[:, 1:]
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
                keep = mask[:, 1:].bool()
                total_nll += float(nll[keep].sum())
                total_tokens += int(keep.sum())
    finally:
        model.train(was_training)
    if not total_tokens:
        return {"val_loss": None, "val_perplexity": None, "val_tokens": 0}
    loss = total_nll / total_tokens
    return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 700.0)), "val_tokens": total_tokens}


def replies_generate(
    model, tokenizer, prompts: Sequence[list[dict]], *, max_new_tokens: int = 64, batch_size: int = 8
) -> list[str]:
    """Greedy replies to `prompts` (message lists), in left-padded batches, each stopped at end of turn.

    A prompt longer than the model's context less `max_new_tokens` keeps its last tokens.
    """
    import torch

    end_id = tokenizer.convert_tokens_to_ids(END)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
    budget = max(1, _max_positions(model) - max_new_tokens)
    encoded = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(ids, add_special_tokens=False, verbose=False)["input_ids"]
        encoded.append(ids[-budget:])
    replies: list[str] = [""] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                width = max(len(encoded[i]) for i in rows)
                input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for row, i in enumerate(rows):
                    ids = encoded[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    mask[row, width - len(ids) :] = 1
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    eos_token_id=end_id,
                    pad_token_id=pad_id,
                )
                for row, i in enumerate(rows):
                    new = output[row, width:].tolist()
                    if end_id in new:
                        new = new[: new.index(end_id)]
                    replies[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return replies


def _question_and_context(messages: Sequence[dict]) -> tuple[str, str]:
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    context = next((m["content"] for m in reversed(messages) if m["role"] == "context"), "")
    return question, context


def chat_model_evaluate(
    model,
    tokenizer,
    *,
    validation_texts: Sequence[str],
    heldout: Sequence[dict],
    embed: Embed | None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> dict:
    """Every evaluation figure of a chat model, as a JSON-serialisable dict.

    `heldout` holds `{"messages", "context_ids", "relevant_ids"}` prompts (messages up to the user's
    question). Returns `val_loss`, `val_perplexity`, `val_tokens`, `distinct_1`, `distinct_2`,
    `repetition_rate`, `coherence` (None without `embed`), `groundedness`, `citing_share`,
    `ungrounded_citation_share`, `heldout_questions`, `mean_reply_words`, `empty_reply_share` and
    `samples` (the first few question/reply pairs). Figures over no data are None.
    """
    metrics = perplexity(model, tokenizer, validation_texts, batch_size=batch_size)
    texts = replies_generate(
        model, tokenizer, [h["messages"] for h in heldout], max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    replies = []
    for item, text in zip(heldout, texts, strict=True):
        question, context = _question_and_context(item["messages"])
        replies.append(
            HeldoutReply(
                question=question,
                context=context,
                reply=text,
                context_ids=tuple(item.get("context_ids", ())),
                relevant_ids=tuple(item.get("relevant_ids", ())),
            )
        )
    lengths = [len(words(t)) for t in texts]
    metrics |= {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition_rate": repetition_rate(texts, 2),
        "coherence": (
            coherence(texts, [f"{r.question}\n{r.context}".strip() for r in replies], embed) if embed else None
        ),
        "mean_reply_words": sum(lengths) / len(lengths) if lengths else None,
        "empty_reply_share": sum(1 for n in lengths if not n) / len(lengths) if lengths else None,
        **groundedness(replies),
        "samples": [{"question": r.question, "reply": r.reply} for r in replies[:SAMPLES_KEPT]],
    }
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
