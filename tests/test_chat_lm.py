"""The chat LM chain end to end with the `tiny` preset: it trains, saves, loads with Auto* classes and stops."""

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.pipelines.chat_format import END, PAD
from training.pipelines.chat_model import META_FILE, chat_model_load, chat_model_train
from training.pipelines.lm import preset_get
from training.pipelines.trainer import TrainingCancelled

WORDS = (
    "the city council voted on a new park plan after residents asked for more trees and quiet streets near "
    "river while the museum opened an exhibition of old maps and the football club signed a young striker"
).split()

REPLY = "The council voted on the park plan [#7]."


def texts(n: int, seed: int = 0, words: int = 120) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "." for _ in range(n)]


def dialogue(reply: str = REPLY) -> list[dict]:
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Any news?"},
        {"role": "assistant", "content": "Yes, about the city [#7]."},
        {"role": "context", "content": "[#7] Park plan (article, City)"},
        {"role": "user", "content": "What about the park?"},
        {"role": "assistant", "content": reply},
    ]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def chain(tmp_path: Path, name: str, **kwargs):
    args = {
        "pretrain_texts": texts(25),
        "validation_texts": texts(5, seed=1),
        "dialogues_train": [dialogue()] * 16,
        "dialogues_validation": [dialogue()] * 2,
        "preset": preset_get("tiny", sft={"steps": 120}),
        "out_dir": tmp_path / name / "model",
        "work_dir": tmp_path / name / "work",
        "meta": {"dataset_hash": "abc123", "git_revision": "deadbeef"},
    }
    return chat_model_train(**{**args, **kwargs})


def test_chain_trains_saves_and_the_saved_model_stops_at_end_of_turn(tmp_path):
    calls = []
    result = chain(tmp_path, "a", progress=lambda *args: calls.append(args))
    for phase in ("pretrain", "sft"):
        metrics = result.metrics[phase]
        assert metrics["val_loss"] < metrics["initial_val_loss"]
        assert metrics["tokens_per_s"] > 0
    assert {c[0] for c in calls} == {"tokenizer", "pretrain", "sft", "save"}
    assert [c[1] for c in calls if c[0] == "sft"] == list(range(121))
    assert [r["step"] for r in result.history["pretrain"]] == list(range(61))
    assert [r["val_loss"] is not None for r in result.history["pretrain"]].count(True) == 4  # steps 0, 20, 40, 60

    # Plain Auto* classes load the folder, chat template included.
    model = AutoModelForCausalLM.from_pretrained(result.path)
    tok = AutoTokenizer.from_pretrained(result.path)
    assert model.config.model_type == "llama"
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(END) == 1
    assert model.generation_config.pad_token_id == tok.pad_token_id == tok.convert_tokens_to_ids(PAD) == 0
    prompt = tok.apply_chat_template(dialogue()[:-1], add_generation_prompt=True, return_dict=True, return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=40)
    new = out[0, prompt["input_ids"].shape[1] :].tolist()
    # Greedy decoding reproduces the memorised reply and stops at <|end|> by itself, well before 40 tokens.
    assert new[-1] == 1 and new.count(1) == 1 and len(new) < 40
    assert tok.decode(new, skip_special_tokens=True) == REPLY

    document = json.loads((result.path / META_FILE).read_text())
    assert document["meta"] == {"dataset_hash": "abc123", "git_revision": "deadbeef"}
    assert document["preset"]["name"] == "tiny" and document["train"]["sft"]["steps"] == 120
    assert document["metrics"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert document["history"]["sft"][-1]["step"] == 120
    loaded, loaded_tok, meta = chat_model_load(result.path)
    assert not loaded.training and meta["metrics"] == result.metrics and loaded_tok.chat_template
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model", "work"]  # no temporary folder left

    # Called again with the same inputs, finished phases come back from their checkpoints and only the
    # folder is written again, replacing the old one whole.
    again_calls = []
    again = chain(tmp_path, "a", progress=lambda *args: again_calls.append(args[:2]))
    assert [c for c in again_calls if c[0] in ("pretrain", "sft")] == []
    assert again.history == result.history
    assert json.loads((again.path / META_FILE).read_text())["created_at"] != document["created_at"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model", "work"]


def test_same_seed_same_model_and_cancel_then_resume_equals_uninterrupted(tmp_path):
    fast = {"preset": preset_get("tiny", pretrain={"steps": 30, "eval_every": 10}, sft={"steps": 40})}
    first = chain(tmp_path, "first", **fast)
    second = chain(tmp_path, "second", **fast)
    other_seed = chain(tmp_path, "other", seed=1, **fast)
    weights = AutoModelForCausalLM.from_pretrained(first.path).state_dict()
    again = AutoModelForCausalLM.from_pretrained(second.path).state_dict()
    other = AutoModelForCausalLM.from_pretrained(other_seed.path).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in weights.items())
    assert not all(torch.equal(v, other[k]) for k, v in weights.items())

    # Cancel in the middle of SFT (between two checkpoints), then resume.
    seen = []
    stop_at = ("sft", 27)

    def progress(phase, step, total, metrics):
        seen.append((phase, step))

    with pytest.raises(TrainingCancelled) as cancelled:
        chain(tmp_path, "resumed", progress=progress, should_stop=lambda: seen[-1:] == [stop_at], **fast)
    assert (cancelled.value.phase, cancelled.value.step) == stop_at
    assert not (tmp_path / "resumed" / "model").exists()
    resumed_calls = []
    resumed = chain(tmp_path, "resumed", progress=lambda *a: resumed_calls.append(a[:2]), **fast)
    assert ("pretrain", 1) not in resumed_calls and ("sft", 27) not in resumed_calls and ("sft", 28) in resumed_calls
    resumed_weights = AutoModelForCausalLM.from_pretrained(resumed.path).state_dict()
    assert all(torch.equal(v, resumed_weights[k]) for k, v in weights.items())
    assert resumed.history == first.history
