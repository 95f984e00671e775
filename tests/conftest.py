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
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    port = free_port()
    proc = start_asgi_server(env, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
