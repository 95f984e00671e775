"""Celery entry points for file imports: each takes an id and calls one service."""

from celery import shared_task

from mediachat.celery import retry_transient_db

from . import services


@shared_task(
    name="personalization.ingest.tasks.import_job_run",
    queue="default",
    soft_time_limit=services.SOFT_TIME_LIMIT_S,
    time_limit=services.TIME_LIMIT_S,
    **retry_transient_db(max_retries=5, backoff_max=300),
)
def import_job_run(job_id: int) -> None:
    services.import_job_run(job_id=job_id)
