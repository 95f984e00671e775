"""Off-loop ORM calls on kept connections (mediachat/keptdb.py): no health-check round trip, and a dropped
connection is survived, on the group commit's and the engines' paths."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError, connection, connections, transaction

from mediachat.engine.base import EngineRequest
from mediachat.engine.retrieval import RetrievalEngine
from mediachat.keptdb import kept, kept_call
from personalization.models import Content
from tests.test_chat_groupcommit import _drop_pool_connections
from tests.ws_support import seed_catalog, worker_connections_closed  # noqa: F401 (autouse)


def _count_published() -> int:
    return Content.objects.filter(status=Content.Status.PUBLISHED).count()


@pytest.mark.django_db(transaction=True)
async def test_kept_calls_skip_the_health_check_that_database_sync_to_async_pays(monkeypatch):
    if not connection.settings_dict.get("CONN_HEALTH_CHECKS"):
        pytest.skip("health checks are on for PostgreSQL only (settings): SQLite has no server to check")
    await database_sync_to_async(seed_catalog)()
    checks = []
    wrapper = type(connections["default"])  # the backend's DatabaseWrapper class, shared by every thread
    original = wrapper.is_usable

    def is_usable(self):
        checks.append(1)
        return original(self)

    monkeypatch.setattr(wrapper, "is_usable", is_usable)
    counted = kept(_count_published)
    for _ in range(8):
        assert await counted() == 4
    kept_checks = len(checks)
    for _ in range(8):
        assert await database_sync_to_async(_count_published, thread_sensitive=False)() == 4
    assert kept_checks == 0 and len(checks) >= 8  # a SELECT 1 round trip per call, saved


@pytest.mark.django_db(transaction=True)
async def test_a_reply_search_survives_a_connection_the_server_dropped():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: only a database server can drop a worker's connection")
    await database_sync_to_async(seed_catalog)()
    engine = RetrievalEngine()
    before = await engine.compose_off_loop(EngineRequest(text="glaciers"))
    assert await _drop_pool_connections() >= 1
    after = await asyncio.gather(*(engine.compose_off_loop(EngineRequest(text="glaciers")) for _ in range(4)))
    assert all(r.text == before.text and "Glaciers in retreat" in r.text for r in after)


@pytest.mark.django_db(transaction=True)
def test_a_call_inside_a_transaction_is_not_repeated():
    calls = []

    def fails():
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    with pytest.raises(OperationalError), transaction.atomic():
        kept_call(fails)
    assert len(calls) == 1  # the transaction's earlier work is gone with the connection: the caller decides
    with pytest.raises(OperationalError):
        kept_call(fails)
    assert len(calls) == 3  # outside one: tried again once, on a fresh connection


@pytest.mark.django_db(transaction=True)
def test_a_connection_past_its_age_is_replaced():
    if not connection.settings_dict.get("CONN_MAX_AGE"):
        pytest.skip("the embedded SQLite keeps no connection (CONN_MAX_AGE 0): each call opens its own")

    def raw_connection():
        Content.objects.exists()
        return connection.connection

    first = kept_call(raw_connection)
    assert kept_call(raw_connection) is first  # kept from call to call
    connection.close_at = 0.0  # as if CONN_MAX_AGE had passed
    assert kept_call(raw_connection) is not first
