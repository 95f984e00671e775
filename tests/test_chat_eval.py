"""Chat model evaluation (training/pipelines/evaluate.py): the metric functions on hand-made replies, and
perplexity and batched greedy generation on a tiny GPT-2 initialised in the test."""

import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from training.pipelines.charts import loss_chart
from training.pipelines.chat_format import END, ContextItem, messages_build, tokenizer_train
from training.pipelines.evaluate import (
    HeldoutReply,
    chat_model_evaluate,
    coherence,
    distinct_n,
    groundedness,
    is_grounded,
    perplexity,
    repetition_rate,
    replies_generate,
    words,
)

TEXTS = [
    "The city council approved the new budget for parks and libraries on Monday.",
    "Scientists found water ice near the lunar south pole, the agency said.",
    "Our podcast talks with a chef about seasonal vegetables and markets.",
    "The football club signed a young striker from the second division.",
] * 5
QUESTIONS = ["What about parks?", "Any science news today?", "Food?", "Sport, please, and more"]
ANSWERS = [
    "The council funds parks [#0].",
    "Ice on the moon [#1].",
    "A chef on vegetables [#2].",
    "A new striker [#0].",
]
STEPS = 150


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = tokenizer_train(TEXTS, vocab_size=300, model_max_length=512)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=1, n_head=2,
        bos_token_id=tokenizer.convert_tokens_to_ids(END), eos_token_id=tokenizer.convert_tokens_to_ids(END),
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    # Taught the held-out answers by heart, so that what greedy decoding must give back is known.
    chats = [tokenizer.apply_chat_template([*p, {"role": "assistant", "content": a}], tokenize=False)
             for p, a in zip(prompts(), ANSWERS, strict=True)]  # fmt: skip
    tokenizer.padding_side = "right"
    batch = tokenizer(chats, padding=True, add_special_tokens=False, return_tensors="pt")
    tokenizer.padding_side = "left"
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(STEPS):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A real, if crude, embedder: hashed word counts."""
    out = np.zeros((len(texts), 64))
    for row, text in enumerate(texts):
        for word in words(text):
            out[row, sum(map(ord, word)) % 64] += 1
    return out


# --- metrics on hand-made replies ----------------------------------------------------------------


def test_distinct_n_pools_ngrams_over_replies():
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # (a b) twice, (b c), (b d)
    assert distinct_n(["A, a."], 1) == pytest.approx(3 / 4)  # lower-cased words and punctuation
    assert distinct_n(["", "x"], 2) is None


def test_repetition_rate_is_the_mean_share_of_repeated_ngrams_within_a_reply():
    assert repetition_rate(["the cat the cat"]) == pytest.approx(1 / 3)
    assert repetition_rate(["the cat the cat", "a b c d"]) == pytest.approx(1 / 6)
    assert repetition_rate(["a a a a a"], n=1) == pytest.approx(4 / 5)
    assert repetition_rate(["word", ""]) is None  # no bigram anywhere


def test_coherence_is_the_mean_cosine_of_reply_and_prompt():
    def embed(texts):
        table = {"x": [1.0, 0.0], "y": [0.0, 2.0], "xy": [1.0, 1.0], "": [0.0, 0.0]}
        return np.array([table[t] for t in texts])

    assert coherence(["x", "x"], ["x", "y"], embed) == pytest.approx(0.5)
    assert coherence(["xy"], ["y"], embed) == pytest.approx(1 / math.sqrt(2))
    assert coherence([""], ["x"], embed) == 0.0  # an empty reply scores 0, not NaN
    assert coherence([], [], embed) is None
    with pytest.raises(ValueError):
        coherence(["x"], [], embed)


def test_groundedness_needs_only_context_citations_and_a_relevant_one():
    assert is_grounded("See [#3] and [#5].", [3, 5, 7], [5])
    assert not is_grounded("See [#3].", [3, 5], [5])  # nothing relevant cited
    assert not is_grounded("See [#5] and [#9].", [3, 5], [5])  # [#9] was not in the context
    assert not is_grounded("Nothing cited.", [3, 5], [5])

    def reply(text):
        return HeldoutReply(question="q", context="c", reply=text, context_ids=(1, 2, 3), relevant_ids=(2,))

    metrics = groundedness([reply("[#2]"), reply("[#1]"), reply("[#2] [#8]"), reply("no")])
    assert metrics == {
        "groundedness": 0.25,
        "citing_share": 0.75,
        "ungrounded_citation_share": 0.25,
        "heldout_questions": 4,
    }
    assert groundedness([])["groundedness"] is None


# --- a tiny model ----------------------------------------------------------------------------------


def test_perplexity_is_token_weighted(tiny):
    model, tokenizer = tiny
    texts = [*TEXTS[:3], "Short."]
    got = perplexity(model, tokenizer, texts, batch_size=3)
    end = tokenizer.convert_tokens_to_ids(END)
    nll = tokens = 0
    with torch.inference_mode():
        for text in texts:  # one text at a time, no padding: the reference
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"] + [end]])
            loss = model(input_ids=ids, labels=ids).loss
            nll += float(loss) * (ids.shape[1] - 1)
            tokens += ids.shape[1] - 1
    assert got["val_tokens"] == tokens
    assert got["val_loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert got["val_perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert perplexity(model, tokenizer, [])["val_perplexity"] is None


def test_a_model_that_knows_nothing_has_the_vocabulary_size_as_perplexity(tiny):
    model, tokenizer = tiny
    blank = GPT2LMHeadModel(model.config).eval()
    with torch.no_grad():
        blank.transformer.wte.weight.zero_()  # tied to the output layer: every logit is 0
    assert perplexity(blank, tokenizer, TEXTS[:2])["val_perplexity"] == pytest.approx(len(tokenizer), rel=1e-4)


def prompts() -> list[list[dict]]:
    items = [ContextItem(id=i, title=f"Story {i}", summary=TEXTS[i]) for i in range(4)]
    return [messages_build(question=q, items=items[: n + 1]) for n, q in enumerate(QUESTIONS)]


def test_batched_greedy_replies_equal_one_at_a_time(tiny):
    model, tokenizer = tiny
    batched = replies_generate(model, tokenizer, prompts(), max_new_tokens=12, batch_size=4)
    alone = [replies_generate(model, tokenizer, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts()]
    assert batched == alone
    assert all(END not in reply for reply in batched)
    assert all(len(tokenizer(r, add_special_tokens=False)["input_ids"]) <= 12 for r in batched)


def test_generation_stops_at_the_end_of_turn(tiny):
    model, tokenizer = tiny
    stopper = GPT2LMHeadModel(model.config).eval()
    end = tokenizer.convert_tokens_to_ids(END)
    with torch.no_grad():
        stopper.lm_head.weight = torch.nn.Parameter(torch.zeros_like(stopper.lm_head.weight))
        stopper.lm_head.weight[end] = 1.0  # tied weights untied: END wins every step
        stopper.transformer.ln_f.bias.fill_(1.0)
        stopper.transformer.ln_f.weight.zero_()
    assert replies_generate(stopper, tokenizer, prompts()[:2], max_new_tokens=8) == ["", ""]


def test_chat_model_evaluate_reports_every_figure(tiny):
    model, tokenizer = tiny
    heldout = [{"messages": p, "context_ids": list(range(n + 1)), "relevant_ids": [n]} for n, p in enumerate(prompts())]
    metrics = chat_model_evaluate(
        model, tokenizer, validation_texts=TEXTS[:4], heldout=heldout, embed=bag_of_words, max_new_tokens=24
    )
    assert [s["reply"] for s in metrics["samples"]] == ANSWERS  # learnt by heart
    assert [s["question"] for s in metrics["samples"]] == QUESTIONS
    # The last answer cites [#0], in its context but not the relevant [#3].
    assert metrics["groundedness"] == 0.75 and metrics["citing_share"] == 1.0
    assert metrics["ungrounded_citation_share"] == 0.0 and metrics["heldout_questions"] == 4
    assert metrics["distinct_1"] == pytest.approx(distinct_n(ANSWERS, 1), abs=1e-6)
    assert metrics["distinct_2"] == pytest.approx(distinct_n(ANSWERS, 2), abs=1e-6)
    assert metrics["repetition_rate"] == 0.0
    prompt_texts = [f"{q}\n{p[-2]['content']}" for q, p in zip(QUESTIONS, prompts(), strict=True)]
    assert metrics["coherence"] == pytest.approx(coherence(ANSWERS, prompt_texts, bag_of_words), abs=1e-6)
    assert metrics["val_perplexity"] == pytest.approx(
        perplexity(model, tokenizer, TEXTS[:4])["val_perplexity"], rel=1e-5
    )
    assert metrics["empty_reply_share"] == 0.0 and metrics["mean_reply_words"] > 4
    without = chat_model_evaluate(model, tokenizer, validation_texts=[], heldout=heldout[:1], embed=None)
    assert without["coherence"] is None and without["val_perplexity"] is None and without["groundedness"] == 1.0


# --- the loss curve's geometry ----------------------------------------------------------------------


def test_loss_chart_lays_phases_end_to_end():
    history = {
        "pretrain": {"train": [[10, 4.0], [20, 3.0]], "validation": [[0, 5.0], [20, 3.5]]},
        "sft": {"train": [[10, 2.0]], "validation": [[0, 2.5], [10, 2.0]]},
    }
    chart = loss_chart(history, width=240, height=124)  # plot 186 by 88 px from (44, 12)
    train, validation = chart.lines
    assert train.label == "train loss" and validation.label == "validation loss"
    # x: steps 0..30 over 186 px; y: loss 2..5 over 88 px, upside down.
    assert train.points == "106.0,41.33 168.0,70.67 230.0,100.0"
    assert [(x, y) for x, y, _ in validation.dots] == [(44.0, 12.0), (168.0, 56.0), (168.0, 85.33), (230.0, 100.0)]
    assert validation.dots[0][2] == "pretrain step 0: validation loss 5.000"
    assert [(m.x, m.label) for m in chart.markers] == [(168.0, "sft")]  # SFT starts where pre-training ended
    assert [label.text for label in chart.labels] == ["2.00", "5.00", "0", "step 30"]


def test_loss_chart_of_nothing_is_none():
    assert loss_chart({}) is None
    assert loss_chart({"pretrain": {"train": [[1, float("nan")]], "validation": []}}) is None
    flat = loss_chart({"sft": {"train": [[0, 2.0], [5, 2.0]]}})
    assert flat is not None and len(flat.lines) == 1 and not flat.markers
