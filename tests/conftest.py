"""Shared fixtures: real processes (ASGI server, Celery worker) started against the test database."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url_for_tests() -> str:
    """A DATABASE_URL naming the test database pytest-django created, for child processes."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this one's services, the test database, one torch thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["DATABASE_URL"] = database_url_for_tests()
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env["MEDIACHAT_DATA_DIR"] = str(settings.DATA_DIR)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def start_asgi_server(env: dict[str, str], port: int) -> subprocess.Popen:
    """uvicorn serving mediachat.asgi over loopback, frames capped at 1 MiB as in production."""
    cmd = [
        sys.executable, "-m", "uvicorn", "mediachat.asgi:application",
        "--host", "127.0.0.1", "--port", str(port),
        "--ws-max-size", "1048576", "--timeout-graceful-shutdown", "3", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_http(f"http://127.0.0.1:{port}/api/health/", proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def asgi_server(transactional_db) -> Iterator[str]:
    """A real ASGI server over loopback on the test database; yields its base URL."""
    port = free_port()
    proc = start_asgi_server(child_env(), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture
def embedded_asgi_server(transactional_db, tmp_path) -> Iterator[str]:
    """A real ASGI server on the embedded default: SQLite and the in-memory channel layer, no services."""
    env = child_env()
    env.pop("REDIS_URL", None)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    env["MEDIACHAT_DATA_DIR"] = str(tmp_path)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    proc = start_asgi_server(env, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


# --- Celery workers and the embedded default in a folder of its own ---------------------------------


def start_celery_worker(env: dict[str, str], logfile: Path, *, pool: str = "prefork") -> subprocess.Popen:
    """A real Celery worker on queues default, nlu and training (one process); returns once it is ready."""
    cmd = [
        sys.executable, "-m", "celery", "-A", "mediachat", "worker", "-Q", "default,nlu,training",
        "-c", "1", "--pool", pool, "-n", f"test-{os.getpid()}-{free_port()}@%h", "-l", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with open(logfile, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = logfile.read_text()
        if " ready." in text:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{text}")
        time.sleep(0.2)
    stop(proc)
    raise TimeoutError(f"celery worker not ready in 60 s:\n{logfile.read_text()}")


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, tmp_path_factory) -> Iterator[Path]:
    """A real Celery worker on the test database and this run's broker (Redis, or SQLite when embedded).

    Module-scoped to start once per file; tests using it take `transactional_db` so the worker sees
    their rows. Yields the worker's log file.
    """
    logfile = tmp_path_factory.mktemp("celery") / "worker.log"
    proc = start_celery_worker(child_env(), logfile)
    try:
        yield logfile
    finally:
        stop(proc)


def embedded_env(data_dir: Path) -> dict[str, str]:
    """A child environment on the embedded default in `data_dir`: its own SQLite database, no Redis."""
    env = child_env()
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    env["MEDIACHAT_DATA_DIR"] = str(data_dir)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run `manage.py ARGS` in a child with `env`; returns its stdout, raises with its output on failure."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


# Creates a small catalog and reading signals, launches a recommender run and prints its id.
LAUNCH_RECOMMENDER_RUN = """
from datetime import timedelta
from django.utils import timezone
from personalization.models import Content, Interaction
from training.services.runs import training_run_launch
now = timezone.now()
items = [
    Content.objects.create(title=f"Item {i}", slug=f"item-{i}", status="published", published_at=now)
    for i in range(12)
]
Interaction.objects.bulk_create(
    Interaction(content=items[(i * i) % 12], kind="click", session_key="reader", occurred_at=now - timedelta(hours=i))
    for i in range(60)
)
print("run", training_run_launch(kind="recommender", parameters={}, user_id=None).pk)
"""


def launch_recommender_run(env: dict[str, str]) -> int:
    """Seed signals and launch a recommender run through `manage.py shell` in a child; returns the run id."""
    out = manage(env, "shell", "-c", LAUNCH_RECOMMENDER_RUN)
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("run ")))


def sqlite_row(path: Path, sql: str, *params: object) -> tuple | None:
    """One row from a SQLite database other processes write (WAL lets this read beside them)."""
    import sqlite3

    db = sqlite3.connect(path, timeout=20)
    try:
        return db.execute(sql, params).fetchone()
    finally:
        db.close()


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; returns that, or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met in {timeout} s")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """A user's encoder saved locally: a two-layer BERT with all-MiniLM-L6-v2's tokenizer, random weights."""
    from transformers import BertConfig, BertModel

    from training.pipelines import intent_encoders

    folder = tmp_path_factory.mktemp("encoder")
    _, tokenizer = intent_encoders.encoder_load(None)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
