"""How far out-of-scope scoring can take a trained intent model: the deployed confidence against the others.

    .venv/bin/python bench/intents.py --clinc ../shared/data/clinc150/data_full.json --save /tmp/clinc
    .venv/bin/python bench/intent_ceiling.py --clinc ../shared/data/clinc150/data_full.json --model /tmp/clinc

The model is one `bench/intents.py --save` wrote (a `finetuned` or `ensemble` pipeline). The intent is
always the model's best; only the score that sends a query out of scope changes:

- `msp`: the model's calibrated confidence (the platform's `oos_score` "confidence");
- `max_logit`, `energy`: the fine-tuned head's largest logit, and the log-sum-exp of its logits;
- `mahalanobis`: the distance of the fine-tuned sentence embedding to the nearest intent's mean under
  the intents' shared covariance (Lee et al. 2018; Podolskiy et al. 2021), Ledoit-Wolf shrunk;
- `knn`: mean cosine similarity to the 10 nearest training sentences;
- `msp+mahalanobis`: their standardised scores, averaged (a quarter / three quarters).

For each score: the protocol's figures (threshold chosen on validation, maximising accuracy, as
`bench/intents.py` does) and the ceiling: in-scope accuracy on test at the threshold that catches
`--recall` of the test's out-of-scope queries (chosen on test itself, so an upper bound, not a result).
The last line is JSON: {"dataset", "model", "recall", "raw_inscope_accuracy", "scores": {NAME: {...}}}.
"""

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.covariance import LedoitWolf  # noqa: E402

from bench.intents import log, splits_clinc  # noqa: E402
from training.pipelines import intent_encoders as enc  # noqa: E402
from training.pipelines.intent_classifiers import EnsembleClassifier, FineTunedClassifier  # noqa: E402
from training.pipelines.intent_data import OUT_OF_SCOPE  # noqa: E402
from training.pipelines.intent_eval import threshold_apply, threshold_choose  # noqa: E402
from training.pipelines.intents import IntentModel  # noqa: E402

NEIGHBOURS = 10
MSP_SHARE = 0.25


def finetuned_of(model: IntentModel) -> FineTunedClassifier:
    classifier = model.classifier
    if isinstance(classifier, EnsembleClassifier):
        classifier = next((c for c, _, _ in classifier.members if isinstance(c, FineTunedClassifier)), None)
    if not isinstance(classifier, FineTunedClassifier):
        raise SystemExit("the model has no fine-tuned encoder: save a finetuned or ensemble pipeline")
    return classifier


def embeddings(classifier: FineTunedClassifier, texts: list[str]) -> np.ndarray:
    module = classifier.module
    return enc.encode(module.embed, classifier.tokenizer, texts, max_length=classifier.config.fine_tune.max_length)


def ood_scores(model: IntentModel, train, val_texts, test_texts) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each score on validation and test: higher is more in scope."""
    classifier = finetuned_of(model)
    labels = {label: i for i, label in enumerate(model.labels)}
    train_texts = [r.text for r in train if r.label in labels]
    targets = np.array([labels[r.label] for r in train if r.label in labels])
    log(f"embedding {len(train_texts) + len(val_texts) + len(test_texts)} sentences")
    f_train, f_val, f_test = (embeddings(classifier, t) for t in (train_texts, val_texts, test_texts))
    head = classifier.module.head
    weight, bias = head.weight.detach().float().numpy(), head.bias.detach().float().numpy()

    means = np.stack([f_train[targets == c].mean(0) for c in range(len(labels))])
    precision = LedoitWolf().fit(f_train - means[targets]).precision_
    unit_train = f_train / np.linalg.norm(f_train, axis=1, keepdims=True)

    def mahalanobis(f):
        return -np.min([((f - m) @ precision * (f - m)).sum(1) for m in means], axis=0)

    def knn(f):
        similarity = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ unit_train.T
        return np.sort(similarity, axis=1)[:, -NEIGHBOURS:].mean(1)

    out = {}
    for name, texts, f in (("val", val_texts, f_val), ("test", test_texts, f_test)):
        logits = f @ weight.T + bias
        out[name] = {
            "msp": model.probabilities(texts).max(1),
            "max_logit": logits.max(1),
            "energy": logsumexp(logits, axis=1),
            "mahalanobis": mahalanobis(f),
            "knn": knn(f),
        }
    val, test = out["val"], out["test"]
    mu_p, sd_p = val["msp"].mean(), val["msp"].std()
    mu_m, sd_m = val["mahalanobis"].mean(), val["mahalanobis"].std()
    for part in (val, test):
        part["msp+mahalanobis"] = (
            MSP_SHARE * (part["msp"] - mu_p) / sd_p + (1 - MSP_SHARE) * (part["mahalanobis"] - mu_m) / sd_m
        )
    return {name: (val[name], test[name]) for name in val}


def figures(val_truth, val_best, test_truth, test_best, val_score, test_score, recall: float) -> dict:
    choice = threshold_choose(val_truth, val_best, val_score, objective="accuracy")
    out = threshold_apply(test_best, test_score, choice.threshold)
    inscope = np.array([t != OUT_OF_SCOPE for t in test_truth])
    right = np.array([o == t for o, t in zip(out, test_truth, strict=True)])
    best_right = np.array([b == t for b, t in zip(test_best, test_truth, strict=True)])
    ceiling_threshold = np.quantile(test_score[~inscope], recall)
    return {
        "inscope_accuracy": round(100 * right[inscope].mean(), 2),
        "oos_recall": round(100 * right[~inscope].mean(), 2),
        "inscope_at_recall": round(100 * (best_right & (test_score >= ceiling_threshold))[inscope].mean(), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clinc", required=True, help="a CLINC150 data_full.json")
    parser.add_argument("--model", required=True, help="a folder bench/intents.py --save wrote")
    parser.add_argument("--recall", type=float, default=0.65, help="out-of-scope recall of the ceiling")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset, train, val, test = splits_clinc(args.clinc)
    model = IntentModel.load(args.model)
    log(f"{dataset}: model {model.meta.get('pipeline')} from {args.model}")
    val_texts, test_texts = [r.text for r in val], [r.text for r in test]
    val_truth, test_truth = [r.label for r in val], [r.label for r in test]
    val_best = [p.best for p in model.predict(val_texts)]
    test_best = [p.best for p in model.predict(test_texts)]
    inscope = [(b, t) for b, t in zip(test_best, test_truth, strict=True) if t != OUT_OF_SCOPE]
    raw = round(100 * sum(b == t for b, t in inscope) / len(inscope), 2)
    results = {}
    for name, (val_score, test_score) in ood_scores(model, train, val_texts, test_texts).items():
        results[name] = figures(val_truth, val_best, test_truth, test_best, val_score, test_score, args.recall)
        log(f"{name:16} {json.dumps(results[name])}")
    print(
        json.dumps(
            {
                "dataset": dataset,
                "model": model.meta.get("pipeline"),
                "recall": round(100 * args.recall, 1),
                "raw_inscope_accuracy": raw,
                "scores": results,
            }
        )
    )


if __name__ == "__main__":
    main()
