"""Parts of the chat LM chain: SFT labels, pre-training packing, the model builder, atomic checkpoints, resume."""

import json
import os
import random
from pathlib import Path

import pytest
import torch

from training.pipelines.chat_format import END, tokenizer_train
from training.pipelines.checkpoints import CHECKPOINT, checkpoint_find, checkpoint_save, seed_all
from training.pipelines.lm import lm_build, preset_get, preset_parameters
from training.pipelines.pretrain import PretrainData, texts_tokenize
from training.pipelines.sft import SftData, sft_example
from training.pipelines.trainer import IGNORE, TrainConfig, TrainingCancelled, lm_loss, train

WORDS = "readers ask about the new park plan the museum maps and the football club striker in our city".split()


def texts(n: int, seed: int = 0, words: int = 80) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "." for _ in range(n)]


MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "context", "content": "[#3] Old maps (article, Culture)"},
    {"role": "user", "content": "Anything on maps?"},
    {"role": "assistant", "content": "The museum shows old maps [#3]."},
    {"role": "user", "content": "Shorter?"},
    {"role": "assistant", "content": "Old maps [#3]."},
]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_train(texts(20) + [m["content"] for m in MESSAGES], vocab_size=300)


def test_sft_labels_cover_assistant_tokens_only_end_included(tokenizer):
    encoded = tokenizer.apply_chat_template(
        MESSAGES, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    example = sft_example(tokenizer, MESSAGES, max_length=1000)
    assert example.input_ids == list(encoded["input_ids"]) and not example.truncated
    labelled = [i for i, label in enumerate(example.labels) if label != IGNORE]
    assert len(labelled) == sum(encoded["assistant_masks"])
    assert all(example.labels[i] == example.input_ids[i] for i in labelled)
    end_id = tokenizer.convert_tokens_to_ids(END)
    assert sum(example.labels[i] == end_id for i in labelled) == 2  # both assistant turns learn to stop
    assert tokenizer.decode([example.input_ids[i] for i in labelled]) == (
        "The museum shows old maps [#3].<|end|>Old maps [#3].<|end|>"
    )

    # The training loss is the mean per-token loss over exactly the assistant positions.
    seed_all(0)
    model = lm_build("tiny", tokenizer)
    ids = torch.tensor([example.input_ids])
    logits = model(input_ids=ids).logits
    loss_sum, count = lm_loss(logits, torch.tensor([example.labels]))
    per_token = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
    assistant = torch.tensor([label != IGNORE for label in example.labels[1:]])
    assert count == len(labelled)
    assert torch.allclose(loss_sum / count, per_token[assistant].mean())
    # A user turn adds no loss: appended after the last reply, it leaves the loss and its token count alone.
    longer = sft_example(tokenizer, [*MESSAGES, {"role": "user", "content": "Thanks, more maps?"}], max_length=1000)
    assert len(longer.input_ids) > len(example.input_ids)
    longer_sum, longer_count = lm_loss(
        model(input_ids=torch.tensor([longer.input_ids])).logits, torch.tensor([longer.labels])
    )
    assert longer_count == count and torch.allclose(longer_sum, loss_sum)


def test_sft_truncation_keeps_the_end_and_batches_pad_on_the_right(tokenizer):
    full = sft_example(tokenizer, MESSAGES, max_length=1000)
    cut = sft_example(tokenizer, MESSAGES, max_length=12)
    assert cut.truncated and cut.input_ids == full.input_ids[-12:] and cut.labels == full.labels[-12:]
    assert tokenizer.decode(cut.input_ids).endswith("Old maps [#3].<|end|>")
    short = [*MESSAGES[:3], {"role": "assistant", "content": "Maps [#3]."}]
    data = SftData.from_dialogues(tokenizer, [MESSAGES, short], [], max_length=1000)
    batch = data.batch(0, 2, seed=0)
    lengths = batch["attention_mask"].sum(1).tolist()
    assert sorted(lengths) == sorted(len(e.input_ids) for e in data.train)
    row = lengths.index(min(lengths))
    assert (batch["input_ids"][row, min(lengths) :] == 0).all() and (
        batch["labels"][row, min(lengths) :] == IGNORE
    ).all()
    # A dialogue with no assistant turn has nothing to learn and is dropped.
    assert len(SftData.from_dialogues(tokenizer, [MESSAGES, MESSAGES[:3]], [], max_length=1000).train) == 1


def test_pretrain_packs_documents_joined_by_end_into_blocks(tokenizer):
    docs = texts(12)
    tokens = texts_tokenize(tokenizer, docs)
    end_id = tokenizer.convert_tokens_to_ids(END)
    assert int((tokens == end_id).sum()) == len(docs) and int(tokens[-1]) == end_id
    data = PretrainData(tokens, texts_tokenize(tokenizer, texts(2, seed=1)), block_size=32)
    batch = data.batch(3, 4, seed=5)
    assert batch["input_ids"].shape == (4, 32) and torch.equal(batch["labels"], batch["input_ids"])
    assert torch.equal(batch["input_ids"], data.batch(3, 4, seed=5)["input_ids"])  # a pure function of (seed, step)
    assert not torch.equal(batch["input_ids"], data.batch(3, 4, seed=6)["input_ids"])
    # Each block is a contiguous slice of the token stream.
    stream = tokens.tolist()
    for block in batch["input_ids"].tolist():
        assert any(stream[i : i + 32] == block for i in range(len(stream) - 31))
    validation = data.validation(batch_size=4, batches=2)
    assert validation and all(b["input_ids"].shape[1] == 32 for b in validation)


def test_lm_build_and_preset_sizes(tokenizer):
    model = lm_build("tiny", tokenizer)
    assert model.config.vocab_size == len(tokenizer) and model.config.tie_word_embeddings
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(END) == 1
    assert model.generation_config.pad_token_id == 0
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert 5_000_000 <= preset_parameters("small") <= 10_000_000
    assert 25_000_000 <= preset_parameters("base") <= 35_000_000
    assert preset_parameters("tiny") < 200_000
    with pytest.raises(ValueError):
        preset_get("huge")


def test_checkpoint_is_atomic_and_leftovers_are_ignored(tmp_path, tokenizer):
    model = lm_build("tiny", tokenizer)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    first = checkpoint_save(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, state={"step": 1})
    checkpoint_save(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, state={"step": 2})
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT] and first == tmp_path / CHECKPOINT
    assert json.loads((first / "state.json").read_text())["step"] == 2

    # A writer that fails half-way leaves the previous checkpoint whole and no temporary folder.
    with pytest.raises(TypeError):
        checkpoint_save(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, state={"step": object()})
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]
    assert json.loads((first / "state.json").read_text())["step"] == 2

    # A crashed writer's temporary folder is never taken for a checkpoint, and is cleaned up.
    leftover = tmp_path / "ckpt.tmp-crashed"
    leftover.mkdir()
    (leftover / "model.pt").write_bytes(b"partial")
    assert checkpoint_find(tmp_path) == tmp_path / CHECKPOINT and not leftover.exists()
    # Died between the two renames of a replacement: the old complete checkpoint is still found.
    os.replace(tmp_path / CHECKPOINT, tmp_path / f"{CHECKPOINT}.old-1234")
    assert checkpoint_find(tmp_path) == tmp_path / f"{CHECKPOINT}.old-1234"


def run(tokenizer, data, config, checkpoint_dir: Path, init_seed: int, **kwargs):
    seed_all(init_seed)
    model = lm_build("tiny", tokenizer)
    return model, train(model, data, config, phase="pretrain", checkpoint_dir=checkpoint_dir, **kwargs)


def test_resume_after_cancel_equals_an_uninterrupted_run(tmp_path, tokenizer):
    data = PretrainData.from_texts(tokenizer, texts(20), texts(3, seed=1), block_size=32)
    config = TrainConfig(
        steps=24, batch_size=4, block_size=32, lr=3e-3, warmup_steps=3, eval_every=8, checkpoint_every=8
    )
    whole, whole_result = run(tokenizer, data, config, tmp_path / "whole", init_seed=0)
    assert whole_result.metrics["val_loss"] < whole_result.metrics["initial_val_loss"]

    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) == 14  # before step 14: 13 steps done, 5 past the last periodic checkpoint

    with pytest.raises(TrainingCancelled) as cancelled:
        run(tokenizer, data, config, tmp_path / "cut", init_seed=0, should_stop=stop)
    assert cancelled.value.step == 13
    # The resumed run starts from another init: everything it ends with must come from the checkpoint.
    resumed, resumed_result = run(tokenizer, data, config, tmp_path / "cut", init_seed=99)
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), resumed.parameters(), strict=True))
    assert resumed_result.history == whole_result.history and resumed_result.steps == 24

    # Same seed, fresh: same weights; another training seed: other weights; resume=False starts over.
    again, _ = run(tokenizer, data, config, tmp_path / "again", init_seed=0)
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), again.parameters(), strict=True))
    other_config = TrainConfig(**{**config.__dict__, "seed": 1})
    other, _ = run(tokenizer, data, other_config, tmp_path / "other", init_seed=0)
    assert not all(torch.equal(p, q) for p, q in zip(whole.parameters(), other.parameters(), strict=True))
    _, restarted_result = run(tokenizer, data, config, tmp_path / "cut", init_seed=0, resume=False)
    assert restarted_result.history[0]["step"] == 0 and len(restarted_result.history) == 25


def test_sft_batches_group_lengths_and_cover_every_dialogue_once_per_epoch(tokenizer):
    rng = random.Random(0)
    dialogues = [
        [
            *MESSAGES[:3],
            {"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60)))},
        ]
        for _ in range(70)
    ]
    data = SftData.from_dialogues(tokenizer, dialogues, [], max_length=1000)
    assert len(data.train) == 70
    batch_size = 4  # groups of 32 examples: 2 full groups (16 batches) and 6 examples left (2 batches)
    epoch = data.epoch_batches(0, batch_size, seed=3)
    assert len(epoch) == 18 and sorted(i for b in epoch for i in b) == list(range(70))
    seen = []
    for step in range(18):
        batch = data.batch(step, batch_size, seed=3)
        seen.append(batch["attention_mask"].sum(1).tolist())
        assert torch.equal(batch["input_ids"], data.batch(step, batch_size, seed=3)["input_ids"])
    assert sorted(n for lengths in seen for n in lengths) == sorted(len(e.input_ids) for e in data.train)
    padded = sum(len(lengths) * max(lengths) for lengths in seen)
    assert padded < 1.15 * sum(len(e.input_ids) for e in data.train)  # random batches pad far more
    # The next epoch is another order of the same dialogues.
    assert data.batch(18, batch_size, seed=3)["input_ids"].shape[0] in (4, 2)
    assert data.epoch_batches(1, batch_size, seed=3) != epoch


def test_chat_model_load_takes_a_model_of_another_architecture(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    from training.pipelines.chat_model import chat_model_load

    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=128)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    model, loaded, meta = chat_model_load(tmp_path / "gpt2")
    assert model.config.model_type == "gpt2" and not model.training and meta == {}
    prompt = loaded.apply_chat_template(MESSAGES[:3], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|assistant|>")
