"""The Celery application: queues `default`, `nlu` and `training`, configured from Django settings."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediachat.settings")

app = Celery("mediachat")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue("default"), Queue("nlu"), Queue("training")]
app.autodiscover_tasks()
