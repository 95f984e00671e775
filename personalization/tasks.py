"""Celery tasks of the personalization app. Each domain keeps its tasks beside its code; importing them
here is what lets Celery's autodiscovery register them."""

from .ingest.tasks import import_job_run  # noqa: F401
