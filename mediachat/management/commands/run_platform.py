"""Start and supervise the platform's processes: the ASGI server, a Celery worker and Celery beat.

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
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

QUEUES = "default,nlu,training"
STOP_GRACE_S = 15.0
READY_TIMEOUT_S = 60.0


@dataclass
class Child:
    name: str
    cmd: list[str]
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
    help = "Run the ASGI server, a Celery worker (queues default, nlu, training) and Celery beat; Ctrl-C stops all."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to serve on (default 8000).")
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="ASGI server processes; more than one needs REDIS_URL (the in-memory channel layer is per process).",
        )

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if workers > 1 and not settings.REDIS_URL:
            raise CommandError(
                "--workers > 1 needs REDIS_URL: the in-memory channel layer of the embedded default lives in one "
                "process, so a reader's socket and its replies must share it."
            )
        if not 0 < port < 65536:
            raise CommandError("--port must be between 1 and 65535.")
        self._check_migrated()
        children = self._children(host=host, port=port, workers=workers)
        self._signum: int | None = None
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self._children_list = children
        for child in children:
            child.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                child.cmd, env=self._child_env(), start_new_session=True, preexec_fn=_set_parent_death_signal
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

    def _children(self, *, host: str, port: int, workers: int) -> list[Child]:
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
        return [Child("web", web), Child("worker", worker), Child("beat", beat)]

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
        ]
        lines += self._logins()
        lines += ["Press Ctrl-C to stop the server, the worker and beat.", ""]
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
