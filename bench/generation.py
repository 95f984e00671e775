"""Generation throughput: the batch scheduler against `model.generate`, one request at a time and one static batch.

Run as `.venv/bin/python bench/generation.py [--model PATH]`. With `--model` it loads that folder (a chat model the
platform trained, or any causal LM with a chat-template tokenizer) through `model_load`. Without it, it builds the
demo model's shape itself, seeded and random-initialised: a byte-level BPE tokenizer trained with `tokenizer_train`
on generated text, and the platform's `small` preset (`training.pipelines.lm.lm_build`: a Llama of about 5.6M
parameters, 6 layers, 256 wide, 512 positions). Weights do not change the cost of a forward pass, so the figures
hold for a trained model of that shape.

Prompts are chat-template prompts (system, context with catalog lines, question) of varied lengths. Every path is
greedy and writes exactly `--new-tokens` tokens: a random-initialised model may never write `<|end|>`, so the end of
turn is ignored in all three paths alike (generation_config.eos_token_id cleared, the scheduler given no eos ids).

Measured in one run, each throughput the best of `--repeats`:
- sequential: one `model.generate` per prompt, in turn (the baseline a server without batching gets);
- static: one left-padded batched `model.generate` over all the prompts (the ceiling when all arrive together);
- scheduler: the same prompts submitted at once to a `BatchScheduler` (16 and 64 of them);
- time to first token through the scheduler with Poisson arrivals at `--load` times its measured capacity.
The scheduler's greedy outputs must equal the sequential ones. Progress goes to stderr; the last line is JSON:
{"n16_vs_static", "n16_vs_sequential", "n64_vs_static", "ttft_p50_ms", "ttft_p95_ms", "outputs_match",
"peak_rss_mb", ...} with the raw tokens/s and the settings after those keys.
"""

import argparse
import json
import random
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediachat.engine.batching import BatchScheduler, Finish  # noqa: E402
from mediachat.engine.decoding import DecodingParams, generate_kwargs  # noqa: E402
from mediachat.engine.loading import model_load  # noqa: E402
from training.pipelines.chat_format import (  # noqa: E402
    DEFAULT_SYSTEM_PROMPT,
    ContextItem,
    messages_build,
    tokenizer_train,
)

SYLLABLES = "ka lo mi ne ru sa te vo xi pa di fu ge ho ja ku le mo ni po ra si tu we yo za be ce".split()
SECTIONS = ["Science", "Culture", "Economy", "Sport", "Politics", "Travel"]
ENGLISH = "what about more like that the a news on from older shorter any article podcast today week why who".split()


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def words_of(rng: random.Random, count: int) -> list[str]:
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(count)]


def corpus(rng: random.Random, lexicon: list[str], lines: int) -> list[str]:
    """Generated lines, and the system prompt and English glue words a site's own text would teach the tokenizer."""
    text = [" ".join(rng.choice(lexicon) for _ in range(rng.randint(8, 30))) + "." for _ in range(lines)]
    return text + [DEFAULT_SYSTEM_PROMPT] * 50 + [" ".join(ENGLISH)] * 50


def demo_model(seed: int):
    """The platform's `small` preset (training/pipelines/lm.py), random-initialised: (model, tokenizer, lexicon)."""
    from training.pipelines.lm import lm_build

    rng = random.Random(seed)
    lexicon = words_of(rng, 3000)
    tokenizer = tokenizer_train(corpus(rng, lexicon, 4000), vocab_size=4096, model_max_length=512)
    torch.manual_seed(seed)
    return lm_build("small", tokenizer).eval(), tokenizer, lexicon


def prompts_of(tokenizer, lexicon: list[str], count: int, seed: int, max_items: int) -> list[list[int]]:
    """Chat prompts as the engine builds them: system turn, 0 to `max_items` catalog lines, a question."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        items = [
            ContextItem(
                id=rng.randint(1, 9999),
                title=" ".join(rng.choice(lexicon) for _ in range(rng.randint(2, 5))),
                summary=" ".join(rng.choice(lexicon) for _ in range(rng.randint(0, 12))),
                date=f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                section=rng.choice(SECTIONS),
            )
            for _ in range(rng.randint(0, max_items))
        ]
        words = [rng.choice(ENGLISH if rng.random() < 0.6 else lexicon) for _ in range(rng.randint(2, 12))]
        messages = messages_build(question=" ".join(words) + "?", items=items)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompts.append(tokenizer(text)["input_ids"])
    return prompts


def generate_sequential(model, prompts, params, pad_id, device) -> tuple[float, list[list[int]]]:
    outputs = []
    started = time.perf_counter()
    for prompt in prompts:
        ids = torch.tensor([prompt], device=device)
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), **generate_kwargs(params, eos_token_id=[], pad_token_id=pad_id)
        )
        outputs.append(out[0, len(prompt) :].tolist())
    return time.perf_counter() - started, outputs


def generate_static(model, prompts, params, pad_id, device) -> tuple[float, list[list[int]]]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    started = time.perf_counter()
    out = model.generate(ids, attention_mask=mask, **generate_kwargs(params, eos_token_id=[], pad_token_id=pad_id))
    return time.perf_counter() - started, [row[width:].tolist() for row in out]


def generate_scheduled(scheduler: BatchScheduler, prompts, params) -> tuple[float, list[list[int]]]:
    outputs: list[list[int]] = [[] for _ in prompts]
    finished: list[Finish | None] = [None] * len(prompts)
    all_done = threading.Event()
    lock = threading.Lock()

    def done(index: int, finish: Finish) -> None:
        with lock:
            finished[index] = finish
            if all(f is not None for f in finished):
                all_done.set()

    started = time.perf_counter()
    for index, prompt in enumerate(prompts):
        scheduler.submit(prompt, params, on_token=outputs[index].append, on_done=lambda f, index=index: done(index, f))
    all_done.wait()
    elapsed = time.perf_counter() - started
    reasons = {f.reason for f in finished}
    if reasons != {"length"}:
        raise RuntimeError(f"scheduler requests ended with {reasons}")
    return elapsed, outputs


def ttft_poisson(scheduler: BatchScheduler, prompts, params, rate_per_s: float, seed: int) -> list[float]:
    """Submit `prompts` with exponential gaps at `rate_per_s`; each one's time to first token in ms."""
    rng = random.Random(seed)
    first: list[float | None] = [None] * len(prompts)
    submitted: list[float] = [0.0] * len(prompts)
    remaining = threading.Semaphore(0)

    def on_token(index: int, _token: int) -> None:
        if first[index] is None:
            first[index] = time.perf_counter()

    for index, prompt in enumerate(prompts):
        time.sleep(rng.expovariate(rate_per_s))
        submitted[index] = time.perf_counter()
        scheduler.submit(
            prompt,
            params,
            on_token=lambda t, index=index: on_token(index, t),
            on_done=lambda _f: remaining.release(),
        )
    for _ in prompts:
        remaining.acquire()
    return [(f - s) * 1000 for f, s in zip(first, submitted, strict=True)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model folder (default: the small demo shape, random-initialised)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="each throughput is the best of this many runs")
    parser.add_argument("--max-batch", type=int, default=16, help="the scheduler's max_batch")
    parser.add_argument("--ttft-requests", type=int, default=48)
    parser.add_argument("--load", type=float, default=0.5, help="Poisson arrival rate as a share of capacity")
    parser.add_argument("--context-items", type=int, default=1, help="catalog lines per prompt: 0 to this many")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.model:
        loaded = model_load(args.model, device=args.device, threads=args.threads)
        model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
        rng = random.Random(args.seed)
        lexicon = words_of(rng, 3000)
    else:
        model, tokenizer, lexicon = demo_model(args.seed)
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu")
        if args.device not in ("auto", "cpu"):
            device = torch.device(args.device)
        if device.type == "cuda":
            model = model.to(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        model.requires_grad_(False)
    # The bench writes exactly --new-tokens tokens on every path: no eos anywhere.
    model.generation_config.eos_token_id = None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    params = DecodingParams(strategy="greedy", max_new_tokens=args.new_tokens, repetition_penalty=1.0)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"model {type(model).__name__}, {parameters / 1e6:.1f}M parameters, vocab {len(tokenizer)}, on {device}")

    prompts = prompts_of(tokenizer, lexicon, 64, seed=args.seed + 1, max_items=args.context_items)
    p16 = prompts[:16]
    lengths = sorted(map(len, prompts))
    log(f"prompt lengths {lengths[0]} to {lengths[-1]} tokens, median {lengths[len(lengths) // 2]}")
    scheduler = BatchScheduler(
        model, tokenizer, max_batch=args.max_batch, max_queue=256, device=device, eos_token_ids=[]
    )
    wide = BatchScheduler(model, tokenizer, max_batch=64, max_queue=256, device=device, eos_token_ids=[])
    generate_static(model, p16[:2], params, pad_id, device)  # warm-up
    generate_scheduled(scheduler, p16[:2], params)

    best: dict[str, float] = {}  # tokens per wall-clock second
    best_cpu: dict[str, float] = {}  # tokens per CPU second of this process: steadier on a shared machine
    outputs: dict[str, list[list[int]]] = {}

    def measure(name: str, fn, count: int) -> None:
        cpu_started = time.process_time()
        elapsed, out = fn()
        cpu = time.process_time() - cpu_started
        tokens = count * args.new_tokens
        best[name] = max(best.get(name, 0.0), tokens / elapsed)
        best_cpu[name] = max(best_cpu.get(name, 0.0), tokens / cpu)
        outputs.setdefault(name, out)
        log(f"{name}: {tokens / elapsed:,.0f} tok/s ({elapsed:.2f} s wall, {cpu:.2f} s CPU)")

    for repeat in range(args.repeats):
        log(f"round {repeat + 1}/{args.repeats}")
        measure("n16_sequential", lambda: generate_sequential(model, p16, params, pad_id, device), 16)
        measure("n16_static", lambda: generate_static(model, p16, params, pad_id, device), 16)
        measure("n16_scheduler", lambda: generate_scheduled(scheduler, p16, params), 16)
        measure("n64_static", lambda: generate_static(model, prompts, params, pad_id, device), 64)
        measure("n64_scheduler", lambda: generate_scheduled(scheduler, prompts, params), 64)
        measure("n64_scheduler_batch64", lambda: generate_scheduled(wide, prompts, params), 64)
    log("sequential generate over the other 48 prompts, for the output check")
    _, rest = generate_sequential(model, prompts[16:], params, pad_id, device)
    sequential_all = outputs["n16_sequential"] + rest
    mismatches = sum(a != b for a, b in zip(outputs["n64_scheduler"], sequential_all, strict=True))
    mismatches += sum(a != b for a, b in zip(outputs["n64_scheduler_batch64"], sequential_all, strict=True))
    mismatches += sum(a != b for a, b in zip(outputs["n16_scheduler"], sequential_all[:16], strict=True))
    static_mismatches = sum(a != b for a, b in zip(outputs["n64_static"], sequential_all, strict=True))
    log(f"scheduler outputs differing from sequential generate: {mismatches}; static batch: {static_mismatches}")

    capacity_per_s = best["n16_scheduler"] / args.new_tokens
    rate = args.load * capacity_per_s
    log(f"time to first token: {args.ttft_requests} requests, Poisson arrivals at {rate:.1f}/s")
    ttft = ttft_poisson(scheduler, prompts[: args.ttft_requests], params, rate, seed=args.seed + 2)
    scheduler.stop()
    wide.stop()

    result = {
        "n16_vs_static": round(best["n16_scheduler"] / best["n16_static"], 3),
        "n16_vs_sequential": round(best["n16_scheduler"] / best["n16_sequential"], 2),
        "n64_vs_static": round(best["n64_scheduler"] / best["n64_static"], 3),
        "ttft_p50_ms": round(statistics.median(ttft), 1),
        "ttft_p95_ms": round(percentile(ttft, 0.95), 1),
        "outputs_match": mismatches == 0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "n64_batch64_vs_static": round(best["n64_scheduler_batch64"] / best["n64_static"], 3),
        "cpu_n16_vs_static": round(best_cpu["n16_scheduler"] / best_cpu["n16_static"], 3),
        "cpu_n16_vs_sequential": round(best_cpu["n16_scheduler"] / best_cpu["n16_sequential"], 2),
        "cpu_n64_vs_static": round(best_cpu["n64_scheduler"] / best_cpu["n64_static"], 3),
        "tokens_per_s": {name: round(value) for name, value in best.items()},
        "tokens_per_cpu_s": {name: round(value) for name, value in best_cpu.items()},
        "prompt_tokens": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]},
        "static_outputs_match": static_mismatches == 0,
        "poisson_rate_per_s": round(rate, 2),
        "max_batch": args.max_batch,
        "new_tokens": args.new_tokens,
        "threads": args.threads,
        "device": str(device),
        "model": args.model or "small preset, random-initialised",
        "parameters": parameters,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
