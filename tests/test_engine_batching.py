"""The batch scheduler against `model.generate` on tiny real models (random-initialised, and one trained to stop)."""

import random
import threading
import time

import pytest
import torch

from mediachat.engine.batching import BatchScheduler, Finish, QueueFull, SchedulerStopped, prefill_groups
from mediachat.engine.decoding import DecodingParams, generate_kwargs
from training.pipelines.chat_format import ASSISTANT, END, tokenizer_train

GREEDY = DecodingParams(strategy="greedy", max_new_tokens=12)
EOS = 1  # <|end|>
PAD = 0


class Reply:
    """Collects one request's callbacks."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.finish: Finish | None = None
        self.threads: set[str] = set()
        self.done = threading.Event()
        self.after_token = None  # optional hook: called with the number of tokens received so far

    def on_token(self, token: int) -> None:
        self.tokens.append(token)
        self.threads.add(threading.current_thread().name)
        if self.after_token is not None:
            self.after_token(len(self.tokens))

    def on_done(self, finish: Finish) -> None:
        self.finish = finish
        self.done.set()

    def wait(self, timeout: float = 60.0) -> "Reply":
        assert self.done.wait(timeout), "the request did not finish"
        return self


def submit(scheduler: BatchScheduler, prompt: list[int], params: DecodingParams = GREEDY) -> tuple[int, Reply]:
    reply = Reply()
    request_id = scheduler.submit(prompt, params, on_token=reply.on_token, on_done=reply.on_done)
    return request_id, reply


def reference(model, prompt: list[int], params: DecodingParams) -> tuple[list[int], str]:
    """`model.generate` alone: the reply's tokens before eos, and how it ended."""
    ids = torch.tensor([prompt])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), **generate_kwargs(params, eos_token_id=[EOS], pad_token_id=PAD)
    )
    tokens = out[0, len(prompt) :].tolist()
    if EOS in tokens:
        return tokens[: tokens.index(EOS)], "eos"
    return tokens, "length"


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    words = "the a news story about city sport music film science weather report today readers ask more".split()
    return tokenizer_train([" ".join(rng.choice(words) for _ in range(20)) for _ in range(300)], vocab_size=300)


def tiny_model(tokenizer, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, pad_token_id=PAD, eos_token_id=EOS
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.set_num_threads(1)
    return tiny_model(tokenizer)


@pytest.fixture(scope="module")
def stopping_model(tokenizer):
    """Trained for a few seconds to answer any prompt ending in <|assistant|> with four fixed tokens and <|end|>."""
    torch.set_num_threads(1)
    model = tiny_model(tokenizer, seed=1)
    assistant = tokenizer.convert_tokens_to_ids(ASSISTANT)
    answer = [40, 41, 42, 43, tokenizer.convert_tokens_to_ids(END)]
    rng = random.Random(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        batch = [[rng.randrange(10, len(tokenizer)) for _ in range(8)] + [assistant, *answer] for _ in range(16)]
        ids = torch.tensor(batch)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture
def scheduler(model, tokenizer):
    scheduler = BatchScheduler(model, tokenizer, max_batch=8, max_queue=16)
    yield scheduler
    scheduler.stop()


def prompts_of(lengths: list[int], seed: int = 2) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(6, 300) for _ in range(n)] for n in lengths]


def test_greedy_equals_generate_with_staggered_joins(model, scheduler):
    prompts = prompts_of([3, 17, 8, 30, 1, 11])
    replies: list[Reply] = []

    def chain(index: int) -> None:
        """Submit prompt `index`; the next one joins after this one's third token, so joins happen mid-decoding."""
        _, reply = submit(scheduler, prompts[index])
        replies.append(reply)
        if index + 1 < len(prompts):
            reply.after_token = lambda n: n == 3 and chain(index + 1)

    chain(0)
    for reply in replies:
        reply.wait()
    assert len(replies) == len(prompts)
    for prompt, reply in zip(prompts, replies, strict=True):
        tokens, reason = reference(model, prompt, GREEDY)
        assert reply.tokens == tokens
        assert reply.finish.reason == reason
        assert reply.finish.prompt_tokens == len(prompt)
        assert reply.finish.completion_tokens == len(tokens) + (reason == "eos")
        assert reply.threads == {"batch-scheduler"}


def test_rows_leave_at_eos_while_others_continue(stopping_model, tokenizer):
    assistant = tokenizer.convert_tokens_to_ids(ASSISTANT)
    scheduler = BatchScheduler(stopping_model, tokenizer, max_batch=8)
    try:
        stop_prompts = [[*p, assistant] for p in prompts_of([5, 12], seed=3)]
        other_prompts = prompts_of([4, 9, 15], seed=4)
        params = DecodingParams(strategy="greedy", max_new_tokens=10)
        replies = [submit(scheduler, p, params)[1] for p in stop_prompts + other_prompts]
        for prompt, reply in zip(stop_prompts + other_prompts, replies, strict=True):
            tokens, reason = reference(stopping_model, prompt, params)
            reply.wait()
            assert (reply.tokens, reply.finish.reason) == (tokens, reason)
        assert [r.finish.reason for r in replies[:2]] == ["eos", "eos"]
        assert all(r.tokens[-3:] == [41, 42, 43] for r in replies[:2])  # the trained answer, then <|end|>
        assert [r.finish.completion_tokens for r in replies[:2]] == [len(r.tokens) + 1 for r in replies[:2]]
        assert len({r.finish.completion_tokens for r in replies}) > 1  # rows left the batch at different steps
    finally:
        scheduler.stop()


def test_max_new_tokens_and_context_limit(scheduler):
    short = submit(scheduler, prompts_of([5])[0], DecodingParams(strategy="greedy", max_new_tokens=3))[1].wait()
    near_limit = submit(scheduler, prompts_of([60])[0], DecodingParams(strategy="greedy", max_new_tokens=20))[1].wait()
    assert (short.finish.reason, short.finish.completion_tokens) == ("length", 3)
    assert len(short.tokens) == 3
    # n_positions is 64: a 60-token prompt has room for 4 more.
    assert (near_limit.finish.reason, near_limit.finish.completion_tokens, len(near_limit.tokens)) == ("length", 4, 4)


def test_cancel_mid_way(model, scheduler):
    long = DecodingParams(strategy="greedy", max_new_tokens=40)
    request_id, cancelled = submit(scheduler, prompts_of([6])[0], long)
    cancelled.after_token = lambda n: n == 5 and scheduler.cancel(request_id)
    _, other = submit(scheduler, prompts_of([9])[0], long)
    cancelled.wait()
    other.wait()
    assert cancelled.finish.reason == "cancelled"
    assert 5 <= cancelled.finish.completion_tokens < 40
    assert other.tokens == reference(model, prompts_of([9])[0], long)[0]
    assert scheduler.cancel(request_id) is False  # already finished
    assert scheduler.load == (0, 0)


def test_queue_full_carries_a_retry_hint(model, tokenizer):
    scheduler = BatchScheduler(model, tokenizer, max_batch=1, max_queue=2)
    try:
        long = DecodingParams(strategy="greedy", max_new_tokens=60)
        held = [submit(scheduler, prompts_of([3])[0], long) for _ in range(2)]
        with pytest.raises(QueueFull) as raised:
            submit(scheduler, prompts_of([3])[0], long)
        assert raised.value.retry_after_ms > 0
        for request_id, _ in held:
            scheduler.cancel(request_id)
        assert {reply.wait().finish.reason for _, reply in held} == {"cancelled"}
        submit(scheduler, prompts_of([3])[0], DecodingParams(strategy="greedy", max_new_tokens=2))[1].wait()
    finally:
        scheduler.stop()


def test_a_failing_request_fails_alone(model, scheduler):
    good_prompt = prompts_of([7])[0]
    too_long = submit(scheduler, prompts_of([70])[0])[1]
    bad_id = submit(scheduler, [5, 10_000, 7])[1]
    empty = submit(scheduler, [])[1]
    raising = submit(scheduler, prompts_of([4])[0])[1]
    raising.after_token = lambda n: 1 / 0
    good = submit(scheduler, good_prompt)[1]
    for reply in (too_long, bad_id, empty, raising):
        assert reply.wait().finish.reason == "error"
    assert "context of 64 tokens" in too_long.finish.error
    assert "vocabulary" in bad_id.finish.error
    assert "ZeroDivisionError" in raising.finish.error
    assert good.wait().tokens == reference(model, good_prompt, GREEDY)[0]


def test_seeded_sampling_is_reproducible_in_any_batch(scheduler):
    params = DecodingParams(strategy="sample", max_new_tokens=16, temperature=1.0, top_k=50, top_p=0.9, seed=7)
    prompt = prompts_of([6])[0]
    alone = submit(scheduler, prompt, params)[1].wait()
    crowd = [submit(scheduler, p)[1] for p in prompts_of([4, 12, 9], seed=5)]
    together = submit(scheduler, prompt, params)[1].wait()
    other_seed = submit(scheduler, prompt, DecodingParams(**{**params.as_dict(), "seed": 8}))[1].wait()
    for reply in crowd:
        reply.wait()
    assert len(alone.tokens) >= 8
    assert (alone.tokens, alone.finish) == (together.tokens, together.finish)
    assert alone.tokens != other_seed.tokens


def test_beam_search_returns_generates_beam_output(model, scheduler):
    params = DecodingParams(strategy="beam", num_beams=3, max_new_tokens=10, repetition_penalty=1.0)
    prompt = prompts_of([8])[0]
    _, beam = submit(scheduler, prompt, params)
    _, greedy = submit(scheduler, prompts_of([5])[0])
    assert beam.wait().tokens == reference(model, prompt, params)[0]
    assert beam.finish.reason in ("eos", "length")
    assert beam.threads == {"batch-scheduler"}
    greedy.wait()


def test_stop_cancels_outstanding_requests(model, tokenizer):
    scheduler = BatchScheduler(model, tokenizer, max_batch=2)
    long = DecodingParams(strategy="greedy", max_new_tokens=60)
    replies = [submit(scheduler, p, long)[1] for p in prompts_of([3, 4, 5])]
    replies[0].after_token = lambda n: n == 2 and threading.Thread(target=scheduler.stop).start()
    assert {reply.wait().finish.reason for reply in replies} == {"cancelled"}
    with pytest.raises(RuntimeError):
        submit(scheduler, [5, 6], long)


def test_sampling_with_top_k_one_is_greedy(model, scheduler):
    prompt = prompts_of([10], seed=6)[0]
    params = DecodingParams(strategy="sample", max_new_tokens=12, temperature=1.5, top_k=1, top_p=1.0)
    sampled = submit(scheduler, prompt, params)[1].wait()
    assert sampled.tokens == reference(model, prompt, GREEDY)[0]


def test_drain_lets_running_requests_finish_and_refuses_new_ones(model, tokenizer):
    scheduler = BatchScheduler(model, tokenizer, max_batch=1)
    params = DecodingParams(strategy="greedy", max_new_tokens=20)
    replies = [submit(scheduler, p, params)[1] for p in prompts_of([3, 6])]  # one decoding, one waiting
    drained: list[bool] = []
    drainer = threading.Thread(target=lambda: drained.append(scheduler.drain(timeout=60)))
    drainer.start()
    while True:  # requests that got in before drain() began must finish like the others
        try:
            replies.append(submit(scheduler, [5, 6], params)[1])
        except SchedulerStopped:
            break
        time.sleep(0.01)
    drainer.join()
    assert drained == [True]
    assert {r.wait().finish.reason for r in replies} == {"length"}


def test_prefill_groups_keep_padding_small():
    from types import SimpleNamespace

    requests = [SimpleNamespace(input_ids=[7] * n) for n in (200, 5, 52, 6, 50, 5)]
    groups = prefill_groups(requests)
    assert [[len(r.input_ids) for r in group] for group in groups] == [[5, 5, 6], [50, 52], [200]]


def test_greedy_equals_generate_on_another_architecture(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=EOS,
    )
    llama = LlamaForCausalLM(config).eval()
    scheduler = BatchScheduler(llama, tokenizer, max_batch=4)
    try:
        prompts = prompts_of([4, 19, 9], seed=8)
        first = submit(scheduler, prompts[0])[1]
        later: list[Reply] = []
        first.after_token = lambda n: n == 4 and later.extend(submit(scheduler, p)[1] for p in prompts[1:])
        replies = [first.wait(), *(reply.wait() for reply in later)]
        assert len(replies) == 3
        for prompt, reply in zip(prompts, replies, strict=True):
            assert (reply.tokens, reply.finish.reason) == reference(llama, prompt, GREEDY)
    finally:
        scheduler.stop()
