"""Embeddings with the real all-MiniLM-L6-v2: the embedder, the services, a real Celery worker, and search."""

import hashlib
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from personalization.embeddings.backends import EmbedderUnavailable, SentenceTransformerEmbedder, embedder_get
from personalization.embeddings.index import index_get
from personalization.embeddings.services import (
    BODY_CHARS,
    content_embedding_text,
    contents_embed,
    contents_embed_pending,
    contents_pending_embedding,
)
from personalization.embeddings.tasks import contents_embed as contents_embed_task
from personalization.embeddings.tasks import contents_embed_pending as contents_embed_pending_task
from personalization.models import Content, ContentEmbedding
from personalization.search import MIN_SIMILARITY, catalog_search
from tests.conftest import wait_until

SOCCER = (
    "World Cup soccer: the national team wins its match",
    "Fans celebrate after a 2-0 victory over the rivals.",
)
BANK = ("Central bank raises interest rates", "Borrowing costs climb for the third time this year.")
PASTA = ("Pasta recipes for weeknights", "Five quick dinners with tomatoes, garlic and fresh basil.")


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    """The model, loaded once for the whole file (seconds); the tests then share it."""
    loaded = embedder_get()
    assert isinstance(loaded, SentenceTransformerEmbedder)
    return loaded


@pytest.fixture(autouse=True)
def fresh_index():
    """Each test starts and ends with an empty in-process index: rows of one test never leak into another."""
    index_get().clear()
    yield
    index_get().clear()


def item(title: str, summary: str = "", *, body: str = "", status: str = "published", **fields) -> Content:
    n = Content.objects.count()
    fields.setdefault("published_at", timezone.now() - timedelta(hours=1))
    return Content.objects.create(
        title=title, summary=summary, body=body, slug=f"item-{n}-{title[:20].lower().replace(' ', '-')}",
        status=status, **fields,
    )  # fmt: skip


def stored_vector(content: Content) -> np.ndarray:
    return np.frombuffer(bytes(ContentEmbedding.objects.get(content=content).vector), dtype="<f4")


# --- the embedder ----------------------------------------------------------------------------------


def test_minilm_gives_normalised_384_dimension_vectors_that_follow_meaning(embedder):
    vectors = embedder.encode(["football", " ".join(SOCCER), " ".join(BANK)])

    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    football, soccer, bank = vectors
    assert football @ soccer > MIN_SIMILARITY > football @ bank
    assert embedder.encode([]).shape == (0, 384)
    assert embedder_get() is embedder  # loaded once per process


def test_embedding_text_joins_title_summary_and_the_start_of_the_body():
    assert content_embedding_text(title="Title", summary="Summary!", body="Body") == "Title. Summary! Body."
    assert content_embedding_text(title="Title", summary="", body="x" * 5000) == "Title. " + "x" * BODY_CHARS + "."


# --- the services ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_contents_embed_stores_vectors_and_is_idempotent(embedder):
    soccer = item(*SOCCER, body="Two goals in the second half.", content_hash="a" * 64)
    bank = item(*BANK)
    draft = item(*PASTA, status="draft")

    assert contents_embed(content_ids=[soccer.pk, bank.pk, draft.pk, bank.pk, 10**9]) == 3

    rows = {e.content_id: e for e in ContentEmbedding.objects.all()}
    assert set(rows) == {soccer.pk, bank.pk, draft.pk}
    assert {(e.model_name, e.dimensions, len(bytes(e.vector))) for e in rows.values()} == {
        (SentenceTransformerEmbedder.name, 384, 384 * 4)
    }
    text = content_embedding_text(title=soccer.title, summary=soccer.summary, body=soccer.body)
    assert np.allclose(stored_vector(soccer), embedder.encode([text])[0], atol=1e-5)
    # The importer's hash when the item has one; a hash of the embedded text when it has none.
    assert rows[soccer.pk].text_hash == "a" * 64
    bank_text = content_embedding_text(title=bank.title, summary=bank.summary, body="")
    assert rows[bank.pk].text_hash == hashlib.sha256(bank_text.encode()).hexdigest()

    first = stored_vector(bank)
    assert contents_embed(content_ids=[bank.pk, soccer.pk, draft.pk]) == 3
    assert ContentEmbedding.objects.count() == 3
    assert np.allclose(stored_vector(bank), first, atol=1e-6)
    assert contents_embed(content_ids=[]) == 0


@pytest.mark.django_db
def test_a_changed_item_becomes_pending_again(embedder):
    edited, rehashed, archived, steady = item(*SOCCER), item(*BANK, content_hash="b" * 64), item(*PASTA), item("Other")
    contents_embed(content_ids=[edited.pk, rehashed.pk, archived.pk, steady.pk])
    assert not contents_pending_embedding().exists()

    edited.title = "World Cup soccer: the final"
    edited.save()
    # An importer's correction changes the hash (an update() leaves updated_at alone: the hash alone tells).
    Content.objects.filter(pk=rehashed.pk).update(content_hash="c" * 64)
    # Archived items are not worth the worker's time; another model's vector is stale.
    archived.status = Content.Status.ARCHIVED
    archived.save()
    ContentEmbedding.objects.filter(content=steady).update(model_name="another/model")

    assert set(contents_pending_embedding().values_list("id", flat=True)) == {edited.pk, rehashed.pk, steady.pk}
    assert contents_embed_pending() == 3
    assert not contents_pending_embedding().exists()
    assert ContentEmbedding.objects.get(content=rehashed).text_hash == "c" * 64
    text = content_embedding_text(title="World Cup soccer: the final", summary=edited.summary, body="")
    assert np.allclose(stored_vector(edited), embedder.encode([text])[0], atol=1e-5)


@pytest.mark.django_db
def test_contents_embed_pending_picks_up_only_pending_items(embedder):
    done = [item(*SOCCER), item(*BANK)]
    contents_embed(content_ids=[c.pk for c in done])
    stamps = dict(ContentEmbedding.objects.values_list("content_id", "updated_at"))
    waiting = [item(*PASTA), item("Volcano eruption explained", status="draft")]

    assert contents_embed_pending(limit=1) == 1
    assert contents_embed_pending() == 1
    assert contents_embed_pending() == 0

    assert set(ContentEmbedding.objects.values_list("content_id", flat=True)) == {c.pk for c in done + waiting}
    # The items that were up to date were not computed again.
    assert dict(ContentEmbedding.objects.filter(content__in=done).values_list("content_id", "updated_at")) == stamps


# --- search ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_search_finds_an_item_by_meaning_once_it_is_embedded(embedder, settings):
    soccer, bank, pasta = item(*SOCCER), item(*BANK), item(*PASTA)
    hidden = item("Soccer match tonight: the derby", "The rivals meet at the stadium.", status="draft")
    future = item(
        "Soccer fans", "Supporters travel to the away match.", published_at=timezone.now() + timedelta(days=1)
    )
    assert catalog_search("football") == []  # no shared word, and nothing embedded yet

    contents_embed(content_ids=[c.pk for c in (soccer, bank, pasta, hidden, future)])
    index_get().refresh(force=True)
    assert len(index_get()) == 4  # published items, drafts left out; the future one is hidden until its date

    hits = catalog_search("football")
    assert [h.content for h in hits] == [soccer]
    assert hits[0].matched == () and hits[0].similarity > MIN_SIMILARITY
    assert hits[0].why == "Close in meaning to your search"
    query = embedder.encode(["football"])[0]
    assert index_get().search(query, 2)[0] == (soccer.pk, pytest.approx(hits[0].similarity, abs=1e-5))
    assert soccer.pk not in dict(index_get().search(query, 10, exclude={soccer.pk}))

    # Words still count: the item that names the query comes first and says why.
    hits = catalog_search("pasta dinners")
    assert hits[0].content == pasta and hits[0].matched == ("pasta", "dinners") and hits[0].similarity > 0.3
    assert soccer not in [h.content for h in hits]
    # Published later, it shows up without a reload once its date has come.
    later = timezone.now() + timedelta(days=2)
    assert {h.content for h in catalog_search("football", now=later)} == {soccer, future}

    settings.MEDIACHAT = {**settings.MEDIACHAT, "SEMANTIC_SEARCH": False}
    assert catalog_search("football") == []
    assert [h.content for h in catalog_search("pasta")] == [pasta]


@pytest.mark.django_db
def test_a_misconfigured_embedder_leaves_search_to_words_and_fails_the_embedding_clearly(settings):
    pasta = item(*PASTA)
    settings.MEDIACHAT = {**settings.MEDIACHAT, "EMBEDDER": "personalization.embeddings.backends.NoSuchEmbedder"}

    assert [(h.content, h.similarity) for h in catalog_search("pasta")] == [(pasta, None)]
    with pytest.raises(EmbedderUnavailable, match="names no class"):
        contents_embed_pending()


@pytest.mark.django_db
def test_search_works_with_no_embeddings(django_assert_max_num_queries):
    old = item("Volcano eruption explained", published_at=timezone.now() - timedelta(days=30))
    new = item("Island life", body="A volcano sits on the island.")
    item(*PASTA)

    with django_assert_max_num_queries(4):  # index check, candidates, tags, authors: no model needed
        hits = catalog_search("volcano")
    assert [h.content for h in hits] == [old, new]
    assert all(h.similarity is None and h.matched == ("volcano",) for h in hits)
    assert len(index_get()) == 0


# --- a real Celery worker ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_embeds_items_end_to_end(celery_worker, embedder):
    items = [item(*SOCCER), item(*BANK), item(*PASTA)]
    contents_embed_task.delay([c.pk for c in items])

    # The worker loads the model on its first task: seconds, on a shared machine maybe tens.
    wait_until(lambda: ContentEmbedding.objects.count() == 3, timeout=120, what="three embeddings")
    for content in items:
        text = content_embedding_text(title=content.title, summary=content.summary, body="")
        assert np.allclose(stored_vector(content), embedder.encode([text])[0], atol=1e-4)

    # The periodic sweep catches an item nobody enqueued.
    late = item("Volcano eruption explained", "Why magma rises.")
    contents_embed_pending_task.delay()
    wait_until(lambda: ContentEmbedding.objects.filter(content=late).exists(), timeout=60, what="the late item")

    index_get().refresh(force=True)
    assert [h.content for h in catalog_search("football")] == [items[0]]
