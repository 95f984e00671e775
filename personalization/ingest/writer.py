"""Writing imports in batches: rows in, counts and row errors out, each batch in its own transaction.

A reader thread reads the next batches and prepares them (cleaning, no database) while this thread
writes the current one, so text cleaning overlaps the database's work. Each batch is written in one
transaction together with its row errors and the job's counts, so it is all there or not at all. When
the database refuses a batch (a constraint the checks missed, a race with another import), it is
retried row by row, each in its own transaction: the good rows are written and the refused one
becomes a row error. What a batch writes is the business of a BatchWriter: `content_batches` for
catalog items and social posts, `customer_batches` for customer messages.
"""

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.db import DataError, IntegrityError, transaction
from django.db.models import F

from ..models import ImportJob, ImportRowError
from .records import ContentRecord, CustomerRecord, RowError, SourceRow

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
# Batches the reader thread may hold ready beside the one being written and the one it prepares. Keep
# (2 + this) * BATCH_SIZE under the 2,048 fingerprints dedup caches, or the writer computes them again.
PREFETCH_BATCHES = 1
PROGRESS_INTERVAL_S = 0.5
# Past this many stored row errors a job only counts its failures (the first ones show what is wrong).
MAX_STORED_ROW_ERRORS = 10_000
# This many failed rows before any row went through: the file is not what the job says it is.
GIVE_UP_AFTER = 1_000
RAW_CHARS = 2000


class ImportAborted(Exception):
    """The import stopped on purpose; the message says why, for people."""


@dataclass
class ImportProgress:
    """Where an import stands, as reported after each batch."""

    fraction: float = 0.0
    rows_seen: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass
class Prepared:
    """A row made ready to write outside any transaction: a clean record, or the error that stops it."""

    line: int
    record: ContentRecord | CustomerRecord | None = None
    error: RowError | None = None
    ruled: tuple[int | None, list[int]] | None = None  # (section id, tag ids) from editors' mapping rules


@dataclass
class BatchResult:
    """What writing one batch did."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    written: list[tuple[int, ContentRecord]] = field(default_factory=list)  # items created or corrected
    leftover: list[Prepared] = field(default_factory=list)  # records to write with the next batch


def job_source(job: ImportJob) -> str:
    """The `source` of the items a job writes: feed:<id> for a feed, else the job's source option."""
    if job.feed_id:
        return f"feed:{job.feed_id}"
    return str((job.options or {}).get("source") or f"file:{job.filename}")[:100]


class BatchWriter(ABC):
    """Writes one kind of target. `prepare` runs in the reader thread and must not touch the database;
    `write` runs inside the batch's transaction."""

    def __init__(self, job: ImportJob):
        self.job = job
        self.source = job_source(job)

    @abstractmethod
    def prepare(self, rows: list[SourceRow]) -> list[Prepared]: ...

    @abstractmethod
    def write(self, items: list[Prepared]) -> BatchResult: ...

    def committed(self, result: BatchResult) -> None:  # noqa: B027 - an optional hook
        """Called once a batch's transaction committed."""

    def forget(self) -> None:  # noqa: B027 - an optional hook
        """Drop whatever was cached from a transaction that rolled back."""

    def write_committed(self, items: list[Prepared], *, fraction: float | None, stored_errors: int) -> BatchResult:
        """Write `items` in one transaction, or one by one when the database refuses the batch."""
        try:
            with transaction.atomic():
                result = self.write(items)
                self._record(result, fraction=fraction, stored_errors=stored_errors)
        except (IntegrityError, DataError):
            logger.info("import %s: a batch was refused; writing its rows one by one", self.job.pk, exc_info=True)
            self.forget()
            return self._write_one_by_one(items, fraction=fraction, stored_errors=stored_errors)
        self.committed(result)
        return result

    def _write_one_by_one(self, items: list[Prepared], *, fraction: float | None, stored_errors: int) -> BatchResult:
        total = BatchResult()
        todo = list(items)
        while todo:
            item = todo.pop(0)
            try:
                with transaction.atomic():
                    result = self.write([item])
                    self._record(result, fraction=fraction, stored_errors=stored_errors + len(total.errors))
            except (IntegrityError, DataError) as exc:
                self.forget()
                message = f"The database refused the row: {str(exc).strip().splitlines()[0][:500]}"
                external_id = item.record.external_id if item.record is not None else ""
                result = BatchResult(
                    rows=1, errors=[RowError(line=item.line, message=message, external_id=external_id)]
                )
                with transaction.atomic():
                    self._record(result, fraction=fraction, stored_errors=stored_errors + len(total.errors))
            else:
                self.committed(result)
            todo[:0] = result.leftover
            total.rows += result.rows
            total.created += result.created
            total.updated += result.updated
            total.skipped += result.skipped
            total.errors.extend(result.errors)
        return total

    def _record(self, result: BatchResult, *, fraction: float | None, stored_errors: int) -> None:
        room = max(MAX_STORED_ROW_ERRORS - stored_errors, 0)
        if result.errors and room:
            ImportRowError.objects.bulk_create(
                ImportRowError(
                    job_id=self.job.pk,
                    line=max(e.line, 0),
                    external_id=e.external_id[:300],
                    field=e.field[:100],
                    message=e.message,
                    raw=e.raw[:RAW_CHARS],
                )
                for e in result.errors[:room]
            )
        updates: dict = {
            "rows_seen": F("rows_seen") + result.rows,
            "created_count": F("created_count") + result.created,
            "updated_count": F("updated_count") + result.updated,
            "skipped_count": F("skipped_count") + result.skipped,
            "failed_count": F("failed_count") + len(result.errors),
        }
        if fraction is not None:
            updates["progress"] = fraction
        ImportJob.objects.filter(pk=self.job.pk).update(**updates)


def rows_write(
    *,
    job: ImportJob,
    rows: Iterable[SourceRow],
    writer: BatchWriter,
    progress: Callable[[], float] | None = None,
    on_batch: Callable[[ImportProgress], None] | None = None,
) -> ImportProgress:
    """Write `rows` for `job` batch by batch with `writer`, adding to its counts and row errors.

    `progress` gives the fraction read (stored at most every PROGRESS_INTERVAL_S); `on_batch` hears
    after each batch. When the rows stop on an exception (a file broken half-way), the rows before
    it are written, then the exception is raised. Raises ImportAborted when the first GIVE_UP_AFTER
    rows all failed.
    """
    state = ImportProgress()
    stored_errors = ImportRowError.objects.filter(job=job).count()
    last_progress = 0.0
    pending: list[Prepared] = []
    stopped: Exception | None = None
    done = False
    with _Prefetch(rows, writer.prepare, BATCH_SIZE) as batches:
        while True:
            if not done:
                try:
                    pending.extend(next(batches))
                except StopIteration:
                    done = True
                except Exception as exc:  # the reader gave up: write what it read before, then say why
                    done, stopped = True, exc
            if not pending:
                break
            fraction = None  # stored with this batch's counts when PROGRESS_INTERVAL_S has passed
            if progress is not None:
                state.fraction = round(min(max(progress(), 0.0), 1.0), 4)
                if time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
                    fraction, last_progress = state.fraction, time.monotonic()
            result = writer.write_committed(pending, fraction=fraction, stored_errors=stored_errors)
            stored_errors += min(len(result.errors), max(MAX_STORED_ROW_ERRORS - stored_errors, 0))
            pending = result.leftover
            state.rows_seen += result.rows
            state.created += result.created
            state.updated += result.updated
            state.skipped += result.skipped
            state.failed += len(result.errors)
            if on_batch is not None:
                on_batch(state)
            if state.failed >= GIVE_UP_AFTER and not (state.created or state.updated or state.skipped):
                first = ImportRowError.objects.filter(job=job).order_by("line").first()
                example = f" (line {first.line}: {first.message})" if first else ""
                raise ImportAborted(
                    f"The first {state.failed:,} rows all failed{example}: check the file's format, target and "
                    "column mapping."
                )
    if stopped is not None:
        raise stopped
    return state


class _Prefetch:
    """Reads rows and prepares them in batches in a thread, up to PREFETCH_BATCHES ahead of the consumer.

    Iterating gives prepared batches in order, then raises StopIteration, or the exception the rows
    stopped on (after the batch read before it). Leaving the `with` block stops and joins the thread,
    so the rows' generator is idle when the caller closes it.
    """

    def __init__(self, rows: Iterable[SourceRow], prepare: Callable[[list[SourceRow]], list[Prepared]], size: int):
        self._rows = iter(rows)
        self._prepare = prepare
        self._size = size
        self._queue: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="import-reader", daemon=True)

    def __enter__(self) -> "_Prefetch":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblocks a reader waiting to put
            except queue.Empty:
                pass
        self._thread.join()

    def __iter__(self) -> Iterator[list[Prepared]]:
        return self

    def __next__(self) -> list[Prepared]:
        while True:
            try:
                kind, payload = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("The import's reader thread ended without a word.") from None
        if kind == "batch":
            return payload
        if kind == "end":
            raise StopIteration
        raise payload

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch: list[SourceRow] = []
                error: Exception | None = None
                try:
                    for row in self._rows:
                        batch.append(row)
                        if len(batch) >= self._size:
                            break
                except Exception as exc:
                    error = exc
                if batch and not self._put(("batch", self._prepare(batch))):
                    return
                if error is not None:
                    self._put(("error", error))
                    return
                if len(batch) < self._size:
                    self._put(("end", None))
                    return
        except BaseException as exc:  # a bug in preparing: the consumer raises it instead of waiting
            self._put(("error", exc))

    def _put(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
