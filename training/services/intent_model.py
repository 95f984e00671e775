"""The intent pipeline of training runs: editors' examples → pipelines compared → the best one, saved and reported.

The examples of active intents are split by intent (stratified, seeded): training, validation (temperature
and out-of-scope threshold) and test (the report). The intent `out_of_scope`'s examples are never trained
on: half tune the threshold, half test it, as Larson et al. 2019 do on CLINC150. Every pipeline asked for
is trained and evaluated on the same split; the best by in-scope accuracy + out-of-scope recall (ties:
macro-F1) is saved as the model version, and the report keeps all of them side by side.
"""

import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from django.conf import settings

from personalization.understanding.examples import TooLittleDataError, intent_training_set
from training.models import ModelKind, TrainingRun
from training.pipelines.checkpoints import directory_publish, directory_tmp
from training.pipelines.intent_data import OUT_OF_SCOPE, IntentRecord
from training.pipelines.intent_eval import evaluation_report, kfold_evaluate, reports_compare

from .runs import Checkpoint, PipelineResult, RunCancelled, RunWatch, TrainingRunError, git_revision

DATA_END, TRAIN_END, EVALUATE_END = 0.03, 0.85, 0.97
LATENCY_QUERIES = 100  # test examples timed one at a time, for the report's p95
SUMMARY_KEYS = ("accuracy", "inscope_accuracy", "oos_recall", "oos_precision", "macro_f1", "weighted_f1")


@dataclass
class IntentParameters:
    pipelines: list[str] = field(default_factory=lambda: ["tfidf", "finetuned", "ensemble"])  # compared
    epochs: float = 3.0  # fine-tuning epochs over the training split
    objective: str = "classification"  # fine-tuning loss: "classification", or "contrastive" (with SupCon)
    # "classification" only: batches of examples of similar length (FineTuneConfig.length_grouped)
    length_grouped: bool = False
    min_examples: int = 10  # an intent with fewer examples stops the run, named in the message
    validation_fraction: float = 0.15  # of each intent's examples: temperature and threshold
    test_fraction: float = 0.15  # of each intent's examples: the report
    kfold: int = 0  # 0: none; k ≥ 2: k-fold cross-validation of the deployed pipeline (k more fits)
    # "" is the shipped all-MiniLM-L6-v2; a packaged encoder's name (encoder_packages.NAMES); or a local folder
    encoder: str = ""
    int8: bool = False  # the deployed encoder's weights in int8 (onnxruntime): a base-size encoder's latency
    # What a message is out of scope below (intent_classifiers.SCOPE_SCORES): "auto" lets validation choose
    # between the calibrated confidence and the fine-tuned encoder's Mahalanobis score.
    oos_score: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        from training.pipelines.intent_classifiers import PIPELINES, SCOPE_SCORES
        from training.pipelines.intent_encoders import OBJECTIVES

        if not isinstance(self.pipelines, list | tuple) or not self.pipelines:
            raise ValueError(f"pipelines must be a non-empty list of {', '.join(PIPELINES)}.")
        unknown = [p for p in self.pipelines if p not in PIPELINES]
        if unknown:
            raise ValueError(f"unknown pipelines {unknown}; choose from {', '.join(PIPELINES)}.")
        self.pipelines = list(dict.fromkeys(self.pipelines))
        checks = {
            "epochs": (isinstance(self.epochs, int | float) and 0 < self.epochs <= 50, "a number from 0 to 50"),
            "objective": (self.objective in OBJECTIVES, " or ".join(repr(o) for o in OBJECTIVES)),
            "min_examples": (_int(self.min_examples) and 3 <= self.min_examples <= 10_000, "an integer ≥ 3"),
            "validation_fraction": (_fraction(self.validation_fraction), "a number between 0.05 and 0.4"),
            "test_fraction": (_fraction(self.test_fraction), "a number between 0.05 and 0.4"),
            "kfold": (_int(self.kfold) and (self.kfold == 0 or 2 <= self.kfold <= 10), "0, or 2 to 10"),
            "encoder": (isinstance(self.encoder, str), "a packaged encoder's name or a folder path"),
            "int8": (isinstance(self.int8, bool), "true or false"),
            "length_grouped": (isinstance(self.length_grouped, bool), "true or false"),
            "oos_score": (self.oos_score in SCOPE_SCORES, " or ".join(repr(s) for s in SCOPE_SCORES)),
            "seed": (_int(self.seed) and 0 <= self.seed < 2**31, "a non-negative integer"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"{name} must be {expected}.")
        from training.pipelines import encoder_packages
        from training.pipelines.intent_encoders import onnx_available

        if self.encoder in encoder_packages.NAMES:
            problem = encoder_packages.missing(self.encoder)
            if problem:
                raise ValueError(f"{problem}.")
        elif self.encoder and not Path(self.encoder).is_dir():
            raise ValueError(
                f"encoder {self.encoder!r} is neither a packaged encoder "
                f"({', '.join(encoder_packages.NAMES)}) nor a folder."
            )
        if self.int8 and not onnx_available():
            raise ValueError("int8 needs onnxruntime and onnxscript, which are not installed.")

    @classmethod
    def from_parameters(cls, parameters: dict) -> "IntentParameters":
        if not isinstance(parameters, dict):
            raise ValueError("Parameters must be a JSON object.")
        unknown = set(parameters) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown parameters {sorted(unknown)}; known: {sorted(f.name for f in fields(cls))}.")
        return cls(**parameters)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.05 <= value <= 0.4


def split_records(
    records: list[IntentRecord], params: IntentParameters
) -> tuple[list[IntentRecord], list[IntentRecord], list[IntentRecord]]:
    """(train, validation, test), stratified by intent and seeded; out of scope goes to validation and test."""
    rng = random.Random(params.seed)
    by_label: dict[str, list[IntentRecord]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(record)
    train, validation, test = [], [], []
    for label in sorted(by_label):
        items = by_label[label][:]
        rng.shuffle(items)
        if label == OUT_OF_SCOPE:
            half = (len(items) + 1) // 2
            validation += items[:half]
            test += items[half:]
            continue
        n_val = max(1, round(len(items) * params.validation_fraction))
        n_test = max(1, round(len(items) * params.test_fraction))
        validation += items[:n_val]
        test += items[n_val : n_val + n_test]
        train += items[n_val + n_test :]
    return train, validation, test


class _Watch(RunWatch):
    """The run's bar and log from each pipeline's progress."""

    def __init__(self, run_id: int, checkpoint: Checkpoint, pipelines: list[str]):
        super().__init__(run_id, checkpoint)
        # Fine-tuning dominates the bar; the ensemble only combines members fitted before it.
        from training.pipelines.intents import training_order

        weights = {"tfidf": 1.0, "embedding": 2.0, "finetuned": 8.0}
        order = training_order(pipelines)
        total = sum(weights[p] for p in order) or 1.0
        spans, low = {}, DATA_END
        for p in order:
            high = low + (TRAIN_END - DATA_END) * weights[p] / total
            spans[p], low = (low, high), high
        self.spans = spans

    def pipeline_progress(self, pipeline: str, fraction: float, line: str) -> None:
        low, high = self.spans.get(pipeline, (DATA_END, TRAIN_END))
        self.report(low + (high - low) * min(max(fraction, 0.0), 1.0), line, phase=pipeline)


def _summary(report: dict) -> dict:
    return {k: report.get(k) for k in (*SUMMARY_KEYS, "n", "n_oos", "p95_ms", "train_s")}


def intent_train(run: TrainingRun, checkpoint: Checkpoint) -> PipelineResult:
    """The intent pipeline: split the examples, train and compare the pipelines, save the best.

    Raises TrainingRunError naming the intents with too few examples (the run fails with that message),
    RunCancelled when the run is cancelled (nothing is left behind).
    """
    from training.pipelines.intents import IntentConfig, intent_pipelines_train

    params = IntentParameters.from_parameters(run.parameters)
    watch = _Watch(run.id, checkpoint, params.pipelines)
    watch.report(0.0, f"collecting examples (pipelines {', '.join(params.pipelines)}, seed {params.seed})")
    try:
        records = intent_training_set(min_examples=params.min_examples)
    except TooLittleDataError as exc:
        raise TrainingRunError(str(exc)) from None
    train, validation, test = split_records(records, params)
    labels = sorted({r.label for r in train})
    watch.report(
        DATA_END,
        f"{len(records)} examples of {len(labels)} intents: {len(train)} train, {len(validation)} validation, "
        f"{len(test)} test ({sum(r.label == OUT_OF_SCOPE for r in records)} out of scope, never trained on)",
        phase="data",
    )
    config = IntentConfig(
        pipelines=tuple(params.pipelines),
        encoder=params.encoder,
        int8=params.int8,
        oos_score=params.oos_score,
        seed=params.seed,
        threads=0,
    )
    config.fine_tune.epochs = params.epochs
    config.fine_tune.objective = params.objective
    config.fine_tune.length_grouped = params.length_grouped
    config.fine_tune.seed = params.seed
    name = f"intent-run-{run.id}"
    root = Path(settings.MODEL_DIR) / ModelKind.INTENT
    root.mkdir(parents=True, exist_ok=True)
    tmp = directory_tmp(root)
    try:
        try:
            results = intent_pipelines_train(
                train, validation, config, progress=watch.pipeline_progress, should_stop=watch.should_stop
            )
        except InterruptedError:
            raise RunCancelled from None
        if watch.cancelled:
            raise RunCancelled
        watch.report(TRAIN_END, f"evaluating {len(results)} pipelines on {len(test)} test examples", phase="evaluate")
        texts, truth = [r.text for r in test], [r.label for r in test]
        reports = {}
        for pipeline, result in results.items():
            predictions = result.model.predict(texts)
            times = []
            for text in texts[:LATENCY_QUERIES]:
                started = time.perf_counter()
                result.model.predict([text])
                times.append((time.perf_counter() - started) * 1000)
            report = evaluation_report(
                truth, [p.label for p in predictions], labels=labels, confidences=[p.confidence for p in predictions]
            )
            report.update(
                train_s=result.train_s,
                p95_ms=round(float(np.percentile(times, 95)), 2) if times else None,
                validation=_summary(result.validation),
                threshold=result.threshold,
                temperature=result.model.temperature,
            )
            reports[pipeline] = report
        comparison = reports_compare(reports)
        best = comparison["best"]
        model = results[best].model
        watch.report(EVALUATE_END, f"best: {best} ({_figures(reports[best])})", phase="evaluate")
        kfold = None
        if params.kfold:
            kfold = _kfold(records, params, config, best, watch)
        meta = {
            "run_id": run.id,
            "git_revision": git_revision(),
            "parameters": asdict(params),
            "examples": {"total": len(records), "train": len(train), "validation": len(validation), "test": len(test)},
        }
        model.meta.update(meta)
        model.save(tmp, config)
        final = root / name
        directory_publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    metrics = {
        "pipeline": best,
        **{k: reports[best].get(k) for k in SUMMARY_KEYS},
        "threshold": model.threshold,
        "temperature": model.temperature,
        "labels": labels,
        "report": reports[best],
        "pipelines": {p: _summary(r) for p, r in reports.items()},
        "comparison": comparison,
        "kfold": kfold,
        "examples": meta["examples"],
    }
    return PipelineResult(name=name, artifact_path=final, config={**meta, "pipeline": best}, metrics=metrics)


def _figures(report: dict) -> str:
    parts = [f"accuracy {report['accuracy']:.3f}", f"macro-F1 {report['macro_f1']:.3f}"]
    if report.get("oos_recall") is not None:
        parts.append(f"out-of-scope recall {report['oos_recall']:.3f}")
    return ", ".join(parts)


def _kfold(records, params: IntentParameters, config, pipeline: str, watch: _Watch) -> dict:
    """k-fold cross-validation of `pipeline` on the in-scope examples (each fold tunes on its own split)."""
    from training.pipelines.intents import IntentConfig, intent_pipelines_train

    inscope = [r for r in records if r.label != OUT_OF_SCOPE]
    fold_config = IntentConfig(**{**asdict(config), "pipelines": (pipeline,)})

    def fit_predict(train_texts, train_labels, test_texts):
        fold = [IntentRecord(t, lbl) for t, lbl in zip(train_texts, train_labels, strict=True)]
        fit, val, _ = split_records(fold, IntentParameters(**{**asdict(params), "test_fraction": 0.05}))
        model = intent_pipelines_train(fit, val, fold_config, should_stop=watch.should_stop)[pipeline].model
        predictions = model.predict(test_texts)
        return [p.label for p in predictions], np.array([p.confidence for p in predictions])

    def progress(done: int, total: int) -> None:
        watch.report(EVALUATE_END + (1 - EVALUATE_END) * done / total, f"k-fold: fold {done}/{total}", phase="kfold")

    try:
        result = kfold_evaluate(
            [r.text for r in inscope], [r.label for r in inscope], fit_predict=fit_predict, k=params.kfold,
            seed=params.seed, progress=progress,
        )  # fmt: skip
    except InterruptedError:
        raise RunCancelled from None
    result.pop("pooled", None)  # the folds' figures are the point; the pooled report repeats the main one
    return result


def intent_check(parameters: dict) -> IntentParameters:
    return IntentParameters.from_parameters(parameters)
