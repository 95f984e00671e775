"""What the websocket benchmarks share: the server's environment, its processes, a few statistics.

A benchmark starts the platform as a deployment runs it: production settings (DEBUG off), uvicorn, and
with Redis `manage.py run_engine` processes that the web server calls over the channel layer (as
`run_platform` deploys them). With nothing configured it runs on the embedded default, on a SQLite file
of its own under MEDIACHAT_DATA_DIR so that the demo's data stays clean.
"""

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REMOTE_ENGINE = "mediachat.engine.remote.ChannelLayerEngine"


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def server_env(sqlite_name: str = "bench.sqlite3") -> dict[str, str]:
    """The environment of the server processes (and of this one once `django_setup` runs)."""
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        data_dir = Path(env.get("MEDIACHAT_DATA_DIR", ROOT / "var"))
        data_dir.mkdir(parents=True, exist_ok=True)
        env["MEDIACHAT_DATA_DIR"] = str(data_dir)
        env["DATABASE_URL"] = f"sqlite:///{data_dir / sqlite_name}"
    # Production settings (DEBUG off: no query log in every cursor), as a deployment runs.
    env.setdefault("DJANGO_DEBUG", "0")
    env.setdefault("DJANGO_SECRET_KEY", "bench-" + "x" * 50)
    env.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
    env.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")
    # The benchmarks measure throughput, not the per-socket limit that protects a real server.
    env["MEDIACHAT_WS_RATE_PER_S"] = "1000000"
    env["MEDIACHAT_WS_RATE_BURST"] = "1000000"
    # Processes share the cores here: torch in each keeps to one thread (see ../shared/NOTES.md).
    env.setdefault("MEDIACHAT_ENGINE_THREADS", "1")
    env.setdefault("MEDIACHAT_EMBEDDER_THREADS", "1")
    env.setdefault("LOG_LEVEL", "WARNING")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def django_setup(env: dict[str, str]) -> None:
    """Migrate the benchmark's database and set Django up in this process on the same environment."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediachat.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def manage(env: dict[str, str], *args: str) -> None:
    """A management command; its output goes to stderr with the progress, so stdout ends with the JSON line."""
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=sys.stderr)


def reader_sessions(count: int) -> list[str]:
    """`count` stored anonymous reader sessions, as the chat page leaves them; their keys (the cookie)."""
    import secrets

    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connections

    from personalization.identity import SESSION_READER_KEY

    keys = []
    for _ in range(count):
        session = SessionStore()
        session[SESSION_READER_KEY] = secrets.token_hex(16)
        session.create()
        keys.append(session.session_key)
    connections.close_all()
    return keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engines(env: dict[str, str]) -> list[subprocess.Popen]:
    """With Redis, `BENCH_ENGINES` (1) `run_engine` processes, and the web server's engine set to call them."""
    if not env.get("REDIS_URL") or env.get("MEDIACHAT_ENGINE", REMOTE_ENGINE) != REMOTE_ENGINE:
        return []
    env["MEDIACHAT_ENGINE"] = REMOTE_ENGINE
    count = int(os.environ.get("BENCH_ENGINES", "1"))
    log(f"starting {count} engine process(es)")
    return [subprocess.Popen([sys.executable, "manage.py", "run_engine"], cwd=ROOT, env=env) for _ in range(count)]


def engines_ready(question: str, timeout_s: float = 180.0) -> None:
    """One reply through the engine processes, so that clients start on warm engines (model, embedder loaded)."""
    from mediachat.engine import EngineError, EngineRequest
    from mediachat.engine.remote import ChannelLayerEngine

    async def probe() -> None:
        async for _ in ChannelLayerEngine().start(EngineRequest(text=question)):
            pass

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            asyncio.run(probe())
            log("engine ready")
            return
        except EngineError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the engine processes did not answer: {exc.code}") from exc


def start_uvicorn(env: dict[str, str], port: int, app: str = "mediachat.asgi:application") -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "uvicorn", app,
        "--host", "127.0.0.1", "--port", str(port), "--ws-max-size", "1048576",
        "--timeout-graceful-shutdown", "3", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("uvicorn did not start")


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def run_async(coroutine):
    """Run the client side on uvloop when it is installed (as uvicorn's server side does)."""
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def percentile(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]
