"""Blocking ORM work off the event loop, on pool threads that keep their database connection.

`database_sync_to_async` closes stale connections around every call, and with CONN_HEALTH_CHECKS the
next query after that pays a `SELECT 1` round trip first: one more round trip per call, on the paths
every chat message takes (the group commit, each reply's understanding and retrieval). `kept` runs a
function on its thread's connection as it is, checking it only after an error, as Django does between
requests (a connection older than CONN_MAX_AGE is still replaced), and runs the function once more on
a fresh connection if the server dropped it mid-call.
So only idempotent work belongs here: reads, and writes that may be repeated.
"""

import asyncio
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from django.db import InterfaceError, OperationalError, connection

P = ParamSpec("P")
R = TypeVar("R")


def kept_call(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`func(*args, **kwargs)` on this thread's connection, with one retry after a dropped connection."""
    if connection.errors_occurred or (connection.connection is not None and not connection.get_autocommit()):
        connection.close_if_unusable_or_obsolete()
    elif connection.close_at is not None and time.monotonic() >= connection.close_at:
        connection.close()  # past CONN_MAX_AGE: the next query opens a new one, as Django would
    try:
        return func(*args, **kwargs)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:  # the caller's transaction is lost with the connection: its call
            raise
        connection.close()
        return func(*args, **kwargs)


def kept(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` as a coroutine function that runs it through `kept_call` on the loop's pool threads."""

    @functools.wraps(func)
    async def off_loop(*args: P.args, **kwargs: P.kwargs) -> R:
        context = contextvars.copy_context()
        call = functools.partial(context.run, kept_call, func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    return off_loop
