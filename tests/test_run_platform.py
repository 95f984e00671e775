"""`manage.py run_platform`: on the embedded default in a folder of its own (serve, run a job, stop), and on
PostgreSQL and Redis with the engine in processes of its own."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from websockets.asyncio.client import connect

from personalization.demo.seed import ADMIN_PASSWORD, EDITOR_PASSWORD, STAFF_PASSWORD
from tests.conftest import (
    ROOT,
    child_env,
    embedded_env,
    free_port,
    launch_recommender_run,
    manage,
    sqlite_row,
    wait_until,
)
from tests.ws_support import cookie, reader_session, seed_catalog

REMOTE_ENGINE = "mediachat.engine.remote.ChannelLayerEngine"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


class Platform:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, *args: str):
        self.env = env if env is not None else embedded_env(data_dir)
        self.env.pop("OMP_NUM_THREADS", None)  # run_platform sets it for its children on small machines
        self.db = data_dir / "mediachat.sqlite3"
        self.log = data_dir / "platform.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "run_platform", "--port", str(self.port), *args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"run_platform exited with {self.proc.returncode}:\n{self.output()}"
            return "mediachat is running at" in self.output() and " ready." in self.output()

        wait_until(ready, timeout=60, what="run_platform's banner and a ready worker")

    def children(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"^started (\w+) \(pid (\d+)\)", self.output(), re.M)}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.children().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def platform(tmp_path) -> Iterator[Platform]:
    manage(embedded_env(tmp_path), "migrate", "--noinput", "-v", "0")
    platform = Platform(tmp_path)
    try:
        yield platform
    finally:
        platform.kill()


def test_serves_runs_a_job_and_stops_on_sigterm(platform):
    platform.wait_ready()
    children = platform.children()
    assert set(children) == {"web", "worker", "beat"}  # embedded: no engine process
    worker_env = Path(f"/proc/{children['worker']}/environ").read_bytes().split(b"\0")
    assert (b"OMP_NUM_THREADS=1" in worker_env) == ((os.cpu_count() or 1) <= 2)
    # The engine runs inside the web server: the one `run_engine` would serve.
    assert environ(children["web"])["MEDIACHAT_ENGINE"] == settings.MEDIACHAT["ENGINE_SERVED"]
    assert f"engine    {settings.MEDIACHAT['ENGINE_SERVED']}, inside the web server" in platform.output()
    out = platform.output()
    for line in (f"{platform.url}/", f"{platform.url}/admin/", f"{platform.url}/api/docs/"):
        assert line in out
    for login in (f"editor / {EDITOR_PASSWORD}", f"staff  / {STAFF_PASSWORD}", f"admin  / {ADMIN_PASSWORD}"):
        assert login in out  # as seed_demo creates them

    health = httpx.get(f"{platform.url}/api/health/", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    chat = httpx.get(f"{platform.url}/", timeout=10)
    assert chat.status_code == 200 and chat.headers["content-type"].startswith("text/html")

    # A job launched from another process reaches the worker through the SQLite broker.
    run_id = launch_recommender_run(platform.env)
    status = wait_until(
        lambda: (
            (row := sqlite_row(platform.db, "SELECT status FROM training_trainingrun WHERE id = ?", run_id))
            and row[0] not in ("queued", "running")
            and row[0]
        ),
        timeout=60,
        what=f"training run {run_id} finishing",
    )
    assert status == "succeeded"
    # Beat's DatabaseScheduler copied the schedule from the settings into its tables.
    tasks = {
        r[0]
        for r in sqlite3_rows(
            platform.db, "SELECT task FROM django_celery_beat_periodictask WHERE task NOT LIKE 'celery.%'"
        )
    }
    assert tasks == {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "mediachat.tasks.conversations_close_stale" in tasks

    started = time.monotonic()
    platform.proc.send_signal(signal.SIGTERM)
    assert platform.proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 15
    assert not [name for name, pid in children.items() if alive(pid)]
    assert "all processes stopped" in platform.output()


def test_exits_when_a_child_dies(platform):
    platform.wait_ready()
    children = platform.children()

    os.kill(children["beat"], signal.SIGKILL)

    assert platform.proc.wait(timeout=30) != 0
    assert "beat exited with status -9; stopping the others" in platform.output()
    assert not [name for name, pid in children.items() if alive(pid)]


def test_refuses_what_cannot_work(tmp_path):
    env = embedded_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "manage.py", "run_platform", "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "--workers > 1 needs REDIS_URL" in done.stderr
    done = subprocess.run(
        [sys.executable, "manage.py", "run_platform", "--engines", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "--engines needs REDIS_URL" in done.stderr
    done = subprocess.run(  # a fresh folder: nothing migrated yet
        [sys.executable, "manage.py", "run_platform"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1 and "unapplied migrations: run `manage.py migrate`" in done.stderr


def sqlite3_rows(path: Path, sql: str) -> list[tuple]:
    import sqlite3

    db = sqlite3.connect(path, timeout=20)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_with_redis_the_engine_runs_in_processes_of_its_own(tmp_path):
    assert settings.REDIS_URL, "this test needs REDIS_URL (a real Redis: `.ci/run` provides one)"
    seed_catalog()
    session_key = reader_session()
    env = child_env(
        MEDIACHAT_ENGINE_SERVED="mediachat.engine.retrieval.RetrievalEngine",
        MEDIACHAT_ENGINE_CHANNEL=f"mediachat.engine.platform-{free_port()}",
        MEDIACHAT_STREAM_DELAY_MS="0",
    )
    env.pop("MEDIACHAT_ENGINE", None)
    platform = Platform(tmp_path, env, "--engines", "2")
    try:
        wait_until(
            lambda: (
                platform.proc.poll() is None
                and "mediachat is running at" in (out := platform.output())
                and " ready." in out
                and out.count("engine ready:") == 2
            ),
            timeout=90,
            what="run_platform's banner, a ready worker and two ready engines",
        )
        children = platform.children()
        assert set(children) == {"web", "worker", "beat", "engine1", "engine2"}
        assert environ(children["web"])["MEDIACHAT_ENGINE"] == REMOTE_ENGINE  # the web server holds no engine
        assert "2 `run_engine` process(es) serving mediachat.engine.retrieval.RetrievalEngine" in platform.output()

        done, tokens = asyncio.run(chat(platform.url, session_key, "climate"))

        assert done["status"] == "complete" and "".join(tokens) == done["text"]
        assert done["text"].startswith("Here are 2 pieces on climate: “")
        assert re.search(r"request \w+ done in \d+ ms", platform.output())  # written by an engine process

        platform.proc.send_signal(signal.SIGTERM)
        assert platform.proc.wait(timeout=30) == 0
        assert not [name for name, pid in children.items() if alive(pid)]
        assert platform.output().count("engine stopped:") == 2
    finally:
        platform.kill()


async def chat(base_url: str, session_key: str, text: str) -> tuple[dict, list[str]]:
    """One message over the chat socket; returns the reply's `done` event and its streamed tokens."""
    url = base_url.replace("http://", "ws://") + "/ws/chat/"
    headers = {"Cookie": cookie(session_key)}
    async with connect(url, origin=base_url, additional_headers=headers, proxy=None, open_timeout=10) as socket:
        await socket.send(json.dumps({"type": "message", "text": text}))
        tokens = []
        while True:
            event = json.loads(await asyncio.wait_for(socket.recv(), 20))
            if event["type"] == "token":
                tokens.append(event["text"])
            elif event["type"] == "done":
                return event, tokens
            elif event["type"] == "error":
                raise AssertionError(f"error event: {event}")
