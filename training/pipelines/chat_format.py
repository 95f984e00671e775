"""The dialogue format that training and the engine share: special tokens, chat template, context, citations.

A chat model the platform trains is a transformers causal LM saved with its tokenizer in one folder. The
tokenizer carries the special tokens below and `CHAT_TEMPLATE`, so the engine builds every prompt with
`tokenizer.apply_chat_template`, for the platform's model and for a user's own model alike. The template
wraps assistant turns in `{% generation %}` so that `return_assistant_tokens_mask=True` marks the tokens
that supervised fine-tuning learns from, the end-of-turn token included (a model that never learns to
stop generates forever).

Retrieved catalog items reach the model as a `context` turn of lines written by `context_line`; a reply
cites an item as `[#<id>]`. `citations_ground` removes citations of items that were not in the context.

Plain Python: no Django imports.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
CONTEXT = "<|context|>"
END = "<|end|>"  # end of turn, and the end-of-sequence token between pre-training documents
PAD = "<|pad|>"
SPECIAL_TOKENS = [PAD, END, SYSTEM, USER, ASSISTANT, CONTEXT]  # PAD gets id 0, END id 1
ROLES = ("system", "context", "user", "assistant")

# One line of Jinja on purpose: whitespace between tags would become tokens of every prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{%- elif message['role'] in ['system', 'context', 'user'] -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- else -%}"
    "{{ raise_exception('Unknown role: ' ~ message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

DEFAULT_SYSTEM_PROMPT = (
    "You are the assistant of a media site. Answer from the catalog items in the context, cite each item "
    "you mention as [#id], and keep replies short."
)

CITATION_RE = re.compile(r"\[#(\d+)\]")


@dataclass(frozen=True)
class ContextItem:
    """A retrieved catalog item as the model sees it."""

    id: int
    title: str
    summary: str = ""
    date: str = ""  # ISO date of publication, "" when unknown
    section: str = ""
    kind: str = "article"


def context_line(item: ContextItem, *, summary_chars: int = 160) -> str:
    """`[#12] Title (article, Science, 2026-03-12): summary` — one item of the context turn."""
    details = ", ".join(part for part in (item.kind, item.section, item.date) if part)
    summary = " ".join(item.summary.split())
    if len(summary) > summary_chars:
        summary = summary[: summary_chars - 1].rstrip() + "…"
    line = f"[#{item.id}] {item.title}"
    if details:
        line += f" ({details})"
    if summary:
        line += f": {summary}"
    return line


def context_text(items: Sequence[ContextItem], *, summary_chars: int = 160) -> str:
    """The content of a `context` turn: one line per item, or a line saying nothing was found."""
    if not items:
        return "No catalog items match."
    return "\n".join(context_line(item, summary_chars=summary_chars) for item in items)


def citations(text: str) -> list[int]:
    """The item ids `text` cites, in order of first appearance."""
    seen: dict[int, None] = {}
    for match in CITATION_RE.finditer(text):
        seen.setdefault(int(match.group(1)), None)
    return list(seen)


def citations_ground(text: str, allowed_ids: Iterable[int]) -> tuple[str, list[int]]:
    """`text` without citations of items outside `allowed_ids`, and the ids it still cites, in order."""
    allowed = set(allowed_ids)

    def keep(match: re.Match) -> str:
        return match.group(0) if int(match.group(1)) in allowed else ""

    grounded = CITATION_RE.sub(keep, text)
    grounded = re.sub(r"[ \t]{2,}", " ", grounded).replace(" .", ".").replace(" ,", ",").strip()
    return grounded, citations(grounded)


def tokenizer_train(texts: Iterable[str], *, vocab_size: int, model_max_length: int = 1024):
    """A byte-level BPE tokenizer trained on `texts`, with the dialogue special tokens and chat template.

    Returns a `transformers.PreTrainedTokenizerFast`; `save_pretrained` writes it (template included).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT, CONTEXT],
        model_max_length=model_max_length,
        padding_side="left",  # generation pads on the left; training sets right padding where it pads
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def has_context_role(tokenizer) -> bool:
    """Whether `tokenizer` knows the `context` turn (a platform model); a user's model gets it in the system turn."""
    return CONTEXT in (getattr(tokenizer, "additional_special_tokens", None) or []) or CONTEXT in tokenizer.get_vocab()


def messages_build(
    *,
    question: str,
    items: Sequence[ContextItem],
    history: Sequence[tuple[str, str]] = (),
    system: str = DEFAULT_SYSTEM_PROMPT,
    context_role: bool = True,
) -> list[dict]:
    """The messages of one prompt, in the one layout training and the engine share.

    `[system, *history (user/assistant turns, oldest first), context, user]`; the model then writes the
    assistant turn. Without a `context` role (a user's model whose template knows only system, user and
    assistant) the items go at the end of the system turn instead. Turns of the same role in a row (a
    burst of reader messages answered once, a reply that was cut before its first word) become one
    turn, their texts a line apart, as templates that insist on alternating roles need.
    """
    block = context_text(items)
    messages = [{"role": "system", "content": system if context_role else f"{system}\n\nCatalog items:\n{block}"}]
    turns = [*history, *([("context", block)] if context_role else []), ("user", question)]
    for role, text in turns:
        if messages[-1]["role"] == role and role in ("user", "assistant"):
            messages[-1] = {"role": role, "content": f"{messages[-1]['content']}\n{text}"}
        else:
            messages.append({"role": role, "content": text})
    return messages
