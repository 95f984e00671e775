"""Group commit for the websocket server: every socket's writes gathered into one transaction at a time.

A socket hands its write over and awaits the outcome. A flush starts as soon as there is something to
write and no flush is running; whatever arrives meanwhile waits for the next one. So a lone write
waits for nothing, and under load one transaction carries many sockets' writes: a handful of
statements per batch instead of a dozen per message.
"""

import asyncio
import logging
import weakref
from dataclasses import dataclass

from .keptdb import kept
from .models import Message
from .services import ChatError
from .services.batches import (
    IncomingMessage,
    ReceivedMessage,
    ReplyEnding,
    ReplyStart,
    messages_receive_many,
    replies_finish_many,
    replies_start_many,
)

logger = logging.getLogger(__name__)


@dataclass
class Flushed:
    """Each kind of write's results in the order it was handed over, or the exception that failed it."""

    ended: list[None] | BaseException
    received: list[ReceivedMessage | ChatError]
    started: list[Message] | BaseException


def _write(incoming: list[IncomingMessage], endings: list[ReplyEnding], starts: list[ReplyStart]) -> Flushed:
    """One flush: endings first (a reply interrupted by a new message ends before that message is stored).

    A failure of endings or starts is reported to the sockets that wait on them; the messages go on.
    """
    ended: list[None] | BaseException = [None] * len(endings)
    try:
        replies_finish_many(endings=endings)
    except Exception as exc:
        ended = exc
    received = messages_receive_many(incoming=incoming)
    started: list[Message] | BaseException
    try:
        started = replies_start_many(starts=starts)
    except Exception as exc:
        started = exc
    return Flushed(ended=ended, received=received, started=started)


async def write(incoming: list[IncomingMessage], endings: list[ReplyEnding], starts: list[ReplyStart]) -> Flushed:
    # On a thread that keeps its connection (keptdb), which runs it once more after a dropped connection:
    # endings are UPDATEs and messages are matched on client_id, so both may be repeated; a start repeated
    # after its COMMIT was lost in transit leaves one spare streaming row, which nothing streams to.
    return await kept(_write)(incoming, endings, starts)


class GroupCommit:
    """The writer of one event loop; get it with `group_commit()`."""

    # Two transactions in flight: while one commits, the next batch is already being written, so a
    # socket that arrives just after a flush began does not wait for it to end.
    lanes = 2

    def __init__(self) -> None:
        self.incoming: list[tuple[IncomingMessage, asyncio.Future]] = []
        self.endings: list[tuple[ReplyEnding, asyncio.Future]] = []
        self.starts: list[tuple[ReplyStart, asyncio.Future]] = []
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

    async def start(self, start: ReplyStart) -> Message:
        """Create a reply's streaming row; its id names the reply's tokens."""
        future = asyncio.get_running_loop().create_future()
        self.starts.append((start, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        if len(self.flushers) < self.lanes:
            task = asyncio.get_running_loop().create_task(self._flush())
            self.flushers.add(task)
            task.add_done_callback(self.flushers.discard)

    async def _flush(self) -> None:
        while self.incoming or self.endings or self.starts:
            incoming, self.incoming = self.incoming, []
            endings, self.endings = self.endings, []
            starts, self.starts = self.starts, []
            try:
                flushed = await write(
                    [item for item, _ in incoming], [ending for ending, _ in endings], [start for start, _ in starts]
                )
            except Exception as exc:
                logger.exception(
                    "group commit of %d messages, %d endings, %d starts failed",
                    len(incoming),
                    len(endings),
                    len(starts),
                )
                for _, future in incoming + endings + starts:
                    if not future.done():
                        future.set_exception(exc)
                continue
            _settle(endings, flushed.ended)
            _settle(incoming, flushed.received)
            _settle(starts, flushed.started)


def _settle(waiting: list[tuple[object, asyncio.Future]], outcome: list | BaseException) -> None:
    """Each waiting future gets its item's result, or all of them the batch's exception."""
    for n, (_, future) in enumerate(waiting):
        if future.done():  # its socket gave up waiting
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome[n])


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit]" = weakref.WeakKeyDictionary()


def group_commit() -> GroupCommit:
    """The running loop's writer (one per loop: its futures belong to that loop)."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = GroupCommit()
    return writer
