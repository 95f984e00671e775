"""Understanding in the chat path: rules, the active intent model, entities; stored on the reader's message.

The model is trained in the test (TF-IDF on the samples) and activated; the chat goes through a real ASGI
server over loopback; reclassification after an activation runs on a real Celery worker.
"""

import shutil

import pytest
from channels.db import database_sync_to_async

from mediachat.models import Conversation, Message
from personalization.models import OUT_OF_SCOPE, Intent, IntentExample, KeywordRule, Section
from personalization.understanding import classify, recognizer
from personalization.understanding.recognizer import Source
from tests.conftest import wait_until
from tests.intent_samples import OUT, examples
from tests.test_ws_server import open_socket, round_trip
from tests.ws_support import reader_session, seed_catalog, worker_connections_closed  # noqa: F401 (autouse)
from training.models import ModelKind, ModelVersion
from training.services.registry import model_version_activate
from training.services.runs import training_run_here

pytestmark = pytest.mark.django_db(transaction=True)

ACTIONS = {"greeting": "small_talk", "thanks": "small_talk", "latest_news": "latest", "search_topic": "search"}


def _intents() -> None:
    for record in examples():
        intent, _ = Intent.objects.get_or_create(name=record.label, defaults={"action": ACTIONS[record.label]})
        IntentExample.objects.create(intent=intent, text=record.text)
    oos = Intent.objects.create(name=OUT_OF_SCOPE, action=Intent.Action.FALLBACK)
    IntentExample.objects.bulk_create([IntentExample(intent=oos, text=t) for t in OUT])


def _train(seed: int = 0) -> ModelVersion:
    run = training_run_here(kind=ModelKind.INTENT, parameters={"pipelines": ["tfidf"], "seed": seed}, user_id=None)
    assert run.status == "succeeded", run.log
    return ModelVersion.objects.get(training_run=run)


@pytest.fixture
def fresh_recognizer(monkeypatch):
    """A recognizer of this test's own that looks for changes at every call."""
    monkeypatch.setattr(recognizer, "CHECK_SECONDS", 0.0)
    monkeypatch.setattr(recognizer, "_recognizer", None)
    return recognizer.recognizer_get()


def test_rules_decide_before_the_model_and_the_model_after(fresh_recognizer):
    _intents()
    version = model_version_activate(version_id=_train().id, user_id=None)
    KeywordRule.objects.create(intent=Intent.objects.get(name="search_topic"), pattern="look up", priority=5)
    by_rule = fresh_recognizer.understand("please look up jazz, thank you")
    assert (by_rule.intent, by_rule.source, by_rule.confidence, by_rule.model_version_id) == (
        "search_topic", Source.RULE, 1.0, None,
    )  # fmt: skip
    by_model = fresh_recognizer.understand("thanks a lot!")
    assert (by_model.intent, by_model.source, by_model.action) == ("thanks", Source.MODEL, "small_talk")
    assert by_model.model_version_id == version.id and 0 < by_model.confidence <= 1
    assert by_model.ranking[0][0] == "thanks"
    for text in ["", "x" * 10_000, "🙂🎉", "日本のニュース", "<script>alert(1)</script>", "nul\x00"]:
        understood = fresh_recognizer.understand(text)
        assert understood.source == Source.MODEL and understood.intent in (*ACTIONS, OUT_OF_SCOPE)


def test_a_new_active_model_is_picked_up_and_a_broken_one_skipped(fresh_recognizer, tmp_path):
    _intents()
    first = model_version_activate(version_id=_train(seed=1).id, user_id=None)
    assert fresh_recognizer.understand("hello there").model_version_id == first.id
    second = _train(seed=2)
    model_version_activate(version_id=second.id, user_id=None)
    assert fresh_recognizer.understand("hello there").model_version_id == second.id

    broken = _train(seed=3)
    shutil.rmtree(broken.artifact_path)
    model_version_activate(version_id=broken.id, user_id=None)
    understood = fresh_recognizer.understand("hello there")  # logged, and answered with what still works
    assert understood.model_version_id == second.id and understood.source == Source.MODEL
    fresh_recognizer._model = None  # a process that starts after the breakage: rules only
    KeywordRule.objects.create(intent=Intent.objects.get(name="greeting"), pattern="hello")
    assert fresh_recognizer.understand("hello there").source == Source.RULE
    assert fresh_recognizer.understand("what's new").source == Source.NONE


def test_a_fine_tuned_model_answers_through_onnxruntime_as_torch_would(fresh_recognizer, tiny_encoder):
    import numpy as np

    from training.pipelines import intent_encoders
    from training.pipelines.intents import log_softmax

    _intents()
    parameters = {"pipelines": ["finetuned"], "encoder": str(tiny_encoder), "seed": 4}
    run = training_run_here(kind=ModelKind.INTENT, parameters=parameters, user_id=None)
    assert run.status == "succeeded", run.log
    version = model_version_activate(version_id=ModelVersion.objects.get(training_run=run).id, user_id=None)
    texts = ["thanks a lot!", "what's new in jazz", "", "x" * 10_000]
    understood = [fresh_recognizer.understand(text) for text in texts]
    assert all(u.source == Source.MODEL and u.model_version_id == version.id for u in understood)
    model = fresh_recognizer.model
    assert isinstance(model.classifier.runner, intent_encoders.OnnxModule)
    # The float32 module the export came from gives the same confidences (the calibration was fitted on them).
    classifier = model.classifier
    eager = intent_encoders.encode(classifier.module, classifier.tokenizer, [t[:2000] for t in texts], max_length=48)
    confidences = np.exp(log_softmax(eager / model.temperature)).max(axis=1)
    np.testing.assert_allclose([u.confidence for u in understood], confidences, atol=1e-3)


def test_without_rules_or_model_nothing_is_claimed(fresh_recognizer):
    understood = fresh_recognizer.understand("anything on climate?")
    assert (understood.intent, understood.source, understood.confidence, understood.action) == ("", "", None, "")


def test_entities_come_with_spans(fresh_recognizer):
    from personalization.understanding.gazetteer import gazetteer_rebuild

    Section.objects.create(name="Science", slug="science")
    gazetteer_rebuild()
    text = "anything in Science since Monday?"
    understood = fresh_recognizer.understand(text)
    kinds = {e["kind"]: e for e in understood.entities}
    assert text[kinds["section"]["start"] : kinds["section"]["end"]] == "Science"
    assert kinds["section"]["value"] == "science"
    assert text[kinds["date"]["start"] : kinds["date"]["end"]].lower() == "since monday"


async def test_the_chat_path_stores_understanding_and_answers_by_intent(asgi_server):
    await database_sync_to_async(seed_catalog)()
    await database_sync_to_async(_intents)()
    version = await database_sync_to_async(_train)()
    await database_sync_to_async(model_version_activate)(version_id=version.id, user_id=None)
    socket = await open_socket(asgi_server, await database_sync_to_async(reader_session)())

    ack, _, done = await round_trip(socket, "hello there")
    assert done["text"].startswith("Hello!") and done["status"] == "complete"
    ack2, _, done2 = await round_trip(socket, "find articles about climate", conversation_id=ack["conversation_id"])
    assert "climate" in done2["text"].lower() and done2["cited"]
    await socket.close()

    def stored():
        greeting = Message.objects.get(pk=ack["message_id"])
        search = Message.objects.get(pk=ack2["message_id"])
        return greeting, search

    greeting, search = await database_sync_to_async(stored)()
    assert (greeting.intent, greeting.intent_source, greeting.intent_model_version_id) == (
        "greeting", "model", version.id,
    )  # fmt: skip
    assert greeting.confidence is not None and 0 < greeting.confidence <= 1
    assert search.intent == "search_topic" and search.intent_model_version_id == version.id


def test_messages_the_chat_left_are_classified_later(fresh_recognizer):
    _intents()
    conversation = Conversation.objects.create(session_key="s")
    old = Message.objects.create(conversation=conversation, role=Message.Role.USER, text="thank you so much")
    new = Message.objects.create(conversation=conversation, role=Message.Role.USER, text="hello")
    reply = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, text="Hi")
    Message.objects.filter(pk=old.pk).update(created_at=old.created_at - classify.PENDING_AFTER * 2)
    assert classify.messages_classify_pending() == 0  # no model yet: nothing to add, nothing rewritten
    version = model_version_activate(version_id=_train().id, user_id=None)
    assert classify.messages_classify_pending() == 1
    old.refresh_from_db(), new.refresh_from_db(), reply.refresh_from_db()
    assert (old.intent, old.intent_source, old.intent_model_version_id) == ("thanks", "model", version.id)
    assert new.intent_source == "" and reply.intent == ""  # too recent for the sweep; replies are not classified
    assert classify.messages_classify_pending() == 0


def test_activation_reclassifies_history_on_a_worker(celery_worker):
    _intents()
    first = model_version_activate(version_id=_train(seed=1).id, user_id=None)
    conversation = Conversation.objects.create(session_key="s")
    rows = [
        Message.objects.create(conversation=conversation, role=Message.Role.USER, text=t, intent_source="model",
                               intent="greeting", intent_model_version=first)
        for t in ("thanks a lot", "latest news on space", "hiya")
    ]  # fmt: skip
    second = _train(seed=2)
    model_version_activate(version_id=second.id, user_id=None)  # the worker reclassifies after the commit

    def done():
        return all(m.intent_model_version_id == second.id for m in Message.objects.filter(pk__in=[r.pk for r in rows]))

    wait_until(done, timeout=60, what="history reclassified with the new model")
    assert [Message.objects.get(pk=r.pk).intent for r in rows] == ["thanks", "latest_news", "greeting"]


def test_out_of_scope_with_words_the_catalog_knows_is_answered_from_the_catalog(fresh_recognizer):
    from mediachat.engine.base import EngineRequest
    from mediachat.engine.lm import LMEngine
    from mediachat.engine.retrieval import RetrievalEngine

    seed_catalog()
    oos = Intent.objects.create(name=OUT_OF_SCOPE, action=Intent.Action.FALLBACK)
    # The classifier's stand-in here is a rule: both messages are "out of scope".
    KeywordRule.objects.create(intent=oos, kind=KeywordRule.Kind.REGEX, pattern=r"glaciers|weather")
    known, unknown = EngineRequest(text="glaciers"), EngineRequest(text="weather in Paris tomorrow")

    engine = LMEngine()
    prepared = engine.prepare(known)  # no chat model here: the catalog search answers
    assert prepared.written == "" and prepared.understanding.intent == OUT_OF_SCOPE
    assert "Glaciers in retreat" in engine.fallback_result(known, prepared).text
    prepared = engine.prepare(unknown)
    assert prepared.written.startswith("That's outside what I can help with") and prepared.items == ()

    search = RetrievalEngine()
    assert "Glaciers in retreat" in search.compose(known).text
    result = search.compose(unknown)
    assert result.text.startswith("That's outside") and result.understanding["source"] == Source.RULE


def test_the_plan_filters_by_kind_section_and_date_and_keeps_topic_words():
    from datetime import datetime

    from mediachat.engine.actions import plan_reply
    from mediachat.engine.followups import Kind, followup_resolve
    from personalization.understanding.recognizer import Understanding

    text = "podcasts about climate in Science this week"
    start = text.index("this week")
    entities = [
        {"kind": "section", "value": "science", "text": "Science", "start": 24, "end": 31},
        {"kind": "date", "value": "2026-11-23T00:00:00+00:00/2026-11-30T00:00:00+00:00", "text": "this week",
         "start": start, "end": start + 9},
    ]  # fmt: skip
    understood = Understanding("search_topic", 0.9, Source.MODEL, "search", 1, entities)
    plan = plan_reply(text, (), followup_resolve(text, ()), understood)
    filters = plan.follow.filters
    assert plan.written == "" and plan.follow.kind == Kind.SEARCH
    assert filters.kinds == ("podcast",) and filters.sections == ("science",)
    assert filters.since == datetime.fromisoformat("2026-11-23T00:00:00+00:00")
    assert "climate" in plan.follow.terms and not {"podcasts", "week"} & set(plan.follow.terms)

    latest = plan_reply("any new videos?", (), followup_resolve("any new videos?", ()), understood)
    assert latest.follow.kind == Kind.LATEST and latest.follow.filters.kinds == ("video",)
    greeting = Understanding("greeting", 0.99, Source.MODEL, "small_talk")
    assert plan_reply("hi", (), followup_resolve("hi", ()), greeting).written.startswith("Hello!")


def test_a_search_that_dates_rule_out_says_so_in_the_readers_words(fresh_recognizer):
    from mediachat.engine.actions import date_phrase
    from mediachat.engine.base import EngineRequest
    from mediachat.engine.lm import LMEngine
    from mediachat.engine.retrieval import RetrievalEngine
    from personalization.search import CatalogFilter, query_terms

    assert date_phrase(CatalogFilter(when="since Monday")) == " since Monday"
    assert date_phrase(CatalogFilter(when="last month")) == " from last month"
    assert date_phrase(CatalogFilter(sections=("science",))) == "" and date_phrase(None) == ""
    assert query_terms("What\u2019s new? what's up with Trump's tariffs") == ["trump's", "tariffs"]

    seed_catalog()  # tariffs: 9 days old; the newest item: a day old
    search = RetrievalEngine()
    old_topic = search.compose(EngineRequest(text="anything on tariffs since yesterday?")).text
    assert old_topic.startswith(
        "I couldn't find anything on tariffs since yesterday in the catalog; here is what's new"
    )
    nothing_today = search.compose(EngineRequest(text="what's new today?")).text
    assert nothing_today.startswith("I found nothing from today; here is what's new: “Jazz in the city”")
    in_range = search.compose(EngineRequest(text="anything on glaciers this month?")).text
    assert "Glaciers in retreat" in in_range and "couldn't" not in in_range

    engine = LMEngine()  # without a chat model, its search-only text names the dates the same way
    prepared = engine.prepare(EngineRequest(text="anything on tariffs since yesterday?"))
    assert prepared.follow.filters.when == "since yesterday"
