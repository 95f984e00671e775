"""The settings module in both modes, read in a fresh interpreter with the environment of each."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Prints what the settings and the Celery app resolved to, as JSON.
PROBE = """
import json
import django
django.setup()
from django.conf import settings
from django.db.backends.postgresql import psycopg_any
from mediachat.celery import app

app.loader.import_default_modules()  # what a worker does at start: autodiscover every app's tasks
layer = settings.CHANNEL_LAYERS["default"]
execute = app.tasks["training.tasks.training_run_execute"]
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "db_options": settings.DATABASES["default"].get("OPTIONS", {}),
    "psycopg3": psycopg_any.is_psycopg3,
    "layer": layer["BACKEND"],
    "layer_hosts": layer.get("CONFIG", {}).get("hosts"),
    "cache": settings.CACHES["default"]["BACKEND"],
    "broker": app.conf.broker_url,
    "transport_options": app.conf.broker_transport_options,
    "queues": sorted(q.name for q in app.conf.task_queues),
    "default_queue": app.conf.task_default_queue,
    "acks_late": app.conf.task_acks_late,
    "reject_on_worker_lost": app.conf.task_reject_on_worker_lost,
    "prefetch": app.conf.worker_prefetch_multiplier,
    "cancel_on_connection_loss": app.conf.worker_cancel_long_running_tasks_on_connection_loss,
    "soft_time_limit": app.conf.task_soft_time_limit,
    "time_limit": app.conf.task_time_limit,
    "training_limits": [execute.soft_time_limit, execute.time_limit, execute.queue],
    "training_retry": [sorted(e.__name__ for e in execute.autoretry_for), execute.max_retries],
    "route": app.amqp.router.route({}, "training.tasks.training_run_execute")["queue"].name,
    "beat": {name: entry["task"] for name, entry in app.conf.beat_schedule.items()},
    "scheduler": app.conf.beat_scheduler,
    "tasks": sorted(name for name in app.tasks if not name.startswith("celery.")),
}))
"""


def probe(tmp_path, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MEDIACHAT_DATA_DIR")}
    base.update(MEDIACHAT_DATA_DIR=str(tmp_path), **env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> dict:
    return probe(tmp_path_factory.mktemp("embedded"))


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> dict:
    # Reading settings connects to nothing, so these addresses need not answer.
    return probe(
        tmp_path_factory.mktemp("services"),
        DATABASE_URL="postgres://app:secret@db.internal:5432/mediachat",
        REDIS_URL="redis://cache.internal:6379/2",
    )


def test_embedded_default_needs_no_server(embedded, tmp_path_factory):
    assert embedded["engine"] == "django.db.backends.sqlite3"
    assert embedded["db_name"].endswith("/mediachat.sqlite3")
    assert "journal_mode=WAL" in embedded["db_options"]["init_command"]
    assert embedded["db_options"]["transaction_mode"] == "IMMEDIATE" and embedded["db_options"]["timeout"] == 20
    assert embedded["layer"] == "channels.layers.InMemoryChannelLayer"
    assert embedded["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert embedded["broker"].startswith("sqla+sqlite:///") and embedded["broker"].endswith("/celery-broker.sqlite3")
    # The broker has a SQLite file of its own, apart from the data's.
    assert embedded["broker"].removeprefix("sqla+sqlite:///") != embedded["db_name"]
    # The SQLAlchemy transport passes its options to create_engine, which refuses unknown ones.
    assert embedded["transport_options"] == {}


def test_services_mode_uses_postgresql_and_redis(services):
    assert services["engine"] == "django.db.backends.postgresql" and services["psycopg3"] is True
    assert services["db_name"] == "mediachat"
    assert services["layer"] == "channels_redis.core.RedisChannelLayer"
    assert services["layer_hosts"] == [{"address": "redis://cache.internal:6379/2", "socket_timeout": 10}]
    assert services["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert services["broker"] == "redis://cache.internal:6379/2"
    assert services["transport_options"]["visibility_timeout"] > services["training_limits"][1]


@pytest.mark.parametrize("mode", ["embedded", "services"])
def test_celery_configuration(mode, request):
    conf = request.getfixturevalue(mode)
    assert conf["queues"] == ["default", "nlu", "training"] and conf["default_queue"] == "default"
    assert conf["acks_late"] is True and conf["reject_on_worker_lost"] is True
    assert conf["prefetch"] == 1 and conf["cancel_on_connection_loss"] is True
    assert conf["soft_time_limit"] < conf["time_limit"]
    soft, hard, queue = conf["training_limits"]
    assert soft < hard and queue == "training" and conf["route"] == "training"
    assert conf["training_retry"] == [["InterfaceError", "OperationalError"], 5]
    assert conf["scheduler"] == "django_celery_beat.schedulers:DatabaseScheduler"
    assert set(conf["beat"].values()) >= {
        "training.tasks.recommender_refresh",
        "training.tasks.training_runs_fail_lost",
        "mediachat.tasks.conversations_close_stale",
        "personalization.ingest.feed_tasks.feeds_poll_due",
        "personalization.embeddings.tasks.contents_embed_pending",
    }
    assert set(conf["beat"].values()) <= set(conf["tasks"])
