"""Start and supervise the platform's processes: the ASGI server, a Celery worker, Celery beat and the engine.

Where the reply engine runs depends on the channel layer. Embedded (no REDIS_URL) it runs inside the
ASGI process: the web server gets `MEDIACHAT_ENGINE=<ENGINE_SERVED>`. With Redis, `--engines N` (default
1) `manage.py run_engine` processes serve it and the web server gets the channel-layer client, so web
processes hold no model; `--engines 0` when the engine processes run elsewhere (one per GPU, say). A
`MEDIACHAT_ENGINE` set in the environment wins over both, and then no engine process is started.

Each runs as a child process in its own process group, so a Ctrl-C in the terminal reaches them once,
through this supervisor. A signal is forwarded to every child; when any child exits the others are
stopped and the command exits with that child's status.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

QUEUES = "default,nlu,training"
REMOTE_ENGINE = "mediachat.engine.remote.ChannelLayerEngine"
STOP_GRACE_S = 15.0
READY_TIMEOUT_S = 60.0


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's own environment
    proc: subprocess.Popen | None = None


def _set_parent_death_signal() -> None:
    # Linux: a child whose supervisor is killed outright (SIGKILL) gets SIGTERM instead of living on.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Command(BaseCommand):
    help = (
        "Run the ASGI server, a Celery worker (queues default, nlu, training), Celery beat and, with Redis, "
        "the engine processes; Ctrl-C stops all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to serve on (default 8000).")
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="ASGI server processes; more than one needs REDIS_URL (the in-memory channel layer is per process).",
        )
        parser.add_argument(
            "--engines",
            type=int,
            default=None,
            help="`run_engine` processes to supervise (default 1; 0: they run elsewhere); needs REDIS_URL. "
            "Embedded, the engine runs inside the web server.",
        )

    def handle(self, *args, host: str, port: int, workers: int, engines: int | None, **options) -> None:
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if engines is not None and engines < 0:
            raise CommandError("--engines must be 0 or more.")
        if engines and not settings.REDIS_URL:
            raise CommandError(
                "--engines needs REDIS_URL: engine processes take requests over the channel layer, and the "
                "in-memory layer of the embedded default cannot cross processes (embedded, the engine runs "
                "inside the web server)."
            )
        if workers > 1 and not settings.REDIS_URL:
            raise CommandError(
                "--workers > 1 needs REDIS_URL: the in-memory channel layer of the embedded default lives in one "
                "process, so a reader's socket and its replies must share it."
            )
        if not 0 < port < 65536:
            raise CommandError("--port must be between 1 and 65535.")
        self._check_migrated()
        children = self._children(host=host, port=port, workers=workers, engines=1 if engines is None else engines)
        self._signum: int | None = None
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self._children_list = children
        for child in children:
            child.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                child.cmd,
                env={**self._child_env(), **child.env},
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
            self.stdout.write(f"started {child.name} (pid {child.proc.pid}): {' '.join(child.cmd[1:])}")
            self.stdout.flush()
        code = self._supervise(children, host=host, port=port)
        if code:
            raise SystemExit(code)

    def _check_migrated(self) -> None:
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            raise CommandError("The database has unapplied migrations: run `manage.py migrate` (or `make demo`).")

    def _children(self, *, host: str, port: int, workers: int, engines: int) -> list[Child]:
        python = sys.executable
        web = [python, "-m", "uvicorn", "mediachat.asgi:application", "--host", host, "--port", str(port),
               "--ws-max-size", "1048576", "--timeout-graceful-shutdown", "3"]  # fmt: skip
        if workers > 1:
            web += ["--workers", str(workers)]
        concurrency = 1 if (os.cpu_count() or 1) <= 2 else min(4, (os.cpu_count() or 1) // 2)
        worker = [python, "-m", "celery", "-A", "mediachat", "worker", "-Q", QUEUES, "--pool", "prefork",
                  "-c", str(concurrency), "-n", f"mediachat-{port}@%h", "-l", "INFO"]  # fmt: skip
        beat = [python, "-m", "celery", "-A", "mediachat", "beat", "-l", "INFO",
                "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]  # fmt: skip
        web_engine, engines = self._engine_placement(engines)
        if engines:
            self._engine_line = (
                f"  engine    {engines} `run_engine` process(es) serving {settings.MEDIACHAT['ENGINE_SERVED']}"
            )
        elif web_engine == REMOTE_ENGINE:
            self._engine_line = "  engine    `run_engine` processes started elsewhere (--engines 0)"
        else:
            self._engine_line = f"  engine    {web_engine}, inside the web server"
        run_engine = [python, str(settings.BASE_DIR / "manage.py"), "run_engine"]
        return [
            Child("web", web, env={"MEDIACHAT_ENGINE": web_engine}),
            Child("worker", worker),
            Child("beat", beat),
            *(Child(f"engine{i}", run_engine) for i in range(1, engines + 1)),
        ]

    def _engine_placement(self, engines: int) -> tuple[str, int]:
        """The engine the web server calls, and how many `run_engine` processes serve it."""
        chosen = os.environ.get("MEDIACHAT_ENGINE")
        if chosen:  # the operator's choice: an OpenAI-compatible server, say, or engines run elsewhere
            return chosen, engines if chosen == REMOTE_ENGINE else 0
        if not settings.REDIS_URL:
            return settings.MEDIACHAT["ENGINE_SERVED"], 0
        return REMOTE_ENGINE, engines

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if (os.cpu_count() or 1) <= 2:
            # Torch (which sizes its thread pool from these) in the worker and in the server would otherwise
            # each take every core, and two processes fighting over two cores run many times slower.
            env.setdefault("OMP_NUM_THREADS", "1")
            env.setdefault("MKL_NUM_THREADS", "1")
        return env

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signum is None:
            self._signum = signum  # the supervision loop forwards it
            return
        # A second Ctrl-C means now: kill rather than wait for a task or a socket to finish.
        for child in self._children_list:
            if child.proc is not None and child.proc.poll() is None:
                os.killpg(child.proc.pid, signal.SIGKILL)

    def _supervise(self, children: list[Child], *, host: str, port: int) -> int:
        announced = False
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self._signum is None:
            exited = [c for c in children if c.proc is not None and c.proc.poll() is not None]
            if exited:
                child = exited[0]
                self.stderr.write(f"{child.name} exited with status {child.proc.returncode}; stopping the others")
                self._stop(children, signal.SIGTERM)
                return child.proc.returncode if child.proc.returncode > 0 else 1
            if not announced:
                if self._ready(host, port):
                    self._banner(host, port)
                    announced = True
                elif time.monotonic() > deadline:
                    self.stderr.write(f"the web server did not answer /api/health/ in {READY_TIMEOUT_S:.0f} s")
                    announced = True
            time.sleep(0.25)
        self._stop(children, self._signum)
        return 0

    def _ready(self, host: str, port: int) -> bool:
        probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - not binding
        try:
            with urllib.request.urlopen(f"http://{_url_host(probe)}:{port}/api/health/", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _stop(self, children: list[Child], signum: int) -> None:
        """Send `signum` to the children still running, wait for them, kill those that outlast the grace."""
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} did not stop in {STOP_GRACE_S:.0f} s; killing it")
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
        self.stdout.write("all processes stopped")
        self.stdout.flush()

    def _banner(self, host: str, port: int) -> None:
        base = f"http://{_url_host(host)}:{port}"
        lines = [
            "",
            f"mediachat is running at {base}/",
            f"  chat      {base}/",
            f"  admin     {base}/admin/",
            f"  API docs  {base}/api/docs/",
            self._engine_line,
        ]
        lines += self._logins()
        lines += ["Press Ctrl-C to stop the server, the worker, beat and the engine processes.", ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _logins(self) -> list[str]:
        from personalization.demo.seed import ADMIN_PASSWORD, EDITOR_PASSWORD, STAFF_PASSWORD

        return [
            "Demo sign-ins, once `manage.py seed_demo` has run (demo-only passwords):",
            f"  editor / {EDITOR_PASSWORD}   (editors: the catalog, and conversations to read)",
            f"  staff  / {STAFF_PASSWORD}    (staff: an editor who also runs training and activates models)",
            f"  admin  / {ADMIN_PASSWORD}    (superuser)",
        ]
