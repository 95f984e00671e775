import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db import transaction

from personalization.ingest.services import (
    ImportProgress,
    ImportRejected,
    import_job_create,
    import_job_enqueue,
    import_job_run,
)
from personalization.models import ImportJob

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "csv", ".xml": "wxr"}
SHOWN_ERRORS = 10
BAR_WIDTH = 30


class Command(BaseCommand):
    help = (
        "Import a JSON Lines, JSON, CSV or WordPress export (WXR) file into the catalog, social posts or customer "
        "messages. Runs here with a progress bar on stderr and prints the counts; --async hands it to a worker."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="The file to import.")
        parser.add_argument(
            "--format", choices=["jsonl", "json", "csv", "wxr"], help="Default: from the extension (.jsonl, .json…)."
        )
        parser.add_argument("--target", choices=ImportJob.Target.values, default=ImportJob.Target.CONTENT)
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="FIELD=COLUMN",
            help="The source column of a field, e.g. --map title=headline (repeatable).",
        )
        parser.add_argument("--source", default="", help="Where the items come from (default: file:<name>).")
        parser.add_argument("--platform", default="", help="Social posts: the platform when the file has none.")
        parser.add_argument(
            "--channel", default="", help="Customer messages: ticket, comment or email, if not in the file."
        )
        parser.add_argument("--delimiter", default="", help="CSV: , ; | or tab (default: detected from the header).")
        parser.add_argument("--async", dest="run_async", action="store_true", help="Queue it for a Celery worker.")

    def handle(self, *args, **options) -> None:
        path: Path = options["path"]
        fmt = options["format"] or EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise CommandError(f"Cannot tell the format of {path.name} from its extension: give --format.")
        mapping = {}
        for item in options["map"]:
            field, sep, column = item.partition("=")
            if not sep or not field.strip() or not column.strip():
                raise CommandError(f"--map takes FIELD=COLUMN, e.g. --map title=headline; got {item!r}.")
            mapping[field.strip()] = column.strip()
        job_options = {k: options[k] for k in ("source", "platform", "channel") if options[k]}
        delimiter = "\t" if options["delimiter"] in ("tab", "\\t") else options["delimiter"]
        if delimiter or path.suffix.lower() == ".tsv":
            job_options["delimiter"] = delimiter or "\t"
        try:
            with transaction.atomic():
                job = import_job_create(
                    format=fmt, target=options["target"], path=path, column_mapping=mapping, options=job_options
                )
                if options["run_async"]:
                    import_job_enqueue(job_id=job.pk)
        except ImportRejected as exc:
            raise CommandError(str(exc)) from None
        if options["run_async"]:
            self.stdout.write(f"Import #{job.pk} queued: a worker reads {job.options['path']}.")
            return
        started = time.monotonic()
        bar = ProgressBar(self.stderr)
        ran = import_job_run(job_id=job.pk, on_batch=bar)
        if ran is None:
            raise CommandError(f"Import #{job.pk} was taken by another process.")
        counts = (ran.rows_seen, ran.created_count, ran.updated_count, ran.skipped_count, ran.failed_count)
        bar(ImportProgress(ran.progress, *counts))
        bar.close()
        self._report(ran, time.monotonic() - started)

    def _report(self, job: ImportJob, seconds: float) -> None:
        rate = job.rows_seen / seconds if seconds > 0 else 0.0
        summary = (
            f"Import #{job.pk} {job.status} in {seconds:.1f} s: {job.rows_seen:,} rows, {job.created_count:,} created, "
            f"{job.updated_count:,} updated, {job.skipped_count:,} skipped, {job.failed_count:,} failed "
            f"({rate:,.0f} rows/s)."
        )
        style = self.style.SUCCESS if job.status == ImportJob.Status.SUCCEEDED else self.style.ERROR
        self.stdout.write(style(summary))
        errors = list(job.row_errors.order_by("line")[:SHOWN_ERRORS])
        if errors:
            self.stdout.write(f"Row errors (first {len(errors)} of {job.failed_count:,}):")
            for error in errors:
                self.stdout.write(f"  line {error.line}: {error.message}")
        if job.status == ImportJob.Status.FAILED:
            raise CommandError(f"Import #{job.pk} failed: {job.error}")


class ProgressBar:
    """Redrawn in place on a terminal; elsewhere a line at each tenth of the file."""

    def __init__(self, stream: OutputWrapper):
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = -1

    def __call__(self, state: ImportProgress) -> None:
        filled = int(state.fraction * BAR_WIDTH)
        line = (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {state.fraction:4.0%}  {state.rows_seen:,} rows: "
            f"{state.created:,} created, {state.updated:,} updated, {state.skipped:,} skipped, {state.failed:,} failed"
        )
        if self.tty:
            self.stream.write("\r" + line, ending="")
        elif int(state.fraction * 10) > self.shown:
            self.shown = int(state.fraction * 10)
            self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("")
