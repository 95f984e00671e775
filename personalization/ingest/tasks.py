"""Celery entry points for file imports: each takes an id and calls one service."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services

# A database that is restarting or failing over: retry with backoff; a rerun of an import is idempotent.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


@shared_task(
    name="personalization.ingest.tasks.import_job_run",
    queue="default",
    soft_time_limit=services.SOFT_TIME_LIMIT_S,
    time_limit=services.TIME_LIMIT_S,
    autoretry_for=TRANSIENT_DB_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
)
def import_job_run(job_id: int) -> None:
    services.import_job_run(job_id=job_id)
