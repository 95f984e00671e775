"""The whole chat-model chain: tokenizer → causal LM → pre-training → SFT → one loadable folder.

`chat_model_train` writes a folder that plain `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load (the chat template travels with the tokenizer), plus `mediachat.json`:
the caller's meta (dataset hash, git revision, ...), the preset, both training configs, metrics and loss
histories. Work in progress lives in `work_dir` (tokenizer, one checkpoint per phase), so a cancelled or
crashed run resumes where it stopped when called again with the same inputs. `chat_model_load` loads any
such folder, or any local transformers causal LM with a chat template. Plain Python and torch: no Django.
"""

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from training.pipelines.chat_format import tokenizer_train
from training.pipelines.checkpoints import directory_publish, directory_tmp, seed_all
from training.pipelines.lm import LMPreset, lm_build, parameters_count, preset_get
from training.pipelines.pretrain import PretrainData
from training.pipelines.sft import SftData
from training.pipelines.trainer import Progress, ShouldStop, TrainingCancelled, train

FORMAT = "mediachat.chat-lm/1"
META_FILE = "mediachat.json"


@dataclass
class ChatModelResult:
    path: Path  # the saved model folder (out_dir)
    metrics: dict = field(default_factory=dict)  # as in mediachat.json["metrics"]
    history: dict = field(default_factory=dict)  # phase -> [{"step", "train_loss", "val_loss", "lr"}]


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _dialogue_texts(dialogues: Sequence[Sequence[dict]]) -> list[str]:
    return ["\n".join(m["content"] for m in messages) for messages in dialogues]


def _work_dir_prepare(work_dir: Path, fingerprint: str, resume: bool) -> None:
    """Keep `work_dir`'s state only when resuming the same inputs; otherwise clear what this chain wrote there."""
    work_dir.mkdir(parents=True, exist_ok=True)
    marker = work_dir / "run.json"
    same = marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint
    if not (resume and same):
        for name in ("tokenizer", "pretrain", "sft"):
            shutil.rmtree(work_dir / name, ignore_errors=True)
        marker.write_text(json.dumps({"fingerprint": fingerprint}))


def _tokenizer(work_dir: Path, texts: list[str], vocab_size: int, context: int):
    from transformers import AutoTokenizer

    saved = work_dir / "tokenizer"
    if (saved / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(saved)
    tokenizer = tokenizer_train(texts, vocab_size=vocab_size, model_max_length=context)
    tmp = directory_tmp(work_dir, prefix="tokenizer.tmp-")
    tokenizer.save_pretrained(tmp)
    directory_publish(tmp, saved)
    return tokenizer


def chat_model_train(
    *,
    pretrain_texts: list[str],
    validation_texts: list[str],
    dialogues_train: list[list[dict]],
    dialogues_validation: list[list[dict]],
    preset: "str | LMPreset",
    out_dir: Path,
    work_dir: Path,
    meta: dict,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    seed: int = 0,
    resume: bool = True,
) -> ChatModelResult:
    """Train a tokenizer and a chat LM from scratch (pre-training, then SFT) and save it to `out_dir`.

    `progress(phase, step, total, metrics)` reports phases "tokenizer", "pretrain", "sft", "save".
    `should_stop()` is checked between phases and before every training step; when it returns True the
    state is checkpointed in `work_dir` and `TrainingCancelled` is raised (a later call with `resume=True`
    and the same inputs continues). `seed` overrides both phases' `TrainConfig.seed`. `out_dir` appears
    complete or not at all (written beside it, then renamed); an existing `out_dir` is replaced.
    """
    started = time.perf_counter()
    spec = preset_get(preset, pretrain={"seed": seed}, sft={"seed": seed})
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    fingerprint = _fingerprint(pretrain_texts, validation_texts, dialogues_train, dialogues_validation, asdict(spec))
    _work_dir_prepare(work_dir, fingerprint, resume)

    def stop_check(phase: str) -> None:
        if should_stop is not None and should_stop():
            raise TrainingCancelled(phase, 0)

    def report(phase: str, step: int, total: int, metrics: dict) -> None:
        if progress is not None:
            progress(phase, step, total, metrics)

    stop_check("tokenizer")
    report("tokenizer", 0, 1, {})
    tokenizer_started = time.perf_counter()
    tokenizer = _tokenizer(work_dir, pretrain_texts + _dialogue_texts(dialogues_train), spec.vocab_size, spec.context)
    tokenizer_seconds = time.perf_counter() - tokenizer_started
    report("tokenizer", 1, 1, {"vocab_size": len(tokenizer)})

    seed_all(seed)
    model = lm_build(spec, tokenizer)
    pretrain_data = PretrainData.from_texts(
        tokenizer, pretrain_texts, validation_texts, block_size=min(spec.pretrain.block_size, spec.context)
    )
    stop_check("pretrain")
    pretrained = train(
        model,
        pretrain_data,
        spec.pretrain,
        phase="pretrain",
        checkpoint_dir=work_dir / "pretrain",
        progress=progress,
        should_stop=should_stop,
        resume=resume,
    )

    sft_data = SftData.from_dialogues(
        tokenizer, dialogues_train, dialogues_validation, max_length=min(spec.sft.block_size, spec.context)
    )
    stop_check("sft")
    tuned = train(
        model,
        sft_data,
        spec.sft,
        phase="sft",
        checkpoint_dir=work_dir / "sft",
        progress=progress,
        should_stop=should_stop,
        resume=resume,
    )

    report("save", 0, 1, {})
    metrics = {
        "parameters": parameters_count(model),
        "vocab_size": len(tokenizer),
        "tokenizer_seconds": round(tokenizer_seconds, 3),
        "pretrain": pretrained.metrics,
        "sft": tuned.metrics,
        "data": {
            "pretrain_tokens": len(pretrain_data.train_tokens),
            "validation_tokens": len(pretrain_data.validation_tokens),
            "sft_examples": len(sft_data.train),
            "sft_validation_examples": len(sft_data.validation_examples),
            "sft_truncated": sum(e.truncated for e in sft_data.train),
        },
        "seconds": round(time.perf_counter() - started, 3),  # this call's wall time (a resumed run: since resume)
    }
    history = {"pretrain": pretrained.history, "sft": tuned.history}
    document = {
        "format": FORMAT,
        "meta": meta,
        "preset": asdict(spec),
        "model_config": model.config.to_dict(),
        "train": {"pretrain": asdict(spec.pretrain), "sft": asdict(spec.sft)},
        "seed": seed,
        "metrics": metrics,
        "history": history,
        "created_at": datetime.now(UTC).isoformat(),
    }
    tmp = directory_tmp(out_dir.parent, prefix=f".{out_dir.name}.tmp-")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(document, indent=1, default=str))
        directory_publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report("save", 1, 1, {"path": str(out_dir)})
    return ChatModelResult(path=out_dir, metrics=metrics, history=history)


def chat_model_meta(path: Path) -> dict:
    """The `mediachat.json` document of a saved folder; {} for a model the platform did not train."""
    file = Path(path) / META_FILE
    return json.loads(file.read_text()) if file.exists() else {}


def chat_model_load(path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None):
    """`(model, tokenizer, meta)` from a local folder: model in eval mode on `device`, meta from mediachat.json.

    Works for any transformers causal LM saved with its tokenizer; `dtype` (e.g. torch.bfloat16 on CUDA)
    defaults to the saved one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device)
    model.eval()
    return model, tokenizer, chat_model_meta(path)
