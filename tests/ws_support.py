"""Shared by the websocket tests: a small published catalog and reader sessions, made in the real database."""

import asyncio
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.db import connections
from django.utils import timezone

from personalization.identity import SESSION_READER_KEY
from personalization.models import Content, Section, Tag

CATALOG = [
    # (section, kind, title, summary, tags, days ago)
    ("Science", "article", "Glaciers in retreat", "How the climate is reshaping the Alps.", ["climate"], 2),
    ("Science", "podcast", "The climate podcast: carbon markets", "Who pays for emissions.", ["climate"], 5),
    ("Culture", "video", "Jazz in the city", "A night in three clubs.", ["music"], 1),
    ("Business", "article", "Chips and tariffs", "The semiconductor trade, explained.", ["economy"], 9),
]


def seed_catalog(*, prefix: str = "ws") -> list[Content]:
    """Four published items (two on climate) plus a draft that must never be recommended."""
    now = timezone.now()
    items = []
    for position, (section_name, kind, title, summary, tags, days) in enumerate(CATALOG):
        section, _ = Section.objects.get_or_create(
            name=section_name, defaults={"slug": f"{prefix}-{section_name.lower()}", "position": position}
        )
        content = Content.objects.create(
            kind=kind,
            title=title,
            slug=f"{prefix}-{position}-{secrets.token_hex(3)}",
            summary=summary,
            body=f"{summary} {title}.",
            section=section,
            status=Content.Status.PUBLISHED,
            published_at=now - timedelta(days=days),
        )
        for name in tags:
            tag, _ = Tag.objects.get_or_create(name=name, defaults={"slug": f"{prefix}-{name}"})
            content.tags.add(tag)
        items.append(content)
    Content.objects.create(
        title="Climate draft, unpublished", slug=f"{prefix}-draft-{secrets.token_hex(3)}", status=Content.Status.DRAFT
    )
    return items


def reader_session(*, with_reader_key: bool = True) -> str:
    """A stored session, as the chat page would leave it; returns its key (the `sessionid` cookie)."""
    session = SessionStore()
    if with_reader_key:
        session[SESSION_READER_KEY] = secrets.token_hex(16)
    session.create()
    return session.session_key


def cookie(session_key: str) -> str:
    return f"{settings.SESSION_COOKIE_NAME}={session_key}"


@pytest.fixture(autouse=True)
async def worker_connections_closed():
    """Close what worker threads opened, so no connection outlives the test (and its database).

    ORM calls of the code under test run on the loop's default executor, and the test's own on the
    shared sync thread; with CONN_MAX_AGE their connections stay open, and Channels' communicator
    turns `close_old_connections` into a no-op while it runs. Autouse where it is imported.
    """
    loop = asyncio.get_running_loop()
    workers = 4
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ws-test")
    loop.set_default_executor(executor)
    yield
    barrier = threading.Barrier(workers)

    def close_on_this_thread() -> None:
        barrier.wait(timeout=10)  # holds each thread until all have one call, so every thread runs one
        connections.close_all()

    await asyncio.gather(*(loop.run_in_executor(executor, close_on_this_thread) for _ in range(workers)))
    await database_sync_to_async(connections.close_all)()
    executor.shutdown(wait=True)
