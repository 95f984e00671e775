"""The chat model's training run: corpus from the catalog and consented conversations, training, evaluation.

`chat_lm_train` is the `chat-lm` pipeline of `training.services.runs`: the Celery job, the admin's launch,
`manage.py train_chat_model` and `make demo` all go through it. It reads the published catalog and what
readers and customers consented to share (`training.selectors`), builds the corpus and SFT dialogues,
trains tokenizer and model (`training.pipelines.chat_model`), evaluates the result
(`training.pipelines.evaluate`) and returns what the run registers as a candidate `ModelVersion`.
"""

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from django.conf import settings
from django.db import InterfaceError, OperationalError

from training.models import ModelKind, TrainingRun
from training.pipelines.chat_model import chat_model_load, chat_model_train
from training.pipelines.corpus import Corpus, SourceDialogue, SourceDocument, corpus_build
from training.pipelines.dialogue_planner import item_of
from training.pipelines.dialogues import dialogue_from_source, dialogues_build, heldout_questions
from training.pipelines.evaluate import chat_model_evaluate
from training.pipelines.lm import PRESETS, LMPreset, preset_get
from training.pipelines.text_cleaning import text_clean
from training.pipelines.trainer import TrainingCancelled
from training.selectors import ConsentedConversation, consented_conversations, customer_dialogues, training_documents

from .runs import Checkpoint, PipelineResult, RunCancelled, RunWatch, git_revision

logger = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
# Synthetic SFT conversations per preset when a run names no number: about what its SFT steps consume.
DEFAULT_DIALOGUES = {"tiny": 48, "small": 1600, "base": 8000}
DEFAULT_HELDOUT = {"tiny": 8, "small": 48, "base": 96}
# Where each phase's progress lands on the run's 0..1 bar; pre-training and SFT share theirs by token count.
CORPUS_END, DIALOGUES_END, TOKENIZER_END, TRAIN_END, SAVE_END = 0.03, 0.05, 0.07, 0.86, 0.88


@dataclass
class ChatLMParameters:
    preset: str = "small"  # model size and training schedule: tiny (tests), small (the demo), base (~30M)
    seed: int = 0  # seeds the corpus split, the synthetic dialogues and both training phases
    dialogues: int | None = None  # synthetic SFT conversations; None: DEFAULT_DIALOGUES of the preset
    heldout: int | None = None  # held-out catalog questions for the evaluation; None: DEFAULT_HELDOUT of the preset
    max_new_tokens: int = 64  # reply length cap when generating for the evaluation
    pretrain_steps: int | None = None  # overrides the preset's pre-training steps
    sft_steps: int | None = None  # overrides the preset's SFT steps

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}.")
        limits = {
            "seed": (0, 2**31 - 1),
            "dialogues": (1, 200_000),
            "heldout": (1, 2000),
            "max_new_tokens": (1, 512),
            "pretrain_steps": (1, 1_000_000),
            "sft_steps": (1, 1_000_000),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if value is None and name in ("dialogues", "heldout", "pretrain_steps", "sft_steps"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer from {low} to {high:,}.")

    @classmethod
    def from_parameters(cls, parameters: dict) -> "ChatLMParameters":
        """Parameters from a run's JSON; ValueError names what is wrong with them."""
        if not isinstance(parameters, dict):
            raise ValueError("Parameters must be a JSON object.")
        known = {f.name for f in fields(cls)}
        unknown = set(parameters) - known
        if unknown:
            raise ValueError(f"Unknown parameters {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**parameters)

    def spec(self) -> LMPreset:
        """The preset with this run's step overrides."""
        return preset_get(
            self.preset,
            pretrain={"steps": self.pretrain_steps} if self.pretrain_steps else {},
            sft={"steps": self.sft_steps} if self.sft_steps else {},
        )


@dataclass
class TrainingData:
    corpus: Corpus
    dialogues_train: list[list[dict]]
    dialogues_validation: list[list[dict]]
    heldout: list[dict]
    counts: dict  # how many SFT conversations came from where


def _sft_conversation(consented: ConsentedConversation, documents: dict[int, SourceDocument]) -> list[dict]:
    """A consented conversation as SFT messages, up to its last reply rated up; [] without one.

    Text is cleaned as the corpus cleans it. The last reply's cited items (those still in the corpus) become
    its context turn, so it keeps those citations; other replies lose theirs (dialogues.dialogue_from_source).
    """
    if not consented.rated_up_turns:
        return []
    last = max(consented.rated_up_turns)
    # Cleaned turns stay even when empty: `contexts` is keyed by turn index.
    turns = tuple((role, text_clean(text)) for role, text in consented.dialogue.turns[: last + 1])
    cited = [item_of(documents[i]) for i in consented.cited.get(last, ()) if i in documents]
    return dialogue_from_source(
        SourceDialogue(id=consented.dialogue.id, turns=turns), contexts={last: cited} if cited else None
    )


def _split(items: list, seed: int, every: int = 10) -> tuple[list, list]:
    """Every `every`-th item (from a seeded offset) to validation, the rest to training; both non-empty if possible."""
    if len(items) < 2:
        return items, []
    offset = seed % every
    validation = [x for i, x in enumerate(items) if i % every == offset]
    train = [x for i, x in enumerate(items) if i % every != offset]
    if not validation:
        validation, train = train[-1:], train[:-1]
    return train, validation


def training_data_collect(params: ChatLMParameters, progress=None) -> TrainingData:
    """The corpus, SFT dialogues (synthetic and real, rated-up ones) and held-out questions of one run.

    Only published items, conversations of consenting readers and consented customer messages are read.
    """
    documents = training_documents()
    if not documents:
        raise ValueError("No published content to train on: the chat model learns from the catalog.")
    conversations = consented_conversations()
    corpus = corpus_build(
        documents,
        [c.dialogue for c in conversations] + customer_dialogues(),
        seed=params.seed,
        progress=progress,
    )
    synthetic = dialogues_build(
        corpus.documents, n=params.dialogues or DEFAULT_DIALOGUES[params.preset], seed=params.seed
    )
    by_id = {d.id: d for d in corpus.documents}
    real = [messages for c in conversations if (messages := _sft_conversation(c, by_id))]
    synthetic_train, synthetic_validation = _split(synthetic, params.seed)
    real_train, real_validation = _split(real, params.seed)
    heldout = heldout_questions(corpus.documents, n=params.heldout or DEFAULT_HELDOUT[params.preset], seed=params.seed)
    return TrainingData(
        corpus=corpus,
        dialogues_train=synthetic_train + real_train,
        dialogues_validation=synthetic_validation + real_validation,
        heldout=heldout,
        counts={
            "synthetic": len(synthetic),
            "conversations": len(real),
            "train": len(synthetic_train) + len(real_train),
            "validation": len(synthetic_validation) + len(real_validation),
            "heldout_questions": len(heldout),
        },
    )


def loss_history(history: dict) -> dict:
    """`{phase: {"train": [[step, loss]], "validation": [[step, loss]]}}` from the trainer's per-phase rows."""
    out = {}
    for phase, rows in history.items():
        out[phase] = {
            "train": [[r["step"], round(r["train_loss"], 5)] for r in rows if r.get("train_loss") is not None],
            "validation": [[r["step"], round(r["val_loss"], 5)] for r in rows if r.get("val_loss") is not None],
        }
    return out


class _Watch(RunWatch):
    """Maps the chain's progress to the run's bar and log."""

    def __init__(self, run_id: int, checkpoint: Checkpoint, spec: LMPreset):
        super().__init__(run_id, checkpoint)
        pretrain = spec.pretrain.steps * spec.pretrain.batch_size * spec.pretrain.block_size
        sft = spec.sft.steps * spec.sft.batch_size * spec.sft.block_size
        middle = TOKENIZER_END + (TRAIN_END - TOKENIZER_END) * pretrain / max(pretrain + sft, 1)
        self.spans = {"pretrain": (TOKENIZER_END, middle), "sft": (middle, TRAIN_END)}

    def train_progress(self, phase: str, step: int, total: int, metrics: dict) -> None:
        if phase == "tokenizer":
            if step >= total:
                self.report(TOKENIZER_END, f"tokenizer: {metrics.get('vocab_size')} tokens", phase="tokenizer")
            else:
                self.report(DIALOGUES_END, phase="tokenizer")
            return
        if phase == "save":
            self.report(SAVE_END if step >= total else TRAIN_END, phase="save")
            return
        low, high = self.spans.get(phase, (TOKENIZER_END, TRAIN_END))
        line = ""
        if "val_loss" in metrics:
            losses = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("train_loss", "val_loss") if k in metrics)
            line = f"{phase} step {step}/{total}: {losses}"
        self.report(low + (high - low) * step / max(total, 1), line, phase=phase)


def _embed():
    """The project's embedder's `encode`, or None (coherence is then not measured) when it cannot load."""
    from personalization.embeddings.backends import EmbedderUnavailable, embedder_get

    try:
        return embedder_get().encode
    except EmbedderUnavailable:
        logger.warning("no embedder: the chat model's coherence is not measured", exc_info=True)
        return None


def _json_write(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def chat_lm_train(run: TrainingRun, checkpoint: Checkpoint) -> PipelineResult:
    """The chat-lm pipeline: collect, train, evaluate; the model folder is MODEL_DIR/chat-lm/<name>.

    Raises RunCancelled when the run is cancelled (the partial work is removed) and ValueError when there
    is nothing to train on.
    """
    started = time.perf_counter()
    params = ChatLMParameters.from_parameters(run.parameters)
    spec = params.spec()
    name = f"chat-lm-{params.preset}-run-{run.id}"
    root = Path(settings.MODEL_DIR) / ModelKind.CHAT_LM
    out_dir, work_dir = root / name, root / ".work" / f"run-{run.id}"
    watch = _Watch(run.id, checkpoint, spec)
    keep_work = False
    try:
        watch.report(0.0, f"collecting the corpus (preset {params.preset}, seed {params.seed})", phase="corpus")
        data = training_data_collect(params, progress=lambda done: watch.report(CORPUS_END * done, phase="corpus"))
        stats = data.corpus.stats
        watch.report(
            DIALOGUES_END,
            f"corpus {data.corpus.dataset_hash[:12]}: {stats['documents_out']} documents, "
            f"{stats['dialogues_out']} conversations and messages, {stats['train']} train / "
            f"{stats['validation']} validation texts; SFT {data.counts['train']} train / "
            f"{data.counts['validation']} validation dialogues ({data.counts['conversations']} real)",
            phase="corpus",
        )
        if watch.cancelled:
            raise RunCancelled
        meta = {
            "dataset_hash": data.corpus.dataset_hash,
            "corpus": stats,
            "sft_dialogues": data.counts,
            "git_revision": git_revision(),
            "preset": params.preset,
            "parameters": asdict(params),
            "run_id": run.id,
        }
        try:
            trained = chat_model_train(
                pretrain_texts=data.corpus.train,
                validation_texts=data.corpus.validation,
                dialogues_train=data.dialogues_train,
                dialogues_validation=data.dialogues_validation,
                preset=spec,
                out_dir=out_dir,
                work_dir=work_dir,
                meta=meta,
                progress=watch.train_progress,
                should_stop=watch.should_stop,
                seed=params.seed,
            )
        except TrainingCancelled:
            raise RunCancelled from None
        if watch.cancelled:
            raise RunCancelled
        watch.report(SAVE_END, f"evaluating on {len(data.heldout)} held-out questions", phase="evaluate")
        evaluated = time.perf_counter()
        model, tokenizer, saved = chat_model_load(out_dir, device="cuda" if torch.cuda.is_available() else "cpu")
        evaluation = chat_model_evaluate(
            model,
            tokenizer,
            validation_texts=data.corpus.validation,
            heldout=data.heldout,
            embed=_embed(),
            max_new_tokens=params.max_new_tokens,
        )
        evaluation["evaluate_seconds"] = round(time.perf_counter() - evaluated, 3)
        _json_write(out_dir / EVALUATION_FILE, evaluation)
        figures = ", ".join(
            f"{k} {evaluation[k]:.3f}"
            for k in ("val_perplexity", "distinct_2", "repetition_rate", "coherence", "groundedness")
            if isinstance(evaluation.get(k), float)
        )
        watch.report(0.99, f"evaluation: {figures}", phase="evaluate")
        if watch.cancelled:
            raise RunCancelled
    except RunCancelled:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    except (OperationalError, InterfaceError):
        keep_work = True  # the run goes back to the queue; its retry resumes from the checkpoints
        raise
    finally:
        if not keep_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    metrics = {
        **evaluation,
        "dataset_hash": data.corpus.dataset_hash,
        "preset": params.preset,
        "training": trained.metrics,
        "loss_history": loss_history(trained.history),
        "corpus": stats,
        "sft_dialogues": data.counts,
        "seconds": round(time.perf_counter() - started, 3),
    }
    config = {
        "format": saved.get("format"),
        "preset": params.preset,
        "parameters": asdict(params),
        "architecture": {k: v for k, v in asdict(spec).items() if k not in ("pretrain", "sft")},
        "train": saved.get("train", {"pretrain": asdict(spec.pretrain), "sft": asdict(spec.sft)}),
        "dataset_hash": data.corpus.dataset_hash,
        "git_revision": meta["git_revision"],
    }
    return PipelineResult(name=name, artifact_path=out_dir, config=config, metrics=metrics)
