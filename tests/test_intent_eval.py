"""Intent evaluation (training/pipelines/intent_eval.py): metrics on hand-made predictions whose figures are
worked out by hand, the out-of-scope threshold on constructed validation sets, k-fold with a real
nearest-neighbour classifier, the SVG pictures (charts.py) and the admin report fragment."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import KNeighborsClassifier

from training.pipelines.charts import OTHER_LABEL, confusion_matrix_svg, f1_bars_svg, reliability_svg
from training.pipelines.intent_eval import (
    OUT_OF_SCOPE,
    evaluation_report,
    kfold_evaluate,
    reports_compare,
    threshold_apply,
    threshold_choose,
)

OOS = OUT_OF_SCOPE
SVG = "{http://www.w3.org/2000/svg}"


def test_two_of_three_correct() -> None:
    report = evaluation_report(["a", "a", "b"], ["a", "b", "b"])
    assert report["n"] == 3
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["inscope_accuracy"] == pytest.approx(2 / 3)
    assert report["oos_recall"] is None and report["oos_precision"] is None
    # a: precision 1/1, recall 1/2; b: precision 1/2, recall 1/1; both F1 = 2/3
    assert report["per_intent"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert report["per_intent"]["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["macro_f1"] == pytest.approx(2 / 3)
    assert report["weighted_f1"] == pytest.approx(2 / 3)
    assert report["confusion"] == {"labels": ["a", "b"], "matrix": [[1, 1], [0, 1]]}
    assert report["confused_pairs"] == [{"true": "a", "predicted": "b", "count": 1}]
    assert "calibration" not in report
    assert json.loads(json.dumps(report)) == report


def test_out_of_scope_counting() -> None:
    truth = ["a", "a", "b", OOS, OOS, OOS]
    pred = ["a", OOS, "b", OOS, OOS, "a"]
    report = evaluation_report(truth, pred)
    assert report["accuracy"] == pytest.approx(4 / 6)
    # three in-scope examples; answering out of scope for one of them is wrong
    assert report["inscope_accuracy"] == pytest.approx(2 / 3)
    assert report["oos_recall"] == pytest.approx(2 / 3)
    assert report["oos_precision"] == pytest.approx(2 / 3)  # three OOS answers, two right
    # macro-F1 over a (P 1/2, R 1/2) and b (1, 1) only, not the out-of-scope label
    assert report["macro_f1"] == pytest.approx(0.75)
    assert report["n_inscope"] == 3 and report["n_oos"] == 3
    assert report["confusion"]["labels"] == ["a", "b", OOS]
    assert report["confusion"]["matrix"] == [[1, 0, 1], [0, 1, 0], [1, 0, 2]]
    assert report["confused_pairs"] == [
        {"true": "a", "predicted": OOS, "count": 1},
        {"true": OOS, "predicted": "a", "count": 1},
    ]


def test_pairs_most_frequent_first_and_limited() -> None:
    truth = ["a"] * 3 + ["b"] * 2 + ["c"]
    pred = ["b", "b", "b", "c", "a", "a"]
    report = evaluation_report(truth, pred, top_pairs=2)
    assert report["confused_pairs"] == [
        {"true": "a", "predicted": "b", "count": 3},
        {"true": "b", "predicted": "a", "count": 1},
    ]


def test_given_labels_keep_their_order_and_unlisted_ones_are_kept() -> None:
    report = evaluation_report(["b", "a", OOS], ["b", "c", OOS], labels=[OOS, "b", "a"])
    assert report["confusion"]["labels"] == ["b", "a", "c", OOS]
    assert report["per_intent"]["c"]["support"] == 0
    assert report["oos_precision"] == 1.0 and report["oos_recall"] == 1.0


def test_no_oos_predicted_gives_zero_precision() -> None:
    report = evaluation_report(["a", OOS], ["a", "a"])
    assert report["oos_recall"] == 0.0 and report["oos_precision"] == 0.0


def test_calibration_error_by_hand() -> None:
    report = evaluation_report(
        ["a", "a", "b", "b"], ["a", "a", "b", "a"], confidences=np.array([0.95, 0.95, 0.15, 0.15])
    )
    calibration = report["calibration"]
    # bin 0.9-1.0: accuracy 1, confidence 0.95; bin 0.1-0.2: accuracy 0.5, confidence 0.15; half the weight each
    assert calibration["ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.35)
    bins = calibration["bins"]
    assert len(bins) == 10 and [b["count"] for b in bins] == [0, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[1]["accuracy"] == 0.5 and bins[5]["accuracy"] is None
    full = evaluation_report(["a"], ["a"], confidences=np.array([1.0]))
    assert full["calibration"]["bins"][9]["count"] == 1 and full["calibration"]["ece"] == 0.0


def test_threshold_apply() -> None:
    assert threshold_apply(["a", "b", "c"], np.array([0.9, 0.5, 0.49]), 0.5) == ["a", "b", OOS]
    with pytest.raises(ValueError):
        threshold_apply(["a"], np.array([0.1, 0.2]), 0.5)


# Validation set: five right in-scope answers, two out-of-scope examples the classifier gave an intent to.
THRESHOLD_TRUTH = ["a", "a", "b", "b", "a", OOS, OOS]
THRESHOLD_PRED = ["a", "a", "b", "b", "a", "b", "a"]
THRESHOLD_CONF = np.array([0.9, 0.8, 0.6, 0.45, 0.45, 0.5, 0.3])


def test_threshold_balanced_maximises_inscope_accuracy_plus_oos_recall() -> None:
    choice = threshold_choose(THRESHOLD_TRUTH, THRESHOLD_PRED, THRESHOLD_CONF)
    # 0.55 keeps 3 of 5 in scope and catches both OOS: 0.6 + 1.0 beats 0.375's 1.0 + 0.5
    assert choice.threshold == pytest.approx(0.55)
    assert choice.inscope_accuracy == pytest.approx(0.6)
    assert choice.oos_recall == 1.0
    assert choice.accuracy == pytest.approx(5 / 7)
    assert (choice.n, choice.n_oos, choice.objective) == (7, 2, "balanced")
    applied = threshold_apply(THRESHOLD_PRED, THRESHOLD_CONF, choice.threshold)
    assert evaluation_report(THRESHOLD_TRUTH, applied)["oos_recall"] == 1.0
    assert json.dumps(choice.as_dict())


def test_threshold_accuracy_objective() -> None:
    choice = threshold_choose(THRESHOLD_TRUTH, THRESHOLD_PRED, THRESHOLD_CONF, objective="accuracy")
    # 0.375 gets 5 in scope + 1 OOS = 6 of 7 right
    assert choice.threshold == pytest.approx(0.375)
    assert choice.accuracy == pytest.approx(6 / 7)
    assert choice.oos_recall == 0.5
    with pytest.raises(ValueError):
        threshold_choose(THRESHOLD_TRUTH, THRESHOLD_PRED, THRESHOLD_CONF, objective="f1")


def test_threshold_counts_oos_predictions_as_caught() -> None:
    choice = threshold_choose(["a", OOS], ["a", OOS], np.array([0.2, 0.9]))
    assert choice.threshold == 0.0 and choice.oos_recall == 1.0 and choice.accuracy == 1.0


def test_threshold_on_a_score_that_can_be_negative() -> None:
    # A Mahalanobis score (minus a squared distance): the same split as THRESHOLD_CONF's, shifted below 0.
    scores = THRESHOLD_CONF - 10.0
    choice = threshold_choose(THRESHOLD_TRUTH, THRESHOLD_PRED, scores, objective="accuracy")
    assert choice.threshold == pytest.approx(0.375 - 10.0) and choice.accuracy == pytest.approx(6 / 7)
    # Keeping everything is still a candidate: below the lowest score, not 0 (which would reject all).
    everything_in = threshold_choose(["a", "b"], ["a", "b"], np.array([-40.0, -3.0]), objective="accuracy")
    assert everything_in.threshold < -40.0 and everything_in.accuracy == 1.0
    assert threshold_apply(["a", "b"], np.array([-40.0, -3.0]), everything_in.threshold) == ["a", "b"]


def test_threshold_without_oos_examples_allows_a_small_inscope_drop() -> None:
    # 198 right at 0.9, one right at 0.3, one wrong at 0.1: in-scope accuracy 0.995 at thresholds 0 and 0.2,
    # 0.99 at 0.6 (a drop of exactly 0.005)
    truth = ["a"] * 200
    pred = ["a"] * 199 + ["b"]
    conf = np.array([0.9] * 198 + [0.3, 0.1])
    choice = threshold_choose(truth, pred, conf)
    assert choice.threshold == pytest.approx(0.6)
    assert choice.inscope_accuracy == pytest.approx(0.99)
    assert choice.oos_recall is None and choice.n_oos == 0
    assert "no out-of-scope" in choice.rule
    strict = threshold_choose(truth, pred, conf, max_inscope_drop=0.0)
    assert strict.threshold == pytest.approx(0.2)  # rejecting the wrong answer costs nothing
    assert strict.inscope_accuracy == pytest.approx(0.995)


TOPICS = {
    "weather": ["rain", "sunny", "forecast", "storm", "snow", "wind", "cloudy", "heat", "cold", "fog"],
    "sport": ["football", "match", "goal", "tennis", "score", "league", "coach", "race", "team", "cup"],
    "music": ["concert", "album", "song", "band", "guitar", "singer", "jazz", "tour", "lyrics", "piano"],
}


def _dataset(per_label: dict[str, int]) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for label, count in per_label.items():
        words = TOPICS.get(label, [label])
        for i in range(count):
            texts.append(f"tell me about {words[i % len(words)]} {words[(i + 3) % len(words)]} {label}")
            labels.append(label)
    return texts, labels


def nearest_neighbour(train_texts: list[str], train_labels: list[str], test_texts: list[str]):
    vectorizer = TfidfVectorizer().fit(train_texts)
    model = KNeighborsClassifier(n_neighbors=1).fit(vectorizer.transform(train_texts), train_labels)
    probabilities = model.predict_proba(vectorizer.transform(test_texts))
    return list(model.classes_[probabilities.argmax(axis=1)]), probabilities.max(axis=1)


def test_kfold_with_nearest_neighbour() -> None:
    texts, labels = _dataset({"weather": 10, "sport": 10, "music": 10})
    seen: list[tuple[int, int]] = []
    result = kfold_evaluate(
        texts, labels, fit_predict=nearest_neighbour, k=5, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert result["k"] == 5 and result["note"] is None and result["too_few"] == []
    assert [(f["n_train"], f["n_test"]) for f in result["folds"]] == [(24, 6)] * 5
    assert result["accuracy"] == {"mean": 1.0, "std": 0.0}
    assert result["macro_f1"]["mean"] == 1.0
    assert result["pooled"]["n"] == 30 and result["pooled"]["accuracy"] == 1.0
    assert json.loads(json.dumps(result)) == result
    again = kfold_evaluate(texts, labels, fit_predict=nearest_neighbour, k=5)
    assert [f["accuracy"] for f in again["folds"]] == [f["accuracy"] for f in result["folds"]]


def test_kfold_reduces_folds_for_a_small_class_and_trains_on_singletons() -> None:
    texts, labels = _dataset({"weather": 10, "sport": 10, "rare": 3, "single": 1})
    result = kfold_evaluate(texts, labels, fit_predict=nearest_neighbour, k=5)
    assert result["k_requested"] == 5 and result["k"] == 3 and len(result["folds"]) == 3
    assert "3 folds instead of 5" in result["note"] and "single" in result["note"]
    assert result["too_few"] == ["single"]
    assert all(f["n_train"] + f["n_test"] == 24 for f in result["folds"])  # the singleton trains in every fold
    assert result["pooled"]["n"] == 23 and "single" not in result["pooled"]["per_intent"]
    assert result["pooled"]["per_intent"]["rare"]["support"] == 3


def test_kfold_refuses_what_it_cannot_split() -> None:
    with pytest.raises(ValueError):
        kfold_evaluate(["x", "y"], ["a", "b"], fit_predict=nearest_neighbour)
    with pytest.raises(ValueError):
        kfold_evaluate(["x", "y"], ["a", "a"], fit_predict=nearest_neighbour, k=1)


def test_reports_compare_best_by_rule_then_macro_f1() -> None:
    reports = {
        "tfidf": {"accuracy": 0.9, "inscope_accuracy": 0.92, "oos_recall": 0.5, "macro_f1": 0.90, "train_s": 12.0,
                  "per_intent": {"a": {"f1": 0.9}, "b": {"f1": 0.5}, "c": {"f1": 0.8}}},
        "minilm": {"accuracy": 0.93, "inscope_accuracy": 0.95, "oos_recall": 0.47, "macro_f1": 0.95, "p95_ms": 4.5,
                   "per_intent": {"a": {"f1": 0.9}, "b": {"f1": 0.9}, "c": {"f1": 0.7}}},
        "rules": {"accuracy": 0.5, "macro_f1": 0.4, "per_intent": {"a": {"f1": 0.2}}},
    }  # fmt: skip
    comparison = reports_compare(reports)
    assert comparison["pipelines"] == ["tfidf", "minilm", "rules"]
    # 0.92 + 0.50 = 1.42 ties 0.95 + 0.47 = 1.42: minilm wins on macro-F1
    assert comparison["best"] == "minilm"
    assert [row["best"] for row in comparison["rows"]] == [False, True, False]
    assert comparison["rows"][0]["p95_ms"] is None and comparison["rows"][1]["p95_ms"] == 4.5
    assert comparison["rows"][2]["oos_recall"] is None
    diffs = comparison["intent_differences"]
    assert [d["intent"] for d in diffs] == ["a", "b", "c"]  # spreads 0.7, 0.4, 0.1
    assert diffs[0]["f1"] == [0.9, 0.9, 0.2] and diffs[2]["f1"] == [0.8, 0.7, None]
    assert diffs[1]["spread"] == pytest.approx(0.4)
    assert reports_compare({})["best"] is None


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 (the project's own SVG; parsing it is the test)


def _texts(svg: str) -> list[str]:
    return ["".join(t.itertext()) for t in _parse(svg).iter(f"{SVG}text")]


def test_confusion_svg_is_xml_and_escapes_labels() -> None:
    labels = ["<script>alert(1)</script>", 'say "hi" & go', "bad\x01char"]
    svg = confusion_matrix_svg(labels, [[5, 1, 0], [2, 3, 0], [0, 0, 4]], title="Test <b>")
    root = _parse(svg)
    assert root.tag == f"{SVG}svg"
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "<b>" not in svg
    assert labels[0] in _texts(svg) and 'say "hi" & go' in _texts(svg)
    assert "5" in _texts(svg)  # counts written in cells of a small matrix
    tips = ["".join(t.itertext()) for t in root.iter(f"{SVG}title")]
    assert any("→" in tip and ": 1 (17%" in tip for tip in tips)


def test_confusion_svg_folds_many_labels_into_other() -> None:
    labels = [f"l{i}" for i in range(10)]
    matrix = [[10 if i == j else 0 for j in range(10)] for i in range(10)]
    matrix[3][7] = 4
    matrix[5][3] = 2
    svg = confusion_matrix_svg(labels, matrix, max_labels=3)
    texts = _texts(svg)
    assert {"l3", "l7", "l5", OTHER_LABEL} <= set(texts)
    assert "l0" not in texts
    title = "".join(next(_parse(svg).iter(f"{SVG}title")).itertext())
    assert "3 most confused of 10" in title
    assert "70" in texts  # the seven other labels' 10 right answers each, summed in the (other) cell
    empty = confusion_matrix_svg([], [])
    assert _parse(empty) is not None


def test_reliability_and_f1_svgs() -> None:
    report = evaluation_report(
        ["<script>", "a", "a", "b"], ["<script>", "a", "b", "b"], confidences=np.array([0.9, 0.8, 0.4, 0.65])
    )
    reliability = reliability_svg(report["calibration"]["bins"])
    root = _parse(reliability)
    assert len([r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]) == 4  # four bins used
    other = {"<script>": {"f1": 0.5}, "a": {"f1": 1.0}}
    bars = f1_bars_svg(report["per_intent"], compare=other, names=("tfidf", "minilm <x>"))
    texts = _texts(bars)
    assert "<script>" not in bars and "minilm <x>" in texts
    intents = [t for t in texts if t in report["per_intent"]]
    assert intents == ["a", "b", "<script>"]  # lowest F1 first: a and b 2/3 (ties by name), then 1.0
    assert "n/a" in texts  # b has no figure in the compared pipeline
    lowest = f1_bars_svg(report["per_intent"], limit=1)
    assert "lowest 1 of 3" in lowest and [t for t in _texts(lowest) if t in report["per_intent"]] == ["a"]


def test_report_template_renders() -> None:
    truth = ["recommend", "recommend", "search", OOS]
    pred = ["recommend", "search", "search", "<script>"]
    report = evaluation_report(truth, pred, confidences=np.array([0.9, 0.6, 0.8, 0.3]))
    report["threshold"] = threshold_choose(truth, pred, np.array([0.9, 0.6, 0.8, 0.3])).as_dict()
    texts, labels = _dataset({"weather": 4, "sport": 4})
    report["kfold"] = kfold_evaluate(texts, labels, fit_predict=nearest_neighbour, k=5)
    report["p95_ms"] = 3.24
    report["svg"] = {
        "confusion": mark_safe(confusion_matrix_svg(report["confusion"]["labels"], report["confusion"]["matrix"])),  # noqa: S308
        "reliability": mark_safe(reliability_svg(report["calibration"]["bins"])),  # noqa: S308
    }
    other = evaluation_report(truth, truth)
    comparison = reports_compare({"tfidf": report, "minilm": other})
    html = render_to_string("admin/training/intent_report.html", {"report": report, "comparison": comparison})
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "0.667" in html  # in-scope accuracy: 2 of 3
    assert "0.500" in html  # accuracy: 2 of 4
    assert "Out-of-scope recall" in html and "3.2 ms" in html
    assert "<td>recommend</td><td>search</td><td>1</td>" in html  # most confused pair
    assert "<svg" in html and html.count("<svg") == 2
    assert "minilm <strong>(best)</strong>" in html
    assert "Cross-validation (4 folds)" in html and "4 folds instead of 5" in html
    assert "1.000 ± 0.000" in html
    plain = render_to_string("admin/training/intent_report.html", {"report": evaluation_report(["a"], ["a"])})
    assert "1.000" in plain and "Pipelines side by side" not in plain and "Cross-validation" not in plain
    assert "Out-of-scope recall" not in plain


def test_report_names_the_score_its_threshold_is_on() -> None:
    truth, pred = ["a", "b", OOS], ["a", "b", "a"]
    report = evaluation_report(truth, pred)
    report["threshold"] = {
        **threshold_choose(truth, pred, np.array([-2.0, -3.0, -9.0])).as_dict(),
        "score": "mahalanobis",
    }
    html = render_to_string("admin/training/intent_report.html", {"report": report})
    assert "below this Mahalanobis score" in html and "below this confidence" not in html
    report["threshold"]["score"] = "confidence"
    assert "below this confidence" in render_to_string("admin/training/intent_report.html", {"report": report})
