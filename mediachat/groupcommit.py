"""Group commit for the websocket server: every socket's writes gathered into one transaction at a time.

A socket hands its write over and awaits the outcome. A flush starts as soon as there is something to
write and no flush is running; whatever arrives meanwhile waits for the next one. So a lone write
waits for nothing, and under load one transaction carries many sockets' writes: a handful of
statements per batch instead of a dozen per message.
"""

import asyncio
import logging
import weakref

from .keptdb import kept
from .services import (
    ChatError,
    IncomingMessage,
    ReceivedMessage,
    ReplyEnding,
    messages_receive_many,
    replies_finish_many,
)

logger = logging.getLogger(__name__)


def _write(
    incoming: list[IncomingMessage], endings: list[ReplyEnding]
) -> tuple[list[ReceivedMessage | ChatError], BaseException | None]:
    """One flush: endings first (a reply interrupted by a new message ends before that message is stored)."""
    ending_error = None
    try:
        replies_finish_many(endings=endings)
    except Exception as exc:  # reported to the sockets that wait on these endings
        ending_error = exc
    return messages_receive_many(incoming=incoming), ending_error


async def write(
    incoming: list[IncomingMessage], endings: list[ReplyEnding]
) -> tuple[list[ReceivedMessage | ChatError], BaseException | None]:
    # On a thread that keeps its connection (keptdb): both writes may be repeated after a dropped
    # connection (endings are UPDATEs, messages are matched on client_id).
    return await kept(_write)(incoming, endings)


class GroupCommit:
    """The writer of one event loop; get it with `group_commit()`."""

    # Two transactions in flight: while one commits, the next batch is already being written, so a
    # socket that arrives just after a flush began does not wait for it to end.
    lanes = 2

    def __init__(self) -> None:
        self.incoming: list[tuple[IncomingMessage, asyncio.Future]] = []
        self.endings: list[tuple[ReplyEnding, asyncio.Future]] = []
        self.flushers: set[asyncio.Task] = set()

    async def receive(self, item: IncomingMessage) -> ReceivedMessage:
        """Store a reader's message (and its reply row); raises ChatError as message_receive would."""
        future = asyncio.get_running_loop().create_future()
        self.incoming.append((item, future))
        self._kick()
        result = await future
        if isinstance(result, ChatError):
            raise result
        return result

    async def finish(self, ending: ReplyEnding) -> None:
        """Store how a reply ended."""
        future = asyncio.get_running_loop().create_future()
        self.endings.append((ending, future))
        self._kick()
        await future

    def _kick(self) -> None:
        if len(self.flushers) < self.lanes:
            task = asyncio.get_running_loop().create_task(self._flush())
            self.flushers.add(task)
            task.add_done_callback(self.flushers.discard)

    async def _flush(self) -> None:
        while self.incoming or self.endings:
            incoming, self.incoming = self.incoming, []
            endings, self.endings = self.endings, []
            try:
                results, ending_error = await write([item for item, _ in incoming], [ending for ending, _ in endings])
            except Exception as exc:
                logger.exception("group commit of %d messages, %d endings failed", len(incoming), len(endings))
                for _, future in incoming + endings:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(incoming, results, strict=True):
                if not future.done():
                    future.set_result(result)
            for _, future in endings:
                if future.done():
                    continue
                if ending_error is not None:
                    future.set_exception(ending_error)
                else:
                    future.set_result(None)


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit]" = weakref.WeakKeyDictionary()


def group_commit() -> GroupCommit:
    """The running loop's writer (one per loop: its futures belong to that loop)."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = GroupCommit()
    return writer
