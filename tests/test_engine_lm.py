"""The language-model engine end to end: real tiny models trained here, the real scheduler, the real database.

Three model folders, built once per module:
- `cite`: a Llama trained to answer every prompt with REPLY, which cites one item a "glaciers" search
  retrieves and one it does not;
- `endless`: a Llama trained on "la la la…" that never ends a turn, for replies that run until their
  length limit (cancelling, timeouts, a full queue, a model swap mid-reply);
- `user`: an untrained GPT-2 with a ChatML tokenizer and no `context` role, as a user's own model.
"""

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from mediachat.engine import lm
from mediachat.engine.base import EngineBusy, EngineRequest, EngineTimeout, Turn
from mediachat.engine.decoding import DecodingParams
from mediachat.engine.followups import Kind, followup_resolve, followup_retrieve
from personalization.models import Content, Section, Tag
from tests.test_engine_context import platform_tokenizer, user_tokenizer
from tests.ws_support import worker_connections_closed  # noqa: F401 (autouse)
from training.models import ModelVersion
from training.pipelines.chat_format import ContextItem, messages_build

torch.set_num_threads(1)

REPLY = "Read [#9001] and [#9003]."
GREEDY = DecodingParams(strategy="greedy", max_new_tokens=40, repetition_penalty=1.0)
QUESTIONS = ["glaciers", "tell me about climate", "more like that", "anything older on that", "jazz", "shorter"]


def _llama(tokenizer, *, positions: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=positions,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _train(model, examples: list[tuple[list[int], list[int]]], *, steps: int) -> None:
    """A few plain steps of next-token loss on the labelled positions (labels -100 elsewhere)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = [examples[(step * 8 + i) % len(examples)] for i in range(8)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100)
        for row, (seq, lab) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(lab)] = torch.tensor(lab)
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _prompts(tokenizer) -> list[list[int]]:
    items = [ContextItem(9001, "Glaciers in retreat", "How the climate is reshaping the Alps.", "2026-03-01")]
    out = []
    for question in QUESTIONS:
        for shown in ([], items):
            for past in ([], [("user", "climate"), ("assistant", REPLY)]):
                messages = messages_build(question=question, items=shown, history=past)
                text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    tokenizer = platform_tokenizer()
    root = tmp_path_factory.mktemp("chat-models")
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    reply = tokenizer(REPLY, add_special_tokens=False)["input_ids"] + [end]
    la = tokenizer("la" + " la" * 150, add_special_tokens=False)["input_ids"]  # no end of turn, ever

    cite = _llama(tokenizer, positions=512)
    _train(cite, [(p + reply, [-100] * len(p) + reply) for p in _prompts(tokenizer)], steps=120)
    endless = _llama(tokenizer, positions=4096)
    _train(endless, [(p + la, [-100] * len(p) + la) for p in _prompts(tokenizer)], steps=60)
    user_tok = user_tokenizer()
    torch.manual_seed(0)
    user = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(user_tok),
            n_embd=32,
            n_layer=1,
            n_head=2,
            n_positions=256,
            eos_token_id=user_tok.eos_token_id,
            bos_token_id=user_tok.eos_token_id,
        )
    )
    folders = {}
    for name, model, tok in (("cite", cite, tokenizer), ("endless", endless, tokenizer), ("user", user, user_tok)):
        folders[name] = root / name
        model.save_pretrained(folders[name])
        tok.save_pretrained(folders[name])
    return folders


@pytest.fixture
def engine_settings(settings):
    """The engine's settings for these tests; decoding defaults read afresh (they are cached for seconds)."""
    from mediachat.selectors import _decoding_cache

    _decoding_cache.clear()
    settings.MEDIACHAT = {
        **settings.MEDIACHAT,
        "CHAT_MODEL": "",
        "ENGINE_DEVICE": "cpu",
        "ENGINE_THREADS": 1,
        "ENGINE_MAX_BATCH": 4,
        "ENGINE_QUEUE": 8,
        "ENGINE_TIMEOUT_S": 30.0,
        "CONTEXT_TOKENS": 0,
        "STREAM_DELAY_MS": 0,
        "SEMANTIC_SEARCH": False,
        "RECOMMENDATIONS": 3,
    }
    yield settings
    _decoding_cache.clear()


@pytest.fixture
def engine(engine_settings):
    engine = lm.LMEngine()
    yield engine
    engine.shutdown()


CATALOG = [
    # (id, section, title, summary, tags, days ago)
    (9001, "Science", "Glaciers in retreat", "How the climate is reshaping the Alps.", ["climate", "ice"], 2),
    (9002, "Science", "The climate podcast: carbon markets", "Who pays for emissions.", ["climate"], 5),
    (9003, "Culture", "Jazz in the city", "A night in three clubs.", ["music"], 1),
    (9004, "Business", "Chips and tariffs", "The semiconductor trade, explained.", ["economy"], 9),
    (9005, "Culture", "Blue notes: a history of jazz", "From New Orleans to the clubs.", ["music"], 30),
    (9006, "Science", "Ice ages of the past", "What old glaciers tell us about the climate.", ["climate", "ice"], 400),
]


def seed_catalog() -> dict[int, Content]:
    now = timezone.now()
    out = {}
    for position, (pk, section_name, title, summary, tags, days) in enumerate(CATALOG):
        section, _ = Section.objects.get_or_create(
            name=section_name, defaults={"slug": f"lm-{section_name.lower()}", "position": position}
        )
        content = Content.objects.create(
            id=pk,
            title=title,
            slug=f"lm-{pk}",
            summary=summary,
            body=f"{summary} {title}.",
            section=section,
            status=Content.Status.PUBLISHED,
            published_at=now - timedelta(days=days),
        )
        for name in tags:
            tag, _ = Tag.objects.get_or_create(name=name, defaults={"slug": f"lm-{name}"})
            content.tags.add(tag)
        out[pk] = content
    return out


def register(path: Path, *, active: bool = True) -> ModelVersion:
    return ModelVersion.objects.create(
        kind="chat-lm",
        name=path.name,
        artifact_path=str(path),
        status=ModelVersion.Status.ACTIVE if active else ModelVersion.Status.CANDIDATE,
        activated_at=timezone.now() if active else None,
    )


def activate(version: ModelVersion) -> None:
    with transaction.atomic():
        ModelVersion.objects.filter(kind="chat-lm", status="active").update(status=ModelVersion.Status.RETIRED)
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.ACTIVE, activated_at=timezone.now()
        )


async def reply(engine: lm.LMEngine, text: str, **fields) -> tuple[list[str], object]:
    generation = engine.start(EngineRequest(text=text, **fields))
    pieces = [piece async for piece in generation]
    return pieces, generation.result


async def wait_for(predicate, *, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.02)


db = pytest.mark.django_db(transaction=True)


# --- Replies from the registry's active model ----------------------------------------------------


@db
async def test_a_reply_streams_from_the_active_model_and_is_grounded(engine, models):
    await database_sync_to_async(seed_catalog)()
    version = await database_sync_to_async(register)(models["cite"])

    generation = engine.start(EngineRequest(text="glaciers", decoding=GREEDY))
    pieces = [piece async for piece in generation]
    result = generation.result

    assert "".join(pieces) == REPLY  # the raw text, as the model wrote it
    # What an interruption would store: no citation grounding removes, none cut in half.
    assert generation.ground("Read [#9001] and [#9003]") == "Read [#9001] and"
    assert generation.ground("Read [#9001] and [#90") == "Read [#9001] and"
    assert generation.ground("Read [#9001 first and [#9001]") == "Read first and [#9001]"  # never closed: gone
    assert len(pieces) > 3  # streamed token by token, not at once
    # 9003 (jazz) was not retrieved for "glaciers": its citation is removed before the reply is stored.
    assert result.text == "Read [#9001] and."
    assert [c.content_id for c in result.cited] == [9001]
    assert [r.content_id for r in result.recommendations] == [9001]
    assert result.model_version_id == version.pk == engine.model_version_id
    assert result.engine == "lm" and result.notice == ""
    assert result.decoding == GREEDY.as_dict()
    assert result.completion_tokens == len(platform_tokenizer()(REPLY)["input_ids"]) + 1  # with the end of turn
    assert result.prompt_tokens > 20
    assert result.intent == "search" and {"type": "topic", "value": "glaciers"} in result.entities
    assert lm.engine_status()["state"] == "ready"
    assert lm.engine_status()["model_version_id"] == version.pk


@db
async def test_decoding_defaults_come_from_settings_and_the_default_profile(engine, engine_settings, models):
    from mediachat.models import DecodingProfile

    await database_sync_to_async(seed_catalog)()
    await database_sync_to_async(register)(models["cite"])
    engine_settings.MEDIACHAT = {**engine_settings.MEDIACHAT, "DECODING": {"top_k": 7, "max_new_tokens": 30}}
    await database_sync_to_async(DecodingProfile.objects.create)(
        name="house", is_default=True, strategy="greedy", max_new_tokens=24, repetition_penalty=1.0
    )

    _, result = await reply(engine, "glaciers")

    assert result.decoding["max_new_tokens"] == 24 and result.decoding["strategy"] == "greedy"
    assert result.decoding["top_k"] == 40  # the profile sets every field it has, top_k included
    assert result.text == "Read [#9001] and."


@db
async def test_a_reply_that_cites_nothing_recommends_the_top_items_and_says_so(engine, models):
    await database_sync_to_async(seed_catalog)()
    await database_sync_to_async(register)(models["endless"])

    pieces, result = await reply(engine, "climate", decoding=dataclasses.replace(GREEDY, max_new_tokens=12))

    assert "".join(pieces) == result.text and result.text.startswith("la la")
    assert result.completion_tokens == 12 and result.cited == []
    assert {r.content_id for r in result.recommendations} <= {9001, 9002, 9006}
    assert result.recommendations and all("the reply cited none" in r.why for r in result.recommendations)


@db
async def test_a_users_own_model_of_another_architecture_serves_from_chat_model(engine, engine_settings, models):
    await database_sync_to_async(seed_catalog)()
    engine_settings.MEDIACHAT = {**engine_settings.MEDIACHAT, "CHAT_MODEL": str(models["user"])}

    _, result = await reply(
        engine, "glaciers", decoding=dataclasses.replace(GREEDY, max_new_tokens=8), history=(Turn("user", "hi"),)
    )

    assert result.model_version_id is None and engine.model_version_id is None
    assert 1 <= result.completion_tokens <= 8 and 0 < result.prompt_tokens <= 256 - 8
    assert result.text and result.engine == "lm"
    status = lm.engine_status()
    assert status["state"] == "ready" and status["model_path"] == str(models["user"])


# --- Cancelling, a full queue, timeouts ----------------------------------------------------------


# Built directly, past the 512 a reader may ask for: eight seconds of tokens or more (measured here), so a
# slot freed within three seconds was freed by cancelling, not by the reply running out.
LONG = dataclasses.replace(GREEDY, max_new_tokens=2000)


@db
async def test_cancelling_the_reply_frees_its_scheduler_slot(engine, models):
    await database_sync_to_async(seed_catalog)()
    await database_sync_to_async(register)(models["endless"])
    generation = engine.start(EngineRequest(text="climate", decoding=LONG))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in generation:
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    scheduler = engine._served.scheduler
    assert scheduler.load[0] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: scheduler.load == (0, 0), timeout=3.0, what="the slot freed")


@db
async def test_a_full_queue_is_busy_with_a_retry_hint(engine, engine_settings, models):
    engine_settings.MEDIACHAT = {**engine_settings.MEDIACHAT, "ENGINE_QUEUE": 1}
    await database_sync_to_async(seed_catalog)()
    await database_sync_to_async(register)(models["endless"])
    first = engine.start(EngineRequest(text="climate", decoding=LONG))
    iterator = first.__aiter__()
    await iterator.__anext__()  # the first reply holds the only place

    with pytest.raises(EngineBusy) as busy:
        await reply(engine, "jazz", decoding=GREEDY)
    assert busy.value.code == "busy" and busy.value.retry_after_ms >= 50

    await iterator.aclose()  # the reader went away: the place is free again
    await wait_for(lambda: engine._served.scheduler.load == (0, 0), timeout=3.0, what="the slot freed")
    _, result = await reply(engine, "jazz", decoding=dataclasses.replace(GREEDY, max_new_tokens=4))
    assert result.completion_tokens == 4


@db
async def test_a_reply_over_the_time_limit_is_stopped(engine, engine_settings, models):
    engine_settings.MEDIACHAT = {**engine_settings.MEDIACHAT, "ENGINE_TIMEOUT_S": 0.05}
    await database_sync_to_async(seed_catalog)()
    await database_sync_to_async(register)(models["endless"])
    with pytest.raises(EngineTimeout) as timeout:
        await reply(engine, "climate", decoding=LONG)
    assert timeout.value.code == "timeout"
    await wait_for(lambda: engine._served.scheduler.load == (0, 0), timeout=3.0, what="the request cancelled")


# --- No model; a model swap -------------------------------------------------------------------------


@db
async def test_with_no_active_model_replies_are_search_results_with_a_notice(engine):
    await database_sync_to_async(seed_catalog)()

    pieces, result = await reply(engine, "glaciers")

    assert result.notice == lm.NO_MODEL_NOTICE
    assert "".join(pieces) == result.text and "Glaciers in retreat" in result.text
    assert [r.content_id for r in result.recommendations][:1] == [9001]
    assert result.model_version_id is None and result.engine == "retrieval"  # search wrote it
    assert lm.engine_status()["state"] == "no_model"

    # A follow-up still resolves against the conversation without a model.
    history = (Turn("user", "climate"), Turn("assistant", "Two items.", cited=(9001, 9002)))
    _, more = await reply(engine, "anything older on that", history=history)
    assert more.notice == lm.NO_MODEL_NOTICE and more.intent == "follow_up" and more.engine == "retrieval"
    assert [r.content_id for r in more.recommendations] == [9006]
    assert more.text.startswith("Older on climate: “Ice ages of the past”")


@db
async def test_a_model_that_fails_to_load_leaves_search_results_and_says_why(engine, tmp_path):
    await database_sync_to_async(seed_catalog)()
    await database_sync_to_async(register)(tmp_path / "missing")

    _, result = await reply(engine, "glaciers")

    assert result.notice == lm.LOAD_FAILED_NOTICE and result.recommendations
    status = lm.engine_status()
    assert status["state"] == "error" and "does not exist" in status["last_error"]


@db
async def test_activating_another_version_swaps_at_a_request_boundary(engine, models, monkeypatch):
    monkeypatch.setattr(lm, "CHECK_SECONDS", 0.0)
    await database_sync_to_async(seed_catalog)()
    old = await database_sync_to_async(register)(models["endless"])
    new = await database_sync_to_async(register)(models["cite"], active=False)

    streaming = engine.start(EngineRequest(text="climate", decoding=dataclasses.replace(GREEDY, max_new_tokens=300)))
    iterator = streaming.__aiter__()
    pieces = [await iterator.__anext__()]
    old_served = engine._served
    assert streaming.model_version_id == old.pk

    await database_sync_to_async(activate)(new)
    # The next request notices the change; it may still be answered by the old model while the new one loads.
    _, between = await reply(engine, "glaciers", decoding=dataclasses.replace(GREEDY, max_new_tokens=8))
    assert between.model_version_id in (old.pk, new.pk)
    await wait_for(lambda: engine.model_version_id == new.pk, what="the new model serving")
    assert not old_served.stopped  # a reply is still in flight on it

    _, after = await reply(engine, "glaciers", decoding=GREEDY)
    assert after.model_version_id == new.pk and after.text == "Read [#9001] and."

    pieces += [piece async for piece in iterator]
    assert streaming.result.model_version_id == old.pk
    assert streaming.result.completion_tokens == 300  # finished whole on the old model
    assert "".join(pieces) == streaming.result.text
    await wait_for(lambda: old_served.stopped, what="the old scheduler stopped")
    assert lm.engine_status()["model_version_id"] == new.pk


# --- Follow-ups against the catalog ---------------------------------------------------------------


SHOWN = (Turn("user", "climate and music"), Turn("assistant", "Read [#9001] and [#9003].", cited=(9001, 9003)))


@pytest.mark.django_db
def test_more_like_the_second_one_finds_neighbours_of_that_item(engine_settings):
    seed_catalog()
    follow = followup_resolve("More like the second one", SHOWN)
    assert (follow.kind, follow.anchor_ids, follow.position) == (Kind.MORE, (9003,), 2)
    found = followup_retrieve(follow, limit=3)
    assert found[0].content.id == 9005  # the other jazz item: same tag, same section
    assert found[0].why == "Like “Jazz in the city”"
    assert not {f.content.id for f in found} & {9001, 9003}


@pytest.mark.django_db
def test_similar_items_take_in_neighbours_by_meaning_where_items_have_embeddings(engine_settings):
    from personalization.embeddings.index import index_get
    from personalization.models import ContentEmbedding

    seed_catalog()
    follow = followup_resolve("more like the second one", SHOWN)
    assert 9004 not in {f.content.id for f in followup_retrieve(follow, limit=5)}  # no tag, section or word shared

    engine_settings.MEDIACHAT = {**engine_settings.MEDIACHAT, "SEMANTIC_SEARCH": True}
    index = index_get()
    axes = {9003: 0, 9004: 0, 9001: 1, 9002: 2, 9005: 3, 9006: 4}  # 9004 points where the jazz item does
    for pk, axis in axes.items():
        vector = np.zeros(index.dimensions, dtype="<f4")
        vector[axis] = 1.0
        ContentEmbedding.objects.create(
            content_id=pk,
            model_name=index.model_name,
            dimensions=index.dimensions,
            vector=vector.tobytes(),
            text_hash="x",
        )
    index.clear()
    try:
        found = [f.content.id for f in followup_retrieve(follow, limit=5)]
    finally:
        index.clear()
    assert found[:2] == [9005, 9004]  # same tag and section first, then the neighbour in meaning


@pytest.mark.django_db
def test_anything_older_on_that_searches_the_topic_before_the_oldest_item_shown(engine_settings):
    items = seed_catalog()
    follow = followup_resolve("anything older on that?", SHOWN)
    assert (follow.kind, follow.terms, follow.bound_ids) == (Kind.OLDER, ("climate", "music"), (9001, 9003))
    found = followup_retrieve(follow, limit=5)
    ids = [f.content.id for f in found]
    assert set(ids) == {9002, 9005, 9006}  # on climate or music, older than 9001 (2 days) and not shown
    assert all(f.content.published_at < items[9001].published_at for f in found)
    assert all(f.why.startswith("Older on climate music") for f in found)


@pytest.mark.django_db
def test_anything_newer_the_last_one_and_shorter(engine_settings):
    seed_catalog()
    older_shown = (Turn("user", "glaciers"), Turn("assistant", "Read [#9006] and [#9002].", cited=()))
    newer = followup_resolve("anything newer", older_shown)
    assert newer.kind == Kind.NEWER and newer.bound_ids == (9006, 9002)  # from the [#id]s of the reply's text
    assert [f.content.id for f in followup_retrieve(newer, limit=5)] == [9001]  # glaciers, after 9002 (5 days)

    last = followup_resolve("tell me about the last one", SHOWN)
    assert (last.kind, last.anchor_ids, last.position) == (Kind.ITEM, (9003,), -1)
    assert [f.content.id for f in followup_retrieve(last, limit=3)] == [9003]

    shorter = followup_resolve("shorter please", SHOWN)
    assert shorter.kind == Kind.SHORTER and shorter.previous_reply == SHOWN[1].text
    assert [f.content.id for f in followup_retrieve(shorter, limit=3)] == [9001, 9003]


def test_a_topic_of_its_own_is_a_new_search_and_ordinals_in_a_topic_stay_words():
    assert followup_resolve("the first world war", SHOWN).kind == Kind.SEARCH
    assert followup_resolve("the first world war", SHOWN).terms == ("world", "war")
    assert followup_resolve("more like that", ()).kind == Kind.LATEST
    follow = followup_resolve("more like those", SHOWN)
    assert (follow.kind, follow.anchor_ids, follow.exclude_ids) == (Kind.MORE, (9001, 9003), (9001, 9003))
    assert followup_resolve("number 2", SHOWN).anchor_ids == (9003,)
    fifth = followup_resolve("the fifth one", SHOWN)  # only two were shown: more like both
    assert (fifth.kind, fifth.position, fifth.anchor_ids) == (Kind.MORE, 5, (9001, 9003))


@db
async def test_shorter_re_answers_with_fewer_tokens(engine, models):
    await database_sync_to_async(seed_catalog)()
    await database_sync_to_async(register)(models["endless"])
    previous = "la" + " la" * 59  # 60 tokens
    history = (Turn("user", "climate"), Turn("assistant", previous, cited=(9001,)))

    _, result = await reply(engine, "shorter", history=history, decoding=dataclasses.replace(GREEDY, max_new_tokens=96))

    assert result.completion_tokens == 30  # half the previous reply
    assert result.intent == "follow_up" and {"type": "follow_up", "value": "shorter"} in result.entities


# --- Through the chat websocket ---------------------------------------------------------------------


@db
async def test_the_chat_socket_streams_stores_and_follows_up_with_the_model(engine_settings, models, monkeypatch):
    from mediachat import engine as engines
    from mediachat.models import Message
    from tests.test_ws_protocol import ask, open_socket
    from tests.ws_support import reader_session

    engine_settings.MEDIACHAT = {**engine_settings.MEDIACHAT, "ENGINE": "mediachat.engine.lm.LMEngine"}
    engine_settings.MEDIACHAT["DECODING"] = {"repetition_penalty": 1.0}
    monkeypatch.setattr(lm, "CHECK_SECONDS", 0.0)
    await database_sync_to_async(seed_catalog)()
    session_key = await database_sync_to_async(reader_session)()
    engines._load.cache_clear()  # a fresh engine for this test's settings
    try:
        socket = await open_socket(session_key)
        _, _, searched = await ask(socket, "glaciers")  # no model yet: search results, and the reader is told
        assert searched["notice"] == lm.NO_MODEL_NOTICE and searched["model_version"] is None
        stored = await database_sync_to_async(Message.objects.get)(pk=searched["message_id"])
        assert stored.engine == "retrieval" and stored.text == searched["text"]

        version = await database_sync_to_async(register)(models["cite"])
        ack, events, done = await ask(socket, "glaciers")
        tokens = "".join(e["text"] for e in events if e["type"] == "token")
        assert tokens == REPLY  # streamed raw…
        assert done["text"] == "Read [#9001] and."  # …stored and sent grounded
        assert done["model_version"] == version.pk and [c["id"] for c in done["cited"]] == [9001]
        reply = await database_sync_to_async(Message.objects.get)(pk=done["message_id"])
        assert (reply.text, reply.model_version_id, reply.engine) == ("Read [#9001] and.", version.pk, "lm")

        # The conversation state reaches the engine: "more like that" leaves out what the reply cited,
        # so the model's [#9001] is no longer grounded.
        _, _, more = await ask(socket, "more like that", conversation_id=ack["conversation_id"])
        assert "[#9001]" not in more["text"] and more["cited"] == []
        await socket.disconnect()
    finally:
        engines.get_engine().shutdown()
        engines._load.cache_clear()


def test_asking_for_it_shorter_in_other_words():
    for text in ("make it short", "Keep it brief please", "a shorter answer", "tl;dr"):
        assert followup_resolve(text, SHOWN).kind == Kind.SHORTER, text
    assert followup_resolve("short stories about jazz", SHOWN).kind == Kind.SEARCH


@db
async def test_warm_up_loads_before_the_first_reply_and_shutdown_says_idle(engine, models):
    version = await database_sync_to_async(register)(models["cite"])
    await database_sync_to_async(engine.warm_up)()
    assert lm.engine_status()["state"] in ("loading", "ready")
    await wait_for(lambda: engine.model_version_id == version.pk, what="the model loaded")
    status = lm.engine_status()
    assert status["state"] == "ready" and status["model_version_id"] == version.pk
    assert status["model_path"] == str(models["cite"])
    engine.shutdown()
    assert lm.engine_status()["state"] == "idle" and engine.model_version_id is None
