"""The training loop shared by pre-training and SFT: plain torch, atomic checkpoints, resume, progress, cancel.

`train(model, data, config, ...)` runs AdamW with linear warm-up and cosine decay to `min_lr_ratio`, clips
gradients, evaluates validation loss and perplexity every `eval_every` steps, and writes a checkpoint every
`checkpoint_every` steps (and at the end, and when cancelled). The batch for step `s` is a pure function of
`(seed, s)` (see `TrainData`), and a checkpoint holds model, optimizer, scheduler and RNG states, so a run
resumed from a checkpoint ends with exactly the weights of an uninterrupted run with the same seed.

Checkpoints are written atomically (`checkpoints.py`). HF Trainer is no faster here
(NOTES.md) and gives no such control. Plain Python and torch: no Django imports.
"""

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from training.pipelines.checkpoints import checkpoint_find, checkpoint_load, checkpoint_save, seed_all

IGNORE = -100  # label of a position that carries no loss (padding; non-assistant tokens in SFT)

Progress = Callable[[str, int, int, dict], None]
ShouldStop = Callable[[], bool]


@dataclass
class TrainConfig:
    steps: int = 100  # optimizer steps in the phase
    batch_size: int = 8  # sequences per step
    block_size: int = 128  # tokens per pre-training block; longest SFT sequence (longer ones keep their end)
    lr: float = 1e-3  # peak learning rate, reached after the warm-up
    warmup_steps: int = 10  # linear warm-up from 0 to `lr`
    min_lr_ratio: float = 0.1  # the cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.1  # AdamW decay, on matrices only (not norms or biases)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas; 0.95 is steadier than 0.999 on short runs
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_every: int = 50  # steps between validation evaluations (also at step 0 and at the end); 0: only those
    eval_batches: int = 4  # validation batches per evaluation (the same ones each time)
    checkpoint_every: int = 50  # steps between checkpoints (also at the end and on cancel); 0: only those
    seed: int = 0  # seeds torch, random and numpy, and the order of the training batches
    threads: int | None = None  # torch intra-op threads; None leaves the process setting alone


class TrainingCancelled(Exception):
    """`should_stop()` returned True; the state at `step` is saved in the checkpoint."""

    def __init__(self, phase: str, step: int):
        super().__init__(f"{phase} cancelled at step {step}")
        self.phase = phase
        self.step = step


class TrainData(Protocol):
    """Batches for `train`: `batch(step, batch_size, seed)` is deterministic in its arguments.

    A batch holds `input_ids`, `labels` (IGNORE where no loss) and `attention_mask` (1 on real tokens), all
    right-padded `[batch, length]` long tensors.
    """

    def batch(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]: ...

    def validation(self, batch_size: int, batches: int) -> list[dict[str, torch.Tensor]]: ...


@dataclass
class TrainResult:
    steps: int  # steps completed (== config.steps unless cancelled)
    history: list[dict] = field(default_factory=list)  # rows {"step", "train_loss", "val_loss", "lr"}
    metrics: dict = field(default_factory=dict)  # val_loss, val_perplexity, initial_val_loss, tokens, seconds, ...


def epoch_order(n_items: int, step: int, batch_size: int, seed: int) -> list[tuple[int, int]]:
    """`(epoch, index)` of the items of batch `step`: a fresh seeded permutation of `n_items` per epoch."""
    if n_items <= 0:
        raise ValueError("no training items")
    out = []
    cache: dict[int, list[int]] = {}
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n_items)
        if epoch not in cache:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            cache[epoch] = torch.randperm(n_items, generator=generator).tolist()
        out.append((epoch, cache[epoch][offset]))
    return out


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over positions whose label is not IGNORE, and their count."""
    targets = labels[:, 1:].reshape(-1)
    loss_sum = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), targets, ignore_index=IGNORE, reduction="sum"
    )
    return loss_sum, int((targets != IGNORE).sum())


def forward_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    # Batches are right-padded, so causal attention alone keeps real tokens off the padding: no attention
    # mask is passed, which lets SDPA take its fast causal path.
    logits = model(input_ids=batch["input_ids"]).logits
    return lm_loss(logits, batch["labels"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> float | None:
    """Token-weighted mean validation loss over `batches`; None when there are none."""
    if not batches:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        loss_sum, n = forward_loss(model, batch)
        total += float(loss_sum)
        count += n
    model.train(was_training)
    return total / count if count else None


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    # Tied embeddings appear once in parameters(); matrices decay, norm weights and biases do not.
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def _same_config(path: Path, config: TrainConfig) -> bool:
    """Whether the checkpoint at `path` was written with `config` (threads aside): only then may it resume."""
    try:
        saved = json.loads((path / "state.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        return False
    current = json.loads(json.dumps(asdict(config)))
    return {k: v for k, v in saved.items() if k != "threads"} == {k: v for k, v in current.items() if k != "threads"}


def _phase_metrics(state: dict) -> dict:
    val = state["val_loss"]
    return {
        "steps": state["step"],
        "val_loss": val,
        "val_perplexity": math.exp(val) if val is not None else None,
        "initial_val_loss": state["initial_val_loss"],
        "tokens": state["tokens"],
        "train_seconds": round(state["train_seconds"], 3),
        "tokens_per_s": round(state["tokens"] / state["train_seconds"], 1) if state["train_seconds"] else None,
    }


def train(
    model: torch.nn.Module,
    data: TrainData,
    config: TrainConfig,
    *,
    phase: str,
    checkpoint_dir: Path,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train `model` in place for `config.steps` steps on `data`; checkpoints go to `checkpoint_dir/checkpoint`.

    With `resume` and a checkpoint present, training continues from it (a finished phase returns at once).
    Without it, any previous checkpoint is discarded. `progress(phase, step, total, metrics)` is called
    after every step and evaluation; `should_stop()` before every step: when it returns True the state is
    checkpointed and `TrainingCancelled` is raised.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    checkpoint_dir = Path(checkpoint_dir)
    optimizer = _optimizer(model, config)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, config.warmup_steps, config.steps, min_lr_rate=config.min_lr_ratio
    )
    found = checkpoint_find(checkpoint_dir)
    if found is not None and (not resume or not _same_config(found, config)):
        shutil.rmtree(found)
        found = None
    val_batches = data.validation(config.batch_size, config.eval_batches)
    model.train()
    if found is not None:
        state = checkpoint_load(found, model=model, optimizer=optimizer, scheduler=scheduler)
    else:
        seed_all(config.seed)
        initial = evaluate(model, val_batches)
        state = {
            "phase": phase,
            "config": asdict(config),
            "step": 0,
            "tokens": 0,
            "train_seconds": 0.0,
            "val_loss": initial,
            "initial_val_loss": initial,
            "history": [{"step": 0, "train_loss": None, "val_loss": initial, "lr": 0.0}],
        }
        if progress:
            progress(phase, 0, config.steps, {"val_loss": initial})

    def save() -> None:
        checkpoint_save(checkpoint_dir, model=model, optimizer=optimizer, scheduler=scheduler, state=state)

    while state["step"] < config.steps:
        if should_stop is not None and should_stop():
            save()
            raise TrainingCancelled(phase, state["step"])
        started = time.perf_counter()
        batch = data.batch(state["step"], config.batch_size, config.seed)
        loss_sum, count = forward_loss(model, batch)
        loss = loss_sum / max(count, 1)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["train_seconds"] += time.perf_counter() - started
        state["tokens"] += int(batch["attention_mask"].sum())
        state["step"] += 1
        step = state["step"]
        row = {"step": step, "train_loss": round(float(loss.detach()), 5), "val_loss": None, "lr": lr}
        if step == config.steps or (config.eval_every and step % config.eval_every == 0):
            row["val_loss"] = state["val_loss"] = evaluate(model, val_batches)
        state["history"].append(row)
        if progress:
            progress(phase, step, config.steps, {k: v for k, v in row.items() if k != "step" and v is not None})
        if step == config.steps or (config.checkpoint_every and step % config.checkpoint_every == 0):
            save()
    return TrainResult(steps=state["step"], history=state["history"], metrics=_phase_metrics(state))
