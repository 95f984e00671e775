"""What a reader's message wants and what it is about: editors' rules, then the deployed classifier; entities.

`understand(text)` is the one call of the chat path (the engine's worker thread) and of the `nlu` workers:

1. keyword and regex rules of active intents, highest priority first: a match decides (source "rule");
2. else the active intent `ModelVersion`: the calibrated confidence of its best intent, out of scope
   below its threshold (source "model");
3. with neither, no intent (source ""): the message is answered without one and classified later.

Entities come from the catalog gazetteer and the date grammar. The process keeps one recognizer; it looks
up the active model and the rules at most every CHECK_SECONDS, so an activation or an edited rule reaches
the chat path without a restart. A model that fails to load is logged and skipped (the rules still work)
until another version is activated. Blocking: call it off the event loop.
"""

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.utils import timezone

from training.models import ModelKind, ModelVersion

from ..models import Intent
from .entities import extractor_load
from .rules import RuleSet, rules_load

logger = logging.getLogger(__name__)

CHECK_SECONDS = 5.0


class Source:
    RULE = "rule"
    MODEL = "model"
    NONE = ""


@dataclass(frozen=True)
class Understanding:
    intent: str  # the intent's name, OUT_OF_SCOPE, or "" when nothing could classify the message
    confidence: float | None  # 1.0 for a rule; the model's calibrated confidence; None without either
    source: str  # Source.RULE, Source.MODEL or Source.NONE
    action: str = ""  # the intent's Intent.Action: what the chat path does with it
    model_version_id: int | None = None  # the intent model that classified it (None for a rule)
    entities: list[dict] = field(default_factory=list)  # Entity.to_dict(): kind, value, text, start, end, ...
    ranking: tuple[tuple[str, float], ...] = ()  # the model's top intents, for the admin and debugging

    def as_dict(self) -> dict:
        """Plain JSON data (what crosses the channel layer and is stored): lists, not tuples."""
        data = asdict(self)
        data["ranking"] = [[name, p] for name, p in self.ranking]
        return data


class Recognizer:
    """Rules, the active intent model and the entity extractor of this process, refreshed as they change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Fast tokenizers refuse to be used by two threads at once ("Already borrowed"); a batch is quick.
        self._predict_lock = threading.Lock()
        self._checked = float("-inf")
        self._rules = RuleSet.from_rules([])
        self._actions: dict[str, str] = {}
        self._model = None
        self._version: tuple[int, str] | None = None  # (id, artifact path) loaded or tried
        self._failed: tuple[int, str] | None = None

    @property
    def model(self):
        """The intent model loaded (training.pipelines.intents.IntentModel), or None: rules only."""
        return self._model

    @property
    def model_version_id(self) -> int | None:
        return self._version[0] if self._version is not None and self._model is not None else None

    def refresh(self, *, force: bool = False) -> None:
        """Reload the rules and intent actions, and the model when another version is active (blocking)."""
        now = time.monotonic()
        if not force and now - self._checked < CHECK_SECONDS:
            return
        with self._lock:
            if not force and now - self._checked < CHECK_SECONDS:
                return
            self._rules = rules_load()
            self._actions = dict(Intent.objects.values_list("name", "action"))
            row = ModelVersion.objects.active().filter(kind=ModelKind.INTENT).values_list("id", "artifact_path").first()
            wanted = (row[0], row[1]) if row is not None else None
            if wanted != self._version and wanted != self._failed:
                self._load(wanted)
            self._checked = time.monotonic()

    def _load(self, wanted: tuple[int, str] | None) -> None:
        if wanted is None:
            self._model, self._version = None, None
            return
        from training.pipelines.intents import IntentModel  # torch and scikit-learn load with the first model

        try:
            model = IntentModel.load(wanted[1])
            model.predict(["warm up"])
        except Exception:
            logger.exception("intent model %s at %s failed to load; rules only until another is active", *wanted)
            self._failed = wanted
            return
        self._model, self._version, self._failed = model, wanted, None
        logger.info("intent model %s loaded from %s (%s)", wanted[0], wanted[1], model.meta.get("pipeline"))

    def understand_many(self, texts: Sequence[str], *, now: datetime | None = None) -> list[Understanding]:
        """One Understanding per text (a batch goes through the model at once)."""
        self.refresh()
        now = now or timezone.now()
        rules, model, version_id = self._rules, self._model, self.model_version_id
        texts = [t if isinstance(t, str) else "" for t in texts]
        matched = [rules.match(t) for t in texts]
        to_classify = [i for i, m in enumerate(matched) if m is None]
        predictions = {}
        if model is not None and to_classify:
            try:
                with self._predict_lock:
                    predicted = model.predict([texts[i] for i in to_classify])
                predictions = dict(zip(to_classify, predicted, strict=True))
            except Exception:  # a model that breaks on some input must not break the chat
                logger.exception("the intent model failed on a batch of %d messages", len(to_classify))
        extractor = extractor_load(check_after_s=CHECK_SECONDS)
        out = []
        for i, text in enumerate(texts):
            entities = [e.to_dict() for e in extractor.extract(text, now=now)]
            if matched[i] is not None:
                intent, confidence, source, ranking, vid = matched[i].intent, 1.0, Source.RULE, (), None
            elif i in predictions:
                p = predictions[i]
                intent, confidence, source, ranking, vid = p.label, p.confidence, Source.MODEL, p.ranking, version_id
            else:
                intent, confidence, source, ranking, vid = "", None, Source.NONE, (), None
            action = self._actions.get(intent, Intent.Action.FALLBACK if intent else "")
            out.append(Understanding(intent, confidence, source, action, vid, entities, ranking))
        return out

    def understand(self, text: str, *, now: datetime | None = None) -> Understanding:
        return self.understand_many([text], now=now)[0]


_recognizer: Recognizer | None = None
_recognizer_lock = threading.Lock()


def recognizer_get() -> Recognizer:
    """This process's recognizer."""
    global _recognizer
    if _recognizer is None:
        with _recognizer_lock:
            if _recognizer is None:
                _recognizer = Recognizer()
    return _recognizer


def understand(text: str, *, now: datetime | None = None) -> Understanding:
    """`text` understood by this process's recognizer (blocking: may query the database or load a model)."""
    return recognizer_get().understand(text, now=now)
