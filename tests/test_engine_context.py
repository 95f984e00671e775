"""The prompt builder and the incremental detokeniser, with real tokenizers trained here.

The platform's tokenizer comes from `chat_format.tokenizer_train` (it knows the `context` turn); the
"user's" tokenizer is a byte-level BPE of its own with a ChatML template that knows only system, user
and assistant. The helpers here are shared with tests/test_engine_lm.py.
"""

import functools

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mediachat.engine.base import Turn
from mediachat.engine.context import ContextTooSmall, context_build, prompt_ids
from mediachat.engine.streaming import IncrementalDecoder
from training.pipelines.chat_format import ContextItem, has_context_role, tokenizer_train

torch.set_num_threads(1)

CORPUS = [
    "Glaciers in retreat: how the climate is reshaping the Alps.",
    "The climate podcast: carbon markets and who pays for emissions.",
    "Jazz in the city: a night in three clubs.",
    "Chips and tariffs: the semiconductor trade, explained.",
    "Read [#9001] and [#9003] for more on that.",
    "la la la la la la la la",
    "What is new on climate? Tell me more like that, anything older, shorter please.",
    "Café crème, naïve façade, 日本語のテキスト, emoji ☕🙂.",
] * 20

CHATML = (
    "{%- for m in messages -%}"
    "{%- if m['role'] not in ['system', 'user', 'assistant'] -%}{{ raise_exception('Unknown role ' ~ m['role']) }}"
    "{%- endif -%}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.cache
def platform_tokenizer() -> PreTrainedTokenizerFast:
    """The platform's dialogue tokenizer, trained on a small catalog-like corpus (cached: about a second)."""
    return tokenizer_train(CORPUS, vocab_size=400, model_max_length=2048)


@functools.cache
def user_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer of another family: ChatML turns, no `context` role, its own special tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=1024,
    )
    tokenizer.chat_template = CHATML
    return tokenizer


ITEMS = [
    ContextItem(1, "Glaciers in retreat", "How the climate reshapes the Alps, valley by valley. " * 4, "2026-03-01"),
    ContextItem(2, "The climate podcast", "Carbon markets: who pays for emissions, and how much. " * 4, "2026-02-20"),
    ContextItem(3, "Jazz in the city", "A night in three clubs, from dusk to dawn. " * 4, "2026-02-11"),
]


def history(pairs: int) -> list[Turn]:
    turns = []
    for i in range(pairs):
        turns.append(Turn("user", f"Question number {i} about glaciers and the climate of the Alps?"))
        turns.append(Turn("assistant", f"Answer number {i}: read [#1] on glaciers in retreat.", cited=(1,)))
    return turns


def size(tokenizer, **kwargs) -> int:
    """Prompt tokens with no budget pressure."""
    return context_build(tokenizer, budget_tokens=100_000, **kwargs).prompt_tokens


def test_everything_fits_and_the_layout_is_chat_formats():
    tokenizer = platform_tokenizer()
    built = context_build(
        tokenizer, question="More on glaciers?", items=ITEMS, history=history(2), budget_tokens=100_000
    )
    roles = [m["role"] for m in built.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "context", "user"]
    assert built.messages[-1]["content"] == "More on glaciers?"
    assert "[#2] The climate podcast" in built.messages[-2]["content"]
    assert built.input_ids == prompt_ids(tokenizer, built.messages)
    assert tokenizer.decode(built.input_ids).endswith("More on glaciers?<|end|><|assistant|>")
    assert (built.dropped_turns, built.trimmed_question, built.summary_chars) == (0, False, 160)
    assert [item.id for item in built.items] == [1, 2, 3]
    assert built.prompt_tokens == len(built.input_ids)


def test_oldest_turns_go_first_in_pairs_and_the_question_stays():
    tokenizer = platform_tokenizer()
    question = "And what about the glaciers now?"
    full = size(tokenizer, question=question, items=ITEMS, history=history(4))
    without_one_pair = size(tokenizer, question=question, items=ITEMS, history=history(4)[2:])
    budget = without_one_pair + (full - without_one_pair) // 2  # room for three pairs, not four

    built = context_build(tokenizer, question=question, items=ITEMS, history=history(4), budget_tokens=budget)

    assert built.prompt_tokens <= budget
    assert built.dropped_turns == 2
    kept = [m["content"] for m in built.messages if m["role"] in ("user", "assistant")]
    assert kept[0].startswith("Question number 1")  # number 0 and its answer went, together
    assert kept[-1] == question
    assert [item.id for item in built.items] == [1, 2, 3]  # items untouched so far
    assert built.summary_chars == 160 and not built.trimmed_question


def test_an_orphan_assistant_turn_at_the_start_goes_alone():
    tokenizer = platform_tokenizer()
    turns = [Turn("assistant", "An answer whose question is gone."), *history(1)]
    full = size(tokenizer, question="Next?", items=[], history=turns)
    built = context_build(tokenizer, question="Next?", items=[], history=turns, budget_tokens=full - 1)
    assert built.dropped_turns == 1
    assert [m["role"] for m in built.messages] == ["system", "user", "assistant", "context", "user"]


def test_then_summaries_shorten_then_the_lowest_ranked_items_go():
    tokenizer = platform_tokenizer()
    question = "Glaciers?"
    no_history = size(tokenizer, question=question, items=ITEMS)
    built = context_build(tokenizer, question=question, items=ITEMS, history=history(3), budget_tokens=no_history - 1)
    assert built.dropped_turns == 6  # every turn went before any item was touched
    assert built.summary_chars < 160 and len(built.items) == 3
    assert all(len(item.summary) <= built.summary_chars for item in built.items)

    titles_only = size(tokenizer, question=question, items=[ContextItem(i.id, i.title, "", i.date) for i in ITEMS])
    built = context_build(tokenizer, question=question, items=ITEMS, budget_tokens=titles_only - 1)
    assert built.summary_chars == 0
    assert [item.id for item in built.items] == [1, 2]  # the third, lowest-ranked, went
    assert not built.trimmed_question and built.messages[-1]["content"] == question
    assert built.prompt_tokens <= titles_only - 1


def test_a_question_over_the_budget_is_trimmed_not_refused():
    tokenizer = platform_tokenizer()
    question = "Tell me everything about glaciers in retreat and the climate of the Alps. " * 30
    empty = size(tokenizer, question="", items=[])
    budget = empty + 40
    built = context_build(tokenizer, question=question, items=ITEMS, history=history(2), budget_tokens=budget)
    assert built.trimmed_question
    assert built.prompt_tokens <= budget
    assert built.prompt_tokens >= budget - 6  # it keeps as much of the question as fits
    asked = built.messages[-1]
    assert asked["role"] == "user" and asked["content"].endswith("…")
    assert question.startswith(asked["content"][:-1].rstrip())
    assert built.items == () and built.dropped_turns == 4


def test_a_trimmed_question_never_ends_in_half_a_character():
    tokenizer = platform_tokenizer()
    question = "日本語のテキスト ☕🙂 " * 40
    budget = size(tokenizer, question="", items=[]) + 25
    built = context_build(tokenizer, question=question, items=[], budget_tokens=budget)
    assert built.trimmed_question and built.prompt_tokens <= budget
    assert "\ufffd" not in built.messages[-1]["content"]


def test_a_budget_below_the_system_prompt_is_an_error():
    tokenizer = platform_tokenizer()
    with pytest.raises(ContextTooSmall):
        context_build(tokenizer, question="Hello?", items=ITEMS, budget_tokens=5)


def test_a_user_model_without_a_context_role_gets_the_items_in_its_system_turn():
    tokenizer = user_tokenizer()
    assert not has_context_role(tokenizer) and has_context_role(platform_tokenizer())
    built = context_build(tokenizer, question="Glaciers?", items=ITEMS, history=history(1), budget_tokens=100_000)
    assert [m["role"] for m in built.messages] == ["system", "user", "assistant", "user"]
    assert "[#1] Glaciers in retreat" in built.messages[0]["content"]
    text = tokenizer.decode(built.input_ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "<|context|>" not in text

    small = context_build(
        tokenizer, question="Glaciers?", items=ITEMS, history=history(1), budget_tokens=built.prompt_tokens - 1
    )
    assert small.dropped_turns == 2 and small.prompt_tokens <= built.prompt_tokens - 1


def test_turns_of_one_role_in_a_row_become_one_for_a_template_that_insists_on_alternation():
    # Mistral-style: after the system turn, user and assistant must alternate, or the template raises.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=user_tokenizer().backend_tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = (
        "{%- for m in messages -%}"
        "{%- if m['role'] != 'system' and (m['role'] == 'user') != (loop.index0 % 2 == 1) -%}"
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}{%- endif -%}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    # A reader's burst (two messages answered once, with the question), after a reply cut in two turns.
    turns = [*history(1), Turn("assistant", "Also: [#2]."), Turn("user", "Glaciers?"), Turn("user", "In the Alps")]
    built = context_build(tokenizer, question="Since March?", items=ITEMS, history=turns, budget_tokens=100_000)
    assert [m["role"] for m in built.messages] == ["system", "user", "assistant", "user"]
    assert built.messages[2]["content"].endswith("glaciers in retreat.\nAlso: [#2].")
    assert built.messages[-1]["content"] == "Glaciers?\nIn the Alps\nSince March?"
    assert tokenizer.decode(built.input_ids).endswith("Since March?<|im_end|>\n<|im_start|>assistant\n")
    # The platform's own layout keeps the context turn between the burst and the question.
    own = context_build(
        platform_tokenizer(), question="Since March?", items=ITEMS, history=turns, budget_tokens=100_000
    )
    assert [m["role"] for m in own.messages][-3:] == ["user", "context", "user"]
    assert own.messages[-3]["content"] == "Glaciers?\nIn the Alps"


@pytest.mark.parametrize("tokenizer_of", [platform_tokenizer, user_tokenizer])
def test_incremental_detokenising_never_breaks_a_character(tokenizer_of):
    tokenizer = tokenizer_of()
    text = "Café crème ☕ and 日本語のテキスト 🙂, read [#9001]."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # single tokens do split characters here
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)
    assert sum(1 for piece in pieces if piece) > 5  # it streams, not all at the end
