"""model_load on tiny models saved by the test: the platform's GPT-2 layout, another architecture, and bad folders."""

import random
import threading

import pytest
import torch

from mediachat.engine.batching import BatchScheduler
from mediachat.engine.decoding import DecodingParams
from mediachat.engine.loading import model_load
from training.pipelines.chat_format import tokenizer_train


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    words = "the a news story about city sport music film science weather report".split()
    return tokenizer_train([" ".join(rng.choice(words) for _ in range(12)) for _ in range(200)], vocab_size=200)


def save_gpt2(folder, tokenizer) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=48, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_loads_the_platform_layout_on_cpu_with_bounded_threads(tmp_path, tokenizer):
    save_gpt2(tmp_path, tokenizer)
    threads = torch.get_num_threads()
    try:
        loaded = model_load(tmp_path, device="cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert loaded.device == torch.device("cpu")
    assert loaded.dtype == torch.float32
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert not loaded.model.training
    assert loaded.max_context == 48
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token_id == 0
    prompt = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "news today"}], add_generation_prompt=True
    )
    assert isinstance(prompt, str) or prompt  # a template that renders


def test_loads_another_architecture_without_pad_token_and_serves_it(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=40,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    user_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|end|>")
    user_tokenizer.chat_template = tokenizer.chat_template
    user_tokenizer.save_pretrained(tmp_path)

    loaded = model_load(tmp_path, device="cpu")
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.max_context == 40
    assert loaded.tokenizer.pad_token_id == loaded.tokenizer.eos_token_id  # filled in for batching
    scheduler = BatchScheduler(loaded.model, loaded.tokenizer)
    try:
        done: list[int] = []
        finished = threading.Event()
        scheduler.submit(
            [5, 6, 7],
            DecodingParams(strategy="greedy", max_new_tokens=4),
            on_token=done.append,
            on_done=lambda f: finished.set(),
        )
        assert finished.wait(30)
        assert 1 <= len(done) <= 4
    finally:
        scheduler.stop()


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        model_load(tmp_path / "nothing-here")


def test_folder_without_a_model(tmp_path):
    with pytest.raises(ValueError, match=r"no config\.json"):
        model_load(tmp_path)


def test_tokenizer_without_chat_template(tmp_path, tokenizer):
    save_gpt2(tmp_path, tokenizer)
    (tmp_path / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="no chat template"):
        model_load(tmp_path, device="cpu")


def test_not_a_causal_lm(tmp_path, tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(
        T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2)
    ).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a causal language model"):
        model_load(tmp_path, device="cpu")
