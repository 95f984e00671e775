"""The prompt of one reply within a token budget: system prompt, dialogue history, retrieved items, question.

The layout is `chat_format.messages_build`'s, rendered by the tokenizer's own chat template, so a
platform model and a user's model are prompted alike (a model whose template has no `context` turn gets
the items at the end of its system turn). When the prompt is over budget, what goes first is what
matters least to the reply:

1. the oldest history turns, a user turn together with the assistant turn that answered it;
2. the items' summaries, shortened step by step, then the lowest-ranked items;
3. last, the end of the question itself: an over-long question is trimmed, never refused.

The system prompt and the current question are never dropped. Plain Python: no Django imports.
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from training.pipelines.chat_format import DEFAULT_SYSTEM_PROMPT, ContextItem, has_context_role, messages_build

SUMMARY_STEPS = (160, 80, 40, 0)  # characters of each item's summary, tried in turn before items are dropped
TRIM_MARK = "…"  # ends a trimmed question, so the model (and a log reader) sees it was cut


class ContextTooSmall(ValueError):
    """The budget cannot hold even the system prompt and an empty question."""


@dataclass(frozen=True)
class BuiltContext:
    input_ids: list[int]  # the prompt, generation prompt included, ready for the model
    messages: list[dict]  # what the chat template rendered
    items: tuple[ContextItem, ...]  # the items the prompt kept, best first: a reply may cite only these
    dropped_turns: int  # history turns left out, oldest first
    summary_chars: int  # the summary length the items kept (0: titles only)
    trimmed_question: bool  # the question had to be cut to fit
    prompt_tokens: int


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """`messages` rendered by the tokenizer's chat template, with the assistant's generation prompt, as ids."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # The template writes any special tokens it wants (a BOS, say); the tokenizer must not add its own.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _history_pairs(history: Sequence) -> list[list[tuple[str, str]]]:
    """History as droppable units, oldest first: a user turn with the replies that followed it."""
    units: list[list[tuple[str, str]]] = []
    for turn in history:
        role, text = (turn.role, turn.text) if hasattr(turn, "role") else turn
        if role not in ("user", "assistant"):
            continue
        if role == "user" or not units:
            units.append([(role, text)])
        else:
            units[-1].append((role, text))
    return units


def _shortened(items: Sequence[ContextItem], summary_chars: int) -> list[ContextItem]:
    """Items with summaries cut to `summary_chars` (chat_format's own cut, applied before it renders them)."""
    out = []
    for item in items:
        summary = " ".join(item.summary.split())
        if len(summary) > summary_chars:
            summary = summary[: summary_chars - 1].rstrip() + TRIM_MARK if summary_chars > 1 else ""
        out.append(dataclasses.replace(item, summary=summary))
    return out


def context_build(
    tokenizer,
    *,
    question: str,
    items: Sequence[ContextItem],
    history: Sequence = (),
    budget_tokens: int,
    system: str = DEFAULT_SYSTEM_PROMPT,
) -> BuiltContext:
    """The prompt for `question` that fits `budget_tokens`, dropping what matters least first.

    `history` holds earlier turns, oldest first, as objects with `role` and `text` (engine `Turn`s) or
    `(role, text)` pairs; only user and assistant turns are used. `items` are ranked best first. Raises
    `ContextTooSmall` when the system prompt alone does not fit.
    """
    context_role = has_context_role(tokenizer)
    units = _history_pairs(history)
    total_turns = sum(len(u) for u in units)
    kept_items = list(items)
    summary_chars = SUMMARY_STEPS[0]

    def build(question_text: str) -> tuple[list[dict], list[int]]:
        turns = [turn for unit in units for turn in unit]
        messages = messages_build(
            question=question_text,
            items=_shortened(kept_items, summary_chars),
            history=turns,
            system=system,
            context_role=context_role,
        )
        return messages, prompt_ids(tokenizer, messages)

    messages, ids = build(question)
    while len(ids) > budget_tokens and units:
        units.pop(0)
        messages, ids = build(question)
    for chars in SUMMARY_STEPS[1:]:
        if len(ids) <= budget_tokens or not kept_items:
            break
        summary_chars = chars
        messages, ids = build(question)
    while len(ids) > budget_tokens and kept_items:
        kept_items.pop()
        messages, ids = build(question)

    trimmed = False
    if len(ids) > budget_tokens:
        messages, ids = _trim_question(tokenizer, question, budget_tokens, build)
        trimmed = True
    return BuiltContext(
        input_ids=ids,
        messages=messages,
        items=tuple(_shortened(kept_items, summary_chars)),
        dropped_turns=total_turns - sum(len(u) for u in units),
        summary_chars=summary_chars,
        trimmed_question=trimmed,
        prompt_tokens=len(ids),
    )


def _trim_question(tokenizer, question: str, budget_tokens: int, build) -> tuple[list[dict], list[int]]:
    """The longest head of `question` (in tokens, marked as cut) whose prompt fits; binary search."""
    messages, ids = build("")
    if len(ids) > budget_tokens:
        raise ContextTooSmall(
            f"A budget of {budget_tokens} tokens cannot hold the system prompt ({len(ids)} tokens with no question)."
        )
    question_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    best = (messages, ids)
    low, high = 1, len(question_ids) - 1  # a head of `mid` tokens; all of them is known not to fit
    while low <= high:
        mid = (low + high) // 2
        # A cut inside a multi-byte character decodes to U+FFFD: drop the broken tail.
        head = tokenizer.decode(question_ids[:mid], skip_special_tokens=True).rstrip("\ufffd").rstrip()
        candidate = build(head + TRIM_MARK if head else "")
        if len(candidate[1]) <= budget_tokens:
            best, low = candidate, mid + 1
        else:
            high = mid - 1
    return best
