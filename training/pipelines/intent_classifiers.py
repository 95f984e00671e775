"""The intent classifiers the platform trains: TF-IDF, frozen embeddings, a fine-tuned encoder, their ensemble.

Each scores texts against the in-scope intents with unnormalised log-scores; `intents.py` calibrates them
(temperature), thresholds them (out of scope) and deploys one. Plain Python: no Django.
"""

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import torch
from scipy import sparse
from sklearn.covariance import LedoitWolf
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from training.pipelines import intent_encoders as enc

logger = logging.getLogger(__name__)

PIPELINES = ("tfidf", "embedding", "finetuned", "ensemble")
ENSEMBLE_MEMBERS = ("finetuned", "tfidf")
ENSEMBLE_WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9)  # the first member's weight tried on validation; the other has the rest
MAX_CHARS = 2000  # a longer message is classified on its start: intents show early, and time stays bounded
# What sends a message out of scope when it falls below the threshold: "confidence", the calibrated
# probability of the best intent; "mahalanobis", the fine-tuned encoder's sentence embedding's closeness to
# the nearest intent (MahalanobisScore); "auto", whichever scores better on validation.
SCOPE_SCORES = ("auto", "confidence", "mahalanobis")
DEPLOYED_SCOPES = SCOPE_SCORES[1:]  # what a trained model thresholds ("auto" is resolved on validation)

Progress = Callable[[float, str], None]  # (fraction of this pipeline, log line or "")


@dataclass
class IntentConfig:
    pipelines: tuple[str, ...] = ("tfidf", "finetuned", "ensemble")  # trained and compared; the best deploys
    # "" is all-MiniLM-L6-v2; a name of encoder_packages.NAMES is that packaged encoder; else a local folder
    encoder: str = ""
    tfidf_c: float = 20.0  # inverse regularisation of the TF-IDF logistic regression
    embedding_c: float = 20.0  # the same, for the frozen-embedding head
    fine_tune: enc.FineTuneConfig = field(default_factory=enc.FineTuneConfig)
    # How validation chooses the out-of-scope threshold (intent_eval.threshold_choose): "accuracy" counts
    # every validation message once, so out of scope weighs as often as it occurs (Larson et al.'s
    # choice); "balanced" weighs in-scope accuracy and out-of-scope recall the same.
    threshold_objective: str = "accuracy"
    oos_score: str = "auto"  # SCOPE_SCORES: "mahalanobis" needs a fine-tuned encoder (finetuned, ensemble)
    threads: int = 0  # torch threads while training; 0 leaves the process's setting
    # What the fine-tuned encoder deploys on (intent_encoders.runtime_name): "onnx" runs its float32 ONNX
    # export on onnxruntime, "torch" the module itself in `inference_dtype`.
    runtime: str = "auto"
    # With the onnx runtime: the export's weights in int8 (intent_encoders.onnx_quantize), which a
    # base-size encoder needs to answer a query within the chat path's budget on a CPU.
    int8: bool = False
    # The torch encoders' dtype after training (intent_encoders.inference_dtype_name); float32 with the
    # onnx runtime, whose scores are float32's. "auto" settings are resolved when the config is made, so a
    # saved model records what its temperature and threshold were fitted on.
    inference_dtype: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.fine_tune, dict):
            self.fine_tune = enc.FineTuneConfig(**self.fine_tune)
        self.pipelines = tuple(self.pipelines)
        if self.oos_score not in SCOPE_SCORES:
            raise ValueError(f"oos_score must be one of {', '.join(SCOPE_SCORES)}, not {self.oos_score!r}")
        unknown = [p for p in self.pipelines if p not in PIPELINES]
        if unknown or not self.pipelines:
            raise ValueError(f"unknown pipelines {unknown}; choose from {', '.join(PIPELINES)}")
        self.runtime = enc.runtime_name(self.runtime)  # refuses an unknown name
        if self.int8 and self.runtime != "onnx":
            raise ValueError("int8 weights need the onnx runtime (onnxruntime and onnxscript installed)")
        resolved = enc.inference_dtype_name(self.inference_dtype)  # refuses an unknown name
        if self.inference_dtype == "auto":
            self.inference_dtype = "float32" if self.runtime == "onnx" else resolved


def _clip(texts: Sequence[str]) -> list[str]:
    return [(t or "")[:MAX_CHARS] for t in texts]


class Classifier(ABC):
    """Scores texts against `labels` (unnormalised log-scores; softmax after the temperature)."""

    name = ""

    def __init__(self, labels: list[str]):
        self.labels = labels

    @abstractmethod
    def scores(self, texts: Sequence[str]) -> np.ndarray: ...

    def scores_and_scope(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """`scores(texts)` and, from one pass, each text's Mahalanobis in-scope score (None without one)."""
        return self.scores(texts), None

    @property
    def has_scope(self) -> bool:
        """Whether `scores_and_scope` gives a Mahalanobis in-scope score."""
        return False

    @abstractmethod
    def save(self, folder: Path) -> None: ...


class TrainableClassifier(Classifier):
    """A classifier fitted on examples and loaded back from its folder (the ensemble is made of these)."""

    @abstractmethod
    def fit(self, texts: list[str], targets: np.ndarray, *, progress: Progress, should_stop) -> dict: ...

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, labels: list[str], config: IntentConfig) -> "TrainableClassifier": ...


class TfidfClassifier(TrainableClassifier):
    name = "tfidf"

    def __init__(self, labels: list[str], config: IntentConfig):
        super().__init__(labels)
        self.features = FeatureUnion(
            [
                ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
            ]
        )
        self.model = LogisticRegression(C=config.tfidf_c, max_iter=2000)

    def fit(self, texts, targets, *, progress, should_stop) -> dict:
        progress(0.1, "tfidf: fitting word and character n-grams")
        matrix = self.features.fit_transform(_clip(texts))
        progress(0.3, f"tfidf: {matrix.shape[1]} features; fitting logistic regression")
        self.model.fit(matrix, targets)
        return {"features": int(matrix.shape[1])}

    def scores(self, texts):
        # The decision values X·coefᵀ + b, whose softmax is predict_log_proba's: computed here without
        # scikit-learn's per-call checks and the FeatureUnion's, a fifth of this pipeline's time on one message.
        parts = [vectorizer.transform(_clip(texts)) for _, vectorizer in self.features.transformer_list]
        return np.asarray(sparse.hstack(parts, format="csr") @ self.model.coef_.T + self.model.intercept_)

    def save(self, folder):
        joblib.dump({"features": self.features, "model": self.model}, folder / "tfidf.joblib")

    @classmethod
    def load(cls, folder, labels, config):
        self = cls(labels, config)
        parts = joblib.load(folder / "tfidf.joblib")
        self.features, self.model = parts["features"], parts["model"]
        return self


@functools.cache
def _blas():
    """The process's BLAS libraries, found once (threadpoolctl): limiting them per call then costs microseconds."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class MahalanobisScore:
    """How close a sentence embedding lies to the nearest intent: minus its squared Mahalanobis distance to
    that intent's mean training embedding, under the covariance the intents share, Ledoit-Wolf shrunk (Lee
    et al. 2018; Podolskiy et al. 2021, on CLINC150 among others). Higher is more in scope.

    A message unlike every intent lies far from all of them even when the classifier's softmax, which only
    compares intents, is sure of one: on CLINC150 with a fine-tuned all-mpnet-base-v2 it separates
    out-of-scope queries better than the calibrated confidence (docs/performance.md).
    """

    FILE = "scope.npz"

    def __init__(self, means: np.ndarray, precision: np.ndarray):
        self.means, self.precision = means, precision
        # ||e - m||²_P = eᵀPe - 2·eᵀPm + mᵀPm: one product with P a query, whatever the number of intents.
        self._projected = means @ precision
        self._offsets = (self._projected * means).sum(1)

    @classmethod
    def fit(cls, embeddings: np.ndarray, targets: np.ndarray, n_labels: int) -> "MahalanobisScore":
        embeddings = np.asarray(embeddings, dtype=np.float64)
        means = np.stack([embeddings[targets == c].mean(0) for c in range(n_labels)])
        return cls(means, LedoitWolf().fit(embeddings - means[targets]).precision_)

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        e = np.asarray(embeddings, dtype=np.float64).reshape(-1, self.means.shape[1])  # no text: no row
        # On one BLAS thread: a message's products take microseconds, and waking OpenBLAS's threads beside
        # onnxruntime's spinning ones took a query of all-mpnet-base-v2 on 2 cores from p50 8 to 16 ms.
        with _blas().limit(limits=1, user_api="blas"):
            quadratic = ((e @ self.precision) * e).sum(1)
            return -(quadratic[:, None] - 2 * e @ self._projected.T + self._offsets[None, :]).min(1)

    def save(self, path: Path) -> None:
        np.savez(path, means=self.means, precision=self.precision)

    @classmethod
    def load(cls, path: Path) -> "MahalanobisScore":
        with np.load(path) as saved:
            return cls(saved["means"], saved["precision"])


def _runner(
    module: torch.nn.Module, tokenizer, config: IntentConfig, saved: Path | None = None, *, with_embedding=False
):
    """What scores through `module` as `config.runtime` deploys it: the module itself on torch, in
    `config.inference_dtype`; or its ONNX export on onnxruntime (float32, or int8 weights with
    `config.int8`), read from `saved` when given (a model being loaded), else made now, with the sentence
    embedding as a second output when `with_embedding` (enc.LogitsAndEmbedding). A loaded model whose
    export is missing, or a process without onnxruntime, gets the float32 module at torch's speed: the
    scores its calibration was fitted on, or, for an int8 model, float32's near them."""
    module = enc.for_inference(module, config.inference_dtype if config.runtime != "onnx" else "float32")
    if config.runtime != "onnx":
        return module
    if saved is None:
        target, names = (
            (enc.LogitsAndEmbedding(module), enc.LOGITS_AND_EMBEDDING) if with_embedding else (module, ("output",))
        )
        exported = enc.onnx_export(target, tokenizer, config.fine_tune.max_length, names)
        return enc.OnnxModule(enc.onnx_quantize(exported) if config.int8 else exported)
    if enc.onnx_available() and saved.exists():
        return enc.OnnxModule(saved)
    logger.warning("%s: no onnxruntime or no such file; the encoder runs on torch, in float32", saved)
    return module


class EmbeddingClassifier(TrainableClassifier):
    """Frozen sentence embeddings with a logistic-regression head; the encoder scores through `runner`."""

    name = "embedding"
    ONNX_FILE = "embedding.onnx"

    def __init__(self, labels: list[str], config: IntentConfig, saved: Path | None = None):
        super().__init__(labels)
        self.config = config
        encoder, self.tokenizer = enc.encoder_load(config.encoder)
        self.module = enc.SentenceEmbedding(encoder)
        self.runner = _runner(self.module, self.tokenizer, config, saved)
        self.model = LogisticRegression(C=config.embedding_c, max_iter=2000)

    def _embed(self, texts, progress=None) -> np.ndarray:
        return enc.encode(
            self.runner, self.tokenizer, _clip(texts), max_length=self.config.fine_tune.max_length, progress=progress
        )

    def fit(self, texts, targets, *, progress, should_stop) -> dict:
        vectors = self._embed(texts, lambda f: progress(0.8 * f, ""))
        progress(0.8, "embedding: fitting the logistic-regression head")
        self.model.fit(vectors, targets)
        return {"dimensions": int(vectors.shape[1])}

    def scores(self, texts):
        return self.model.predict_log_proba(self._embed(texts))

    def save(self, folder):
        joblib.dump(self.model, folder / "embedding_head.joblib")
        if isinstance(self.runner, enc.OnnxModule):
            self.runner.save(folder / self.ONNX_FILE)

    @classmethod
    def load(cls, folder, labels, config):
        self = cls(labels, config, saved=folder / cls.ONNX_FILE)
        self.model = joblib.load(folder / "embedding_head.joblib")
        return self


class FineTunedClassifier(TrainableClassifier):
    """The encoder fine-tuned with its head; it scores through `runner`: the module, or its ONNX export."""

    name = "finetuned"

    def __init__(self, labels: list[str], config: IntentConfig, module=None, tokenizer=None, runner=None):
        super().__init__(labels)
        self.config = config
        if module is None:
            torch.manual_seed(config.seed)  # the new head's initial weights
            encoder, tokenizer = enc.encoder_load(config.encoder)
            module = enc.EncoderClassifier(encoder, len(labels))
        self.module, self.tokenizer = module, tokenizer
        self.runner = runner or module
        self.scope: MahalanobisScore | None = None

    def fit(self, texts, targets, *, progress, should_stop) -> dict:
        every = 25

        def report(step: int, total: int, loss: float) -> None:
            line = f"finetuned: step {step}/{total} loss {loss:.3f}" if step % every == 0 or step == total else ""
            progress(step / total, line)

        fit = enc.fine_tune(
            self.module, self.tokenizer, _clip(texts), targets.tolist(), self.config.fine_tune,
            progress=report, should_stop=should_stop,
        )  # fmt: skip
        if self.config.runtime == "onnx":
            progress(1.0, "finetuned: exporting the encoder to ONNX")
        # validation scores what deploys
        self.runner = _runner(self.module, self.tokenizer, self.config, with_embedding=True)
        if self.config.oos_score != "confidence":
            progress(1.0, f"finetuned: embedding {len(texts)} training examples for the out-of-scope score")
            _, embeddings = self._outputs(texts)
            self.scope = MahalanobisScore.fit(embeddings, np.asarray(targets), len(self.labels))
        return fit

    def _outputs(self, texts) -> tuple[np.ndarray, np.ndarray | None]:
        """The intents' logits and, in the same pass, the sentence embeddings (None from an ONNX export
        made before the embedding was one of its outputs)."""
        runner = self.runner
        if not self._gives_embedding:
            return self._encode(runner, texts), None
        if isinstance(runner, enc.OnnxModule):

            def both(batch):
                return torch.cat(runner.outputs(batch), dim=1)
        else:
            split = enc.LogitsAndEmbedding(runner)

            def both(batch):
                return torch.cat(split(batch), dim=1)

        rows = self._encode(both, texts)
        return rows[:, : len(self.labels)], rows[:, len(self.labels) :]

    def _encode(self, module, texts) -> np.ndarray:
        return enc.encode(module, self.tokenizer, _clip(texts), max_length=self.config.fine_tune.max_length)

    def scores(self, texts):
        return self._outputs(texts)[0]

    def scores_and_scope(self, texts):
        logits, embeddings = self._outputs(texts)
        return logits, (self.scope(embeddings) if self.scope is not None and embeddings is not None else None)

    @property
    def _gives_embedding(self) -> bool:
        """False for an ONNX export made before the sentence embedding was one of its outputs."""
        return not isinstance(self.runner, enc.OnnxModule) or enc.LOGITS_AND_EMBEDDING[1] in self.runner.output_names

    @property
    def has_scope(self) -> bool:
        return self.scope is not None and self._gives_embedding

    def save(self, folder):
        enc.save_module(self.module, self.tokenizer, folder / "finetuned")
        if isinstance(self.runner, enc.OnnxModule):
            self.runner.save(folder / "finetuned" / enc.ONNX_FILE)
        if self.scope is not None:
            self.scope.save(folder / "finetuned" / MahalanobisScore.FILE)

    @classmethod
    def load(cls, folder, labels, config):
        module, tokenizer = enc.load_module(folder / "finetuned", len(labels))
        runner = _runner(module, tokenizer, config, saved=folder / "finetuned" / enc.ONNX_FILE)
        self = cls(labels, config, module, tokenizer, runner)
        if (folder / "finetuned" / MahalanobisScore.FILE).exists():
            self.scope = MahalanobisScore.load(folder / "finetuned" / MahalanobisScore.FILE)
        return self


class EnsembleClassifier(Classifier):
    """The weighted sum of its members' calibrated log-probabilities (weights tuned on validation)."""

    name = "ensemble"

    def __init__(self, labels: list[str], members: list[tuple[Classifier, float, float]]):
        super().__init__(labels)
        self.members = members  # (classifier, its temperature, its weight)

    def scores(self, texts):
        return ensemble_scores([(c.scores(texts), t, w) for c, t, w in self.members])

    def scores_and_scope(self, texts):
        """The members' combined scores, and the in-scope score of the first member that gives one."""
        parts, scope = [], None
        for classifier, temperature, weight in self.members:
            scores, member_scope = classifier.scores_and_scope(texts)
            parts.append((scores, temperature, weight))
            scope = member_scope if scope is None else scope
        return ensemble_scores(parts), scope

    @property
    def has_scope(self) -> bool:
        return any(c.has_scope for c, _, _ in self.members)

    def save(self, folder):
        for member, _, _ in self.members:
            member.save(folder)


def ensemble_scores(parts: list[tuple[np.ndarray, float, float]]) -> np.ndarray:
    """The sum of weight * log_softmax(scores / temperature) over (scores, temperature, weight) parts."""
    return np.sum([w * log_softmax(s / t) for s, t, w in parts], axis=0)


CLASSIFIERS: dict[str, type[TrainableClassifier]] = {
    c.name: c for c in (TfidfClassifier, EmbeddingClassifier, FineTunedClassifier)
}


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
