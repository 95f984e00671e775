"""Evaluation of intent classifiers, as `rasa test nlu` reports it: metrics, threshold, k-fold, comparison.

Out-of-scope detection follows Larson et al. 2019 (CLINC150): a classifier trained on the in-scope intents
answers out of scope when its confidence falls below a threshold chosen on validation data. Every function
here takes plain lists and numpy arrays and returns plain numbers, lists and dicts (JSON-serialisable), so
a report can be stored on a model version and drawn by the admin later.
"""

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from .intent_data import OUT_OF_SCOPE

CALIBRATION_BINS = 10
BEST_RULE = (
    "highest in-scope accuracy + out-of-scope recall (a figure a report lacks counts 0); "
    "ties by macro-F1, then by the order given"
)
FitPredict = Callable[[list[str], list[str], list[str]], tuple[list[str], np.ndarray]]


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # the score (a confidence, or another in-scope score) below which a prediction is OUT_OF_SCOPE
    objective: str  # "balanced" or "accuracy", as asked
    rule: str  # what decided the threshold, in words (differs when validation has no out-of-scope example)
    accuracy: float  # overall accuracy on validation at this threshold
    inscope_accuracy: float | None  # on validation examples whose true label is in scope
    oos_recall: float | None  # share of out-of-scope validation examples caught; None when there are none
    n: int  # validation examples
    n_oos: int  # of which out of scope

    def as_dict(self) -> dict:
        return asdict(self)


def threshold_apply(labels: Sequence[str], confidences: np.ndarray, threshold: float) -> list[str]:
    """`labels` with every prediction whose confidence is below `threshold` replaced by OUT_OF_SCOPE."""
    conf = np.asarray(confidences, dtype=float)
    if len(conf) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(conf)} confidences")
    return [OUT_OF_SCOPE if c < threshold else label for label, c in zip(labels, conf, strict=True)]


def _candidates(conf: np.ndarray) -> np.ndarray:
    """One that keeps every prediction (0 for probabilities; below the lowest score for a score that can be
    negative), then the midpoints between consecutive distinct confidences."""
    distinct = np.unique(conf)
    keep_all = 0.0 if distinct[0] >= 0 else float(distinct[0]) - 1.0
    return np.concatenate([[keep_all], (distinct[:-1] + distinct[1:]) / 2])


def threshold_choose(
    y_true: Sequence[str],
    predicted: Sequence[str],
    confidences: np.ndarray,
    *,
    objective: str = "balanced",
    max_inscope_drop: float = 0.005,
) -> ThresholdChoice:
    """The confidence threshold for `threshold_apply`, chosen on validation predictions.

    Candidates keep every prediction (0, or below the lowest score) or sit midway between consecutive distinct
    confidences (or any in-scope score, higher meaning more in scope), so every way of splitting
    the validation examples by confidence is tried once (rejecting all of them is not a candidate).
    With out-of-scope examples in `y_true`, the threshold maximises in-scope accuracy + out-of-scope recall
    (objective "balanced", Larson et al. 2019) or overall accuracy (objective "accuracy"); among equal
    scores the lowest threshold wins. Without any, neither can be measured, so the threshold is the highest
    one that keeps in-scope accuracy within `max_inscope_drop` (absolute, 0.005 = half a point) of its value
    at threshold 0: it rejects as many unsure predictions as that small cost allows.
    A prediction that is already OUT_OF_SCOPE stays so at every threshold.
    """
    if objective not in ("balanced", "accuracy"):
        raise ValueError(f"objective must be 'balanced' or 'accuracy', not {objective!r}")
    truth, pred = np.asarray(y_true, dtype=object), np.asarray(predicted, dtype=object)
    conf = np.asarray(confidences, dtype=float)
    if not (len(truth) == len(pred) == len(conf)) or len(truth) == 0:
        raise ValueError("y_true, predicted and confidences must be non-empty and of the same length")
    oos = truth == OUT_OF_SCOPE
    n, n_oos = len(truth), int(oos.sum())
    thresholds = _candidates(conf)
    # Raising the threshold only rejects: an in-scope hit survives while its confidence >= t, an
    # out-of-scope example is caught when predicted OUT_OF_SCOPE or when its confidence < t.
    hits = np.sort(conf[~oos & (pred == truth)])
    kept_hits = len(hits) - np.searchsorted(hits, thresholds, side="left")
    missed = np.sort(conf[oos & (pred != OUT_OF_SCOPE)])
    caught = int((oos & (pred == OUT_OF_SCOPE)).sum()) + np.searchsorted(missed, thresholds, side="left")
    n_in = n - n_oos
    inscope = kept_hits / n_in if n_in else np.zeros(len(thresholds))
    recall = caught / n_oos if n_oos else None
    if n_oos:
        score = (inscope + recall) if objective == "balanced" else (kept_hits + caught) / n
        best = int(np.argmax(score))  # the first maximum: the lowest threshold
        rule = "max in-scope accuracy + out-of-scope recall" if objective == "balanced" else "max accuracy"
    else:
        within = np.nonzero(inscope >= inscope[0] - max_inscope_drop - 1e-12)[0]
        best = int(within[-1])
        rule = f"no out-of-scope example: highest threshold within {max_inscope_drop} of the best in-scope accuracy"
    return ThresholdChoice(
        threshold=float(thresholds[best]),
        objective=objective,
        rule=rule,
        accuracy=float((kept_hits[best] + caught[best]) / n),
        inscope_accuracy=float(inscope[best]) if n_in else None,
        oos_recall=float(recall[best]) if recall is not None else None,
        n=n,
        n_oos=n_oos,
    )


def _labels_order(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    """`labels` (or the sorted labels seen), then any label seen but not given; OUT_OF_SCOPE last."""
    given = list(dict.fromkeys(labels)) if labels is not None else sorted(set(y_true) | set(y_pred))
    given += sorted((set(y_true) | set(y_pred)) - set(given))
    return [label for label in given if label != OUT_OF_SCOPE] + [OUT_OF_SCOPE] * (OUT_OF_SCOPE in given)


def calibration_summary(correct: np.ndarray, confidences: np.ndarray, *, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error over `bins` equal-width confidence bins, and each bin's figures.

    ECE = sum over bins of |accuracy - mean confidence| weighted by the bin's share of predictions.
    A confidence of exactly 1 falls in the last bin; an empty bin has accuracy and confidence None.
    """
    conf = np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0)
    right = np.asarray(correct, dtype=bool)
    index = np.minimum((conf * bins).astype(int), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        accuracy = float(right[inside].mean()) if count else None
        mean_conf = float(conf[inside].mean()) if count else None
        if count:
            ece += abs(accuracy - mean_conf) * count / len(conf)
        rows.append(
            {"lower": b / bins, "upper": (b + 1) / bins, "count": count, "accuracy": accuracy, "confidence": mean_conf}
        )
    return {"ece": float(ece), "mean_confidence": float(conf.mean()) if len(conf) else None, "bins": rows}


def evaluation_report(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    confidences: np.ndarray | None = None,
    top_pairs: int = 10,
) -> dict:
    """The figures of one evaluation, JSON-serialisable.

    accuracy counts every example; inscope_accuracy only those whose true label is not OUT_OF_SCOPE (a
    prediction of OUT_OF_SCOPE for them is wrong); oos_recall and oos_precision are about the
    OUT_OF_SCOPE label and None when the truth has none (inscope_accuracy likewise when it has only those).
    macro_f1 is the mean F1 of the in-scope labels present in the truth; weighted_f1 weighs every
    label's F1 by its support. The confusion matrix's rows are true labels, columns predicted, in
    `labels` order (plus any label seen but not listed; OUT_OF_SCOPE last). confused_pairs are the
    `top_pairs` most frequent off-diagonal cells. With `confidences` (of each predicted label) comes a
    calibration summary (see calibration_summary).
    """
    truth, pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    if len(truth) != len(pred) or len(truth) == 0:
        raise ValueError("y_true and y_pred must be non-empty and of the same length")
    order = _labels_order(y_true, y_pred, labels)
    oos = truth == OUT_OF_SCOPE
    correct = truth == pred
    precision, recall, f1, support = precision_recall_fscore_support(truth, pred, labels=order, zero_division=0)
    present = [label for label in order if label != OUT_OF_SCOPE and label in set(y_true)]
    at = {label: i for i, label in enumerate(order)}
    matrix = np.zeros((len(order), len(order)), dtype=int)
    np.add.at(matrix, ([at[t] for t in truth], [at[p] for p in pred]), 1)
    pairs = [(order[i], order[j], int(matrix[i, j])) for i, j in zip(*np.nonzero(matrix), strict=True) if i != j]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    predicted_oos = pred == OUT_OF_SCOPE
    report = {
        "n": len(truth),
        "n_inscope": int((~oos).sum()),
        "n_oos": int(oos.sum()),
        "accuracy": float(correct.mean()),
        "inscope_accuracy": float(correct[~oos].mean()) if (~oos).any() else None,
        "oos_recall": float(predicted_oos[oos].mean()) if oos.any() else None,
        "oos_precision": (float(oos[predicted_oos].mean()) if predicted_oos.any() else 0.0) if oos.any() else None,
        "macro_f1": float(f1_score(truth, pred, labels=present, average="macro", zero_division=0)) if present else None,
        "weighted_f1": float(f1_score(truth, pred, labels=order, average="weighted", zero_division=0)),
        "per_intent": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(order, precision, recall, f1, support, strict=True)
        },
        "confusion": {"labels": order, "matrix": matrix.astype(int).tolist()},
        "confused_pairs": [{"true": a, "predicted": b, "count": c} for a, b, c in pairs[:top_pairs]],
    }
    if confidences is not None:
        conf = np.asarray(confidences, dtype=float)
        if len(conf) != len(truth):
            raise ValueError(f"{len(truth)} predictions but {len(conf)} confidences")
        report["calibration"] = calibration_summary(correct, conf)
    return report


def _mean_std(values: list[float | None]) -> dict:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(present)), "std": float(np.std(present))}


def kfold_evaluate(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    fit_predict: FitPredict,
    k: int = 5,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Stratified k-fold cross-validation of `fit_predict(train_texts, train_labels, test_texts)`.

    Folds are shuffled with `seed`. When a label has fewer than `k` examples the folds are reduced to the
    smallest count of a label with at least two (`k` and `note` say so); a label with a single example
    cannot be tested, so it joins every fold's training data and is named in `too_few`. Returns the
    mean and (population) standard deviation of accuracy and macro-F1 over folds, each fold's figures,
    and `pooled`: evaluation_report of every out-of-fold prediction together. `progress(done, total)` is
    called after each fold.
    """
    if k < 2:
        raise ValueError("k-fold needs k >= 2")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    counts = Counter(labels)
    too_few = sorted(label for label, count in counts.items() if count < 2)
    testable = [i for i, label in enumerate(labels) if counts[label] >= 2]
    if not testable:
        raise ValueError("k-fold needs at least one label with two examples")
    folds = min(k, min(counts[labels[i]] for i in testable))
    notes = []
    if folds < k:
        notes.append(f"{folds} folds instead of {k}: the smallest label has {folds} examples")
    if too_few:
        notes.append(f"{len(too_few)} label(s) with one example are only trained on: {', '.join(too_few)}")
    always_train = [i for i, label in enumerate(labels) if counts[label] < 2]
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    y = np.asarray([labels[i] for i in testable], dtype=object)
    rows, pooled_true, pooled_pred, pooled_conf = [], [], [], []
    for number, (train_at, test_at) in enumerate(splitter.split(np.zeros(len(y)), y), start=1):
        train = [testable[i] for i in train_at] + always_train
        test = [testable[i] for i in test_at]
        started = time.perf_counter()
        pred, conf = fit_predict([texts[i] for i in train], [labels[i] for i in train], [texts[i] for i in test])
        seconds = time.perf_counter() - started
        truth = [labels[i] for i in test]
        fold = evaluation_report(truth, list(pred), confidences=conf, top_pairs=0)
        keys = ("accuracy", "macro_f1", "inscope_accuracy", "oos_recall")
        row = {"fold": number, "n_train": len(train), "n_test": len(test), "seconds": round(seconds, 3)}
        rows.append(row | {key: fold[key] for key in keys})
        pooled_true += truth
        pooled_pred += list(pred)
        pooled_conf += list(np.asarray(conf, dtype=float))
        if progress is not None:
            progress(number, folds)
    return {
        "k_requested": k,
        "k": folds,
        "seed": seed,
        "n": len(texts),
        "too_few": too_few,
        "note": "; ".join(notes) or None,
        "accuracy": _mean_std([row["accuracy"] for row in rows]),
        "macro_f1": _mean_std([row["macro_f1"] for row in rows]),
        "folds": rows,
        "pooled": evaluation_report(pooled_true, pooled_pred, confidences=np.asarray(pooled_conf)),
    }


def _figure(report: dict, key: str) -> float | None:
    value = report.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def reports_compare(reports: dict[str, dict], *, top_intents: int = 10) -> dict:
    """Pipelines side by side: a row of headline figures each, the intents where their F1 differs most,
    and the best pipeline by BEST_RULE.

    `rows` hold accuracy, inscope_accuracy, oos_recall, macro_f1, p95_ms and train_s (None when a report
    lacks one); `intent_differences` the `top_intents` intents with the widest F1 spread, each with its F1
    per pipeline in `pipelines` order (None where a pipeline has no figure for it).
    """
    names = list(reports)
    keys = ("accuracy", "inscope_accuracy", "oos_recall", "macro_f1", "p95_ms", "train_s")
    rows = [{"name": name} | {key: _figure(reports[name], key) for key in keys} for name in names]

    def merit(row: dict) -> tuple[float, float]:
        return ((row["inscope_accuracy"] or 0.0) + (row["oos_recall"] or 0.0), row["macro_f1"] or 0.0)

    best = max(rows, key=merit)["name"] if rows else None  # max keeps the first of equals: the order given
    intents = sorted({label for name in names for label in reports[name].get("per_intent", {})})
    differences = []
    for intent in intents:
        f1s = [(reports[name].get("per_intent", {}).get(intent) or {}).get("f1") for name in names]
        present = [f for f in f1s if f is not None]
        spread = max(present) - min(present) if len(present) > 1 else 0.0
        differences.append({"intent": intent, "f1": f1s, "spread": float(spread)})
    differences.sort(key=lambda d: (-d["spread"], d["intent"]))
    for row in rows:
        row["best"] = row["name"] == best
    return {
        "pipelines": names,
        "rows": rows,
        "best": best,
        "best_rule": BEST_RULE,
        "intent_differences": [d for d in differences if d["spread"] > 0][:top_intents],
    }
