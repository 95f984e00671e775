"""The Celery application: queues `default`, `nlu` and `training`, configured from Django settings."""

import os

from celery import Celery
from django.db import InterfaceError, OperationalError
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediachat.settings")

app = Celery("mediachat")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue("default"), Queue("nlu"), Queue("training")]
app.autodiscover_tasks()


def retry_transient_db(*, max_retries: int = 5, backoff_max: int = 600) -> dict:
    """Task options: retry with jittered exponential backoff while the database restarts or fails over."""
    return {
        "autoretry_for": (OperationalError, InterfaceError),
        "retry_backoff": 5,
        "retry_backoff_max": backoff_max,
        "retry_jitter": True,
        "max_retries": max_retries,
    }
