"""Intent classifiers: train several pipelines, calibrate them, choose an out-of-scope threshold, deploy the best.

Pipelines (all score the in-scope intents; out of scope is "out-of-scope score below the threshold", the score
being the calibrated confidence or, with a fine-tuned encoder, its Mahalanobis score, whichever validation prefers):

- `tfidf`: word 1-2 and character 2-5 gram TF-IDF with logistic regression (scikit-learn);
- `embedding`: all-MiniLM-L6-v2 sentence embeddings, frozen, with a logistic-regression head;
- `finetuned`: that encoder fine-tuned end to end with a classification head;
- `ensemble`: the calibrated log-probabilities of `finetuned` and `tfidf`, weighted as validation prefers
  (one encoder pass).

Each pipeline's scores are calibrated by temperature scaling on validation data, and its out-of-scope score
and threshold are chosen there too (Larson et al. 2019: train on the in-scope intents, tune the
threshold on validation with its out-of-scope examples). `IntentModel` is what is deployed: one pipeline,
its temperature, out-of-scope score and threshold, saved as a folder with `intent.json`. Plain Python: no Django.
"""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from training.pipelines.intent_classifiers import (
    CLASSIFIERS,
    DEPLOYED_SCOPES,
    ENSEMBLE_MEMBERS,
    ENSEMBLE_WEIGHTS,
    PIPELINES,
    Classifier,
    EnsembleClassifier,
    IntentConfig,
    ensemble_scores,
    log_softmax,
)
from training.pipelines.intent_data import OUT_OF_SCOPE
from training.pipelines.intent_eval import ThresholdChoice, evaluation_report, threshold_apply, threshold_choose

FORMAT = "mediachat.intent/1"
META_FILE = "intent.json"


def temperature_fit(scores: np.ndarray, targets: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of `targets` (Guo et al. 2017)."""
    if len(targets) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return -float(log_softmax(scores / np.exp(log_t))[np.arange(len(targets)), targets].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


@dataclass(frozen=True)
class IntentPrediction:
    label: str  # the intent, or OUT_OF_SCOPE below the threshold
    confidence: float  # calibrated probability of the best in-scope intent
    best: str  # the best in-scope intent, even when out of scope
    ranking: tuple[tuple[str, float], ...]  # the top three (intent, probability)


class IntentModel:
    """A deployed pipeline: its classifier, temperature, out-of-scope score (`scope`: "confidence" or
    "mahalanobis", intent_classifiers.SCOPE_SCORES) and the threshold on that score."""

    def __init__(
        self,
        classifier: Classifier,
        temperature: float,
        threshold: float,
        meta: dict | None = None,
        scope: str = "confidence",
    ):
        if scope not in DEPLOYED_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(DEPLOYED_SCOPES)}, not {scope!r}")
        if scope == "mahalanobis" and not classifier.has_scope:
            raise ValueError(f"this {classifier.name} model has no fine-tuned encoder statistics: no Mahalanobis score")
        self.classifier = classifier
        self.temperature = temperature
        self.threshold = threshold
        self.meta = meta or {}
        self.scope = scope

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return np.exp(log_softmax(self.classifier.scores(texts) / self.temperature))

    def predict(self, texts: Sequence[str]) -> list[IntentPrediction]:
        if not texts:
            return []
        # The Mahalanobis score only where it decides: a model thresholding its confidence skips its products.
        if self.scope == "confidence":
            probs = self.probabilities(texts)
            in_scope = probs.max(axis=1)
        else:
            scores, in_scope = self.classifier.scores_and_scope(texts)
            probs = np.exp(log_softmax(scores / self.temperature))
        out = []
        for row, score in zip(probs, in_scope, strict=True):
            top = np.argsort(-row)[:3]
            best, confidence = self.labels[top[0]], float(row[top[0]])
            out.append(
                IntentPrediction(
                    label=best if score >= self.threshold else OUT_OF_SCOPE,
                    confidence=round(confidence, 4),
                    best=best,
                    ranking=tuple((self.labels[i], round(float(row[i]), 4)) for i in top),
                )
            )
        return out

    def save(self, folder: Path, config: IntentConfig) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.classifier.save(folder)
        meta = {
            **self.meta,
            "format": FORMAT,
            "pipeline": self.classifier.name,
            "labels": self.labels,
            "temperature": self.temperature,
            "threshold": self.threshold,
            "scope": self.scope,
            "config": asdict(config),
        }
        if isinstance(self.classifier, EnsembleClassifier):
            meta["members"] = [
                {"pipeline": c.name, "temperature": t, "weight": w} for c, t, w in self.classifier.members
            ]
        (folder / META_FILE).write_text(json.dumps(meta, indent=1, default=str))

    @classmethod
    def load(cls, folder: str | Path) -> "IntentModel":
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder} is not an intent model ({META_FILE} format {meta.get('format')!r})")
        # A model saved before the runtime and the inference dtype were recorded ran on torch in float32.
        config = IntentConfig(**{"runtime": "torch", "inference_dtype": "float32", **meta["config"]})
        labels = meta["labels"]
        if meta["pipeline"] == EnsembleClassifier.name:
            members = [
                (CLASSIFIERS[m["pipeline"]].load(folder, labels, config), m["temperature"], m["weight"])
                for m in meta["members"]
            ]
            classifier: Classifier = EnsembleClassifier(labels, members)
        else:
            classifier = CLASSIFIERS[meta["pipeline"]].load(folder, labels, config)
        # A model saved before the out-of-scope score could be chosen thresholded its confidence.
        return cls(classifier, meta["temperature"], meta["threshold"], meta, meta.get("scope", "confidence"))


@dataclass
class PipelineResult:
    model: IntentModel
    validation: dict  # evaluation_report on validation, at the chosen threshold
    threshold: dict  # how the threshold was chosen (intent_eval.ThresholdChoice.as_dict)
    fit: dict  # what fitting reported (steps, features...)
    train_s: float


def _split_labels(records) -> tuple[list[str], list[str]]:
    return [r.text for r in records], [r.label for r in records]


def _ensemble_weight(scores: dict, temperatures: dict, targets: np.ndarray, inscope: np.ndarray) -> tuple[float, float]:
    """The first member's weight with the lowest validation loss after calibration, and that temperature."""
    best = None
    for weight in ENSEMBLE_WEIGHTS:
        parts = [
            (scores[m][inscope], temperatures[m], w)
            for m, w in zip(ENSEMBLE_MEMBERS, (weight, 1 - weight), strict=True)
        ]
        combined = ensemble_scores(parts)
        temperature = temperature_fit(combined, targets)
        loss = (
            -float(log_softmax(combined / temperature)[np.arange(len(targets)), targets].mean())
            if len(targets)
            else 0.0
        )
        if best is None or loss < best[0]:
            best = (loss, weight, temperature)
    return best[1], best[2]


def scope_choose(
    val_labels: list[str], predicted: list[str], candidates: dict[str, np.ndarray | None], config: IntentConfig
) -> tuple[str, ThresholdChoice, dict[str, float]]:
    """The out-of-scope score of `candidates` (name → validation scores, None where the pipeline has none)
    that `config.oos_score` asks for, its threshold, and each tried score's objective on validation.

    "auto" keeps the score whose best threshold scores higher on the threshold objective (the calibrated
    confidence on a tie, or when validation has no out-of-scope example to tell them apart); a pipeline
    without a Mahalanobis score (TF-IDF, frozen embeddings) keeps its confidence whatever is asked.
    """
    available = {name: values for name, values in candidates.items() if values is not None}
    if config.oos_score != "auto" and config.oos_score in available:
        available = {config.oos_score: available[config.oos_score]}
    choices = {
        name: threshold_choose(val_labels, predicted, values, objective=config.threshold_objective)
        for name, values in available.items()
    }

    def objective(choice: ThresholdChoice) -> float:
        if config.threshold_objective == "accuracy":
            return choice.accuracy
        return choice.inscope_accuracy + choice.oos_recall

    if len(choices) > 1 and choices["confidence"].n_oos == 0:
        choices = {"confidence": choices["confidence"]}
    tried = {name: round(objective(choice), 6) for name, choice in choices.items()}
    scope = max(choices, key=lambda name: (tried[name], name == "confidence"))
    return scope, choices[scope], tried


def training_order(pipelines: Sequence[str]) -> list[str]:
    """The classifiers `intent_pipelines_train` fits for `pipelines`, in order (an ensemble fits its members)."""
    wanted = set(pipelines) | (set(ENSEMBLE_MEMBERS) if "ensemble" in pipelines else set())
    return [p for p in PIPELINES if p in wanted and p != "ensemble"]


def intent_pipelines_train(
    train: Sequence,
    validation: Sequence,
    config: IntentConfig,
    *,
    progress: Callable[[str, float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, PipelineResult]:
    """Train every pipeline of `config` on `train` (IntentRecords, in scope only) and tune it on `validation`.

    In-scope validation records fit each pipeline's temperature; all of them, OUT_OF_SCOPE included, its
    threshold. `progress(pipeline, fraction, line)` reports each fit in `training_order`, then
    ("validation", 1.0, line) for each pipeline tuned; the result maps each
    pipeline of `config` to its model and validation report.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    report_progress = progress or (lambda *_: None)
    train_texts, train_labels = _split_labels([r for r in train if r.label != OUT_OF_SCOPE])
    labels = sorted(set(train_labels))
    index = {label: i for i, label in enumerate(labels)}
    targets = np.array([index[label] for label in train_labels])
    val_texts, val_labels = _split_labels(validation)
    inscope = np.array([label in index for label in val_labels], dtype=bool)
    val_targets = np.array([index.get(label, -1) for label in val_labels])

    fitted: dict[str, tuple[Classifier, dict, float]] = {}
    scores: dict[str, np.ndarray] = {}
    scopes: dict[str, np.ndarray | None] = {}
    for name in training_order(config.pipelines):
        started = time.monotonic()
        classifier = CLASSIFIERS[name](labels, config)
        fit = classifier.fit(
            train_texts, targets, progress=lambda f, line, n=name: report_progress(n, f, line), should_stop=should_stop
        )
        fitted[name] = (classifier, fit, time.monotonic() - started)
        scores[name], scopes[name] = classifier.scores_and_scope(val_texts)
    temperatures = {name: temperature_fit(s[inscope], val_targets[inscope]) for name, s in scores.items()}
    if "ensemble" in config.pipelines:
        weight, temperatures["ensemble"] = _ensemble_weight(scores, temperatures, val_targets[inscope], inscope)
        weights = (weight, 1.0 - weight)
        members = [(fitted[m][0], temperatures[m], w) for m, w in zip(ENSEMBLE_MEMBERS, weights, strict=True)]
        scores["ensemble"] = ensemble_scores(
            [(scores[m], t, w) for (_, t, w), m in zip(members, ENSEMBLE_MEMBERS, strict=True)]
        )
        seconds = sum(fitted[m][2] for m in ENSEMBLE_MEMBERS)
        fit = {"members": list(ENSEMBLE_MEMBERS), "weights": list(weights)}
        fitted["ensemble"] = (EnsembleClassifier(labels, members), fit, seconds)
        scopes["ensemble"] = scopes.get(ENSEMBLE_MEMBERS[0])

    results: dict[str, PipelineResult] = {}
    for name in config.pipelines:
        classifier, fit, seconds = fitted[name]
        probs = np.exp(log_softmax(scores[name] / temperatures[name]))
        predicted = [labels[i] for i in probs.argmax(axis=1)]
        confidences = probs.max(axis=1)
        candidates = {"confidence": confidences, "mahalanobis": scopes.get(name)}
        scope, choice, tried = scope_choose(val_labels, predicted, candidates, config)
        report = evaluation_report(
            val_labels, threshold_apply(predicted, candidates[scope], choice.threshold), confidences=confidences
        )
        model = IntentModel(classifier, temperatures[name], float(choice.threshold), scope=scope)
        threshold = {**choice.as_dict(), "score": scope, "scores_tried": tried}
        results[name] = PipelineResult(model, report, threshold, fit, round(seconds, 1))
        report_progress(
            "validation",
            1.0,
            f"{name}: validation accuracy {report['accuracy']:.3f}, out of scope below {scope} {choice.threshold:.3f}",
        )
    return results
