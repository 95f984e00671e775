"""Writes for imports: create a job from a file, enqueue it, run it, and write rows from any source.

A job's row is the record and the lock: `import_job_run` claims it with a conditional UPDATE (queued →
running), so a task delivered twice runs once. Reruns are safe anyway: the writer matches rows to what
exists, so importing the same file again creates nothing and skips every row.
"""

import logging
import os
from collections.abc import Callable, Iterable
from contextlib import closing, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from celery.exceptions import SoftTimeLimitExceeded
from celery.utils import uuid
from django.core.files import File
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from ..models import ImportJob, ImportRowError
from .columns import CHANNELS, mapping_check
from .content_batches import ContentWriter
from .customer_batches import CustomerWriter
from .formats import CHUNK, FormatError, read_rows, sniff
from .records import SourceRow
from .writer import ImportAborted, ImportProgress, rows_write

logger = logging.getLogger(__name__)

FILE_FORMATS = ("jsonl", "json", "csv", "wxr")
OPTIONS = {"source", "platform", "channel", "delimiter", "path"}
DELIMITERS = (",", ";", "\t", "|")
# The import task's limits (tasks.py); a job still `running` past TIME_LIMIT_S lost its worker and may be
# taken over. Both stay below the Redis visibility timeout (4 h in settings).
SOFT_TIME_LIMIT_S = 3 * 3600
TIME_LIMIT_S = SOFT_TIME_LIMIT_S + 120

__all__ = [
    "ImportProgress",
    "ImportRejected",
    "import_job_create",
    "import_job_enqueue",
    "import_job_run",
    "import_rows_write",
]


class ImportRejected(ValueError):
    """An import refused before it starts: unknown format or target, a bad mapping, a file of the wrong type."""


def import_rows_write(
    *,
    job: ImportJob,
    rows: Iterable[SourceRow],
    progress: Callable[[], float] | None = None,
    on_batch: Callable[[ImportProgress], None] | None = None,
) -> ImportProgress:
    """Clean, deduplicate and write `rows` for `job` in batches, each in its own transaction.

    Adds to the job's counts and row errors as batches commit; leaves its status to the caller. Items
    are written with source `feed:<id>` for a feed's job, else the job's `source` option. Raises
    ImportAborted when the first 1,000 rows all failed.
    """
    writer = CustomerWriter(job) if job.target == ImportJob.Target.CUSTOMER else ContentWriter(job)
    return rows_write(job=job, rows=rows, writer=writer, progress=progress, on_batch=on_batch)


def import_job_create(
    *,
    format: str,
    target: str,
    file: BinaryIO | File | None = None,
    path: str | os.PathLike | None = None,
    filename: str = "",
    column_mapping: dict | None = None,
    options: dict | None = None,
    user_id: int | None = None,
) -> ImportJob:
    """A queued import of an uploaded `file` (stored with the job) or of a file at `path` on this server.

    Raises ImportRejected, with a message for people, for an unknown format or target, a mapping that names
    unknown fields, bad options, or a file that is missing, empty or plainly not of `format`.
    """
    if format not in FILE_FORMATS:
        raise ImportRejected(f"Unknown file format {format!r}; the importer takes {', '.join(FILE_FORMATS)}.")
    if target not in ImportJob.Target.values:
        raise ImportRejected(f"Unknown target {target!r}; one of {', '.join(ImportJob.Target.values)}.")
    if format == "wxr" and target != ImportJob.Target.CONTENT:
        raise ImportRejected("A WordPress export holds posts and pages: import it as content.")
    try:
        mapping = mapping_check(target=target, column_mapping=column_mapping)
    except ValueError as exc:
        raise ImportRejected(str(exc)) from None
    if format == "wxr" and mapping:
        raise ImportRejected("A WordPress export has fixed fields: it takes no column mapping.")
    if (file is None) == (path is None):
        raise ImportRejected("Give either a file or a path.")
    if path is not None:
        path = Path(path).resolve()
        if not path.is_file():
            raise ImportRejected(f"No file at {path}.")
        filename = filename or path.name
        try:
            with open(path, "rb") as stream:
                head = stream.read(CHUNK)
        except OSError as exc:
            raise ImportRejected(f"The file {path} cannot be read: {exc.strerror}.") from None
    else:
        filename = filename or Path(getattr(file, "name", "") or "upload").name
        start = file.tell() if hasattr(file, "tell") else 0
        head = file.read(CHUNK)
        file.seek(start)
    try:
        sniff(head, format=format)
    except FormatError as exc:
        raise ImportRejected(f"{filename}: {exc}") from None
    filename = filename[:300]
    checked = _options_check(options, target=target, filename=filename)
    if path is not None:
        checked["path"] = str(path)
    job = ImportJob(
        format=format,
        target=target,
        filename=filename,
        column_mapping=mapping,
        options=checked,
        created_by_id=user_id,
    )
    if file is not None:
        job.file.save(Path(filename).name or "upload", file if isinstance(file, File) else File(file), save=False)
    job.save()
    return job


def _options_check(options: dict | None, *, target: str, filename: str) -> dict:
    options = dict(options or {})
    options.pop("path", None)  # set from the path argument only
    unknown = set(options) - OPTIONS
    if unknown:
        raise ImportRejected(
            f"Unknown options: {', '.join(sorted(unknown))}; known: source, platform, channel, delimiter."
        )
    for key, value in options.items():
        if not isinstance(value, str):
            raise ImportRejected(f"The {key} option must be text.")
    source = options.get("source", "").strip()
    if len(source) > 100:
        raise ImportRejected("The source name is longer than 100 characters.")
    options["source"] = source or f"file:{filename}"[:100]
    if options.get("delimiter") and options["delimiter"] not in DELIMITERS:
        raise ImportRejected("The CSV delimiter is one of , ; | or a tab.")
    if options.get("channel"):
        channel = CHANNELS.get(options["channel"].strip().lower())
        if channel is None:
            raise ImportRejected("The channel is one of ticket, comment, email.")
        options["channel"] = channel
    if len(options.get("platform", "")) > 32:
        raise ImportRejected("The platform name is longer than 32 characters.")
    return options


def import_job_enqueue(*, job_id: int) -> None:
    """Send the job to a worker once the current transaction commits (at once outside one)."""
    from .tasks import import_job_run as task  # the tasks module imports this one

    task_id = uuid()
    ImportJob.objects.filter(pk=job_id).update(celery_task_id=task_id)
    transaction.on_commit(lambda: task.apply_async(args=[job_id], task_id=task_id))


def import_job_run(*, job_id: int, on_batch: Callable[[ImportProgress], None] | None = None) -> ImportJob | None:
    """Run a queued file import in this process; None unless this call wins the job's lease.

    The job ends succeeded (row errors and all) or failed with a message in `error`: a file that turns out
    not to be of its format, XML or JSON broken at some line (the rows before it stay imported), a missing
    file. A transient database error puts the job back in the queue and is raised, for a retry.
    """
    now = timezone.now()
    claimable = Q(status=ImportJob.Status.QUEUED) | Q(
        status=ImportJob.Status.RUNNING, started_at__lt=now - timedelta(seconds=TIME_LIMIT_S)
    )
    claimed = (
        ImportJob.objects.filter(claimable, pk=job_id)
        .exclude(format=ImportJob.Format.FEED)
        .update(
            status=ImportJob.Status.RUNNING,
            started_at=now,
            finished_at=None,
            progress=0.0,
            error="",
            rows_seen=0,
            created_count=0,
            updated_count=0,
            skipped_count=0,
            failed_count=0,
        )
    )
    if not claimed:
        logger.info("import job %s is not queued (or is leased to another run); nothing to do", job_id)
        return None
    ImportRowError.objects.filter(job_id=job_id).delete()  # left by a run whose worker was lost
    job = ImportJob.objects.get(pk=job_id)
    try:
        with _job_file(job) as (stream, size):
            head = stream.read(CHUNK)
            stream.seek(0)
            sniff(head, format=job.format)
            rows = read_rows(
                format=job.format,
                target=job.target,
                stream=stream,
                column_mapping=job.column_mapping,
                options=job.options,
            )
            with closing(rows):  # the reader lets go of the file before it closes, even when the writer stops
                import_rows_write(job=job, rows=rows, progress=lambda: stream.tell() / max(size, 1), on_batch=on_batch)
    except (FormatError, ImportAborted) as exc:
        _finish(job_id, failed=str(exc))
    except SoftTimeLimitExceeded:
        _finish(
            job_id,
            failed=f"Stopped after {SOFT_TIME_LIMIT_S // 3600} hours; run it again to go on (done rows are skipped).",
        )
    except (OperationalError, InterfaceError):
        _release(job_id)
        raise
    except OSError as exc:
        _finish(job_id, failed=f"The file cannot be read: {exc.strerror or exc}.")
    except Exception as exc:
        logger.exception("import job %s failed", job_id)
        _finish(job_id, failed=f"The import stopped on an unexpected error: {type(exc).__name__}: {exc}")
    else:
        _finish(job_id)
    return ImportJob.objects.get(pk=job_id)


@contextmanager
def _job_file(job: ImportJob):
    """The job's file, open for binary reading, and its size."""
    path = (job.options or {}).get("path")
    if path:
        with open(path, "rb") as stream:
            yield stream, os.fstat(stream.fileno()).st_size
        return
    if not job.file:
        raise FormatError("The job has no file to import.")
    job.file.open("rb")
    try:
        yield job.file.file, job.file.size
    finally:
        job.file.close()


def _finish(job_id: int, *, failed: str = "") -> None:
    updates: dict = {"finished_at": timezone.now()}
    if failed:
        updates.update(status=ImportJob.Status.FAILED, error=failed)
    else:
        updates.update(status=ImportJob.Status.SUCCEEDED, progress=1.0)
    ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).update(**updates)


def _release(job_id: int) -> None:
    try:
        ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).update(
            status=ImportJob.Status.QUEUED, started_at=None
        )
    except DatabaseError:
        logger.warning("could not requeue import job %s; it stays running until its lease expires", job_id)
