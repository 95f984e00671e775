"""Serve the reply engine to the web processes over the channel layer (Redis): one process per GPU.

    CUDA_VISIBLE_DEVICES=0 manage.py run_engine &
    CUDA_VISIBLE_DEVICES=1 manage.py run_engine &

Each process loads `MEDIACHAT["ENGINE_SERVED"]` (or `--engine`) once (an engine with a `warm_up()` starts
loading its model at once) and takes requests from the
channel `MEDIACHAT["ENGINE_CHANNEL"]`; Redis hands each request to one of the processes receiving from
it, so several share the load. SIGTERM or Ctrl-C stops taking requests, lets replies in flight finish
for `--grace` seconds and ends the rest with an `engine_unavailable` error. A process given the machine
(or a GPU) alone may set `MEDIACHAT_ENGINE_THREADS` to its cores for torch on CPU.
"""

import asyncio
import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from mediachat.engine.base import Engine, EngineError
from mediachat.engine.remote_server import EngineServer
from mediachat.engine.wire import real_layer

logger = logging.getLogger("mediachat.engine.run_engine")


class Command(BaseCommand):
    help = "Serve the reply engine to web processes over the channel layer (needs REDIS_URL); one per GPU."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--engine", default="", help="Dotted path of the Engine to serve (default ENGINE_SERVED).")
        parser.add_argument(
            "--concurrency",
            type=int,
            default=0,
            help="Replies in flight at once; beyond, requests are answered `busy` "
            "(default ENGINE_MAX_BATCH + ENGINE_QUEUE: what the engine batches plus what it queues).",
        )
        parser.add_argument(
            "--grace", type=float, default=10.0, help="Seconds replies in flight get to finish on SIGTERM."
        )

    def handle(self, *args, engine: str, concurrency: int, grace: float, **options) -> None:
        try:
            real_layer()
        except EngineError as exc:
            raise CommandError(exc.detail) from None
        path = engine or settings.MEDIACHAT["ENGINE_SERVED"]
        served = self._load(path)
        config = settings.MEDIACHAT
        concurrency = concurrency or config["ENGINE_MAX_BATCH"] + config["ENGINE_QUEUE"]
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        try:
            asyncio.run(self._serve(EngineServer(served, concurrency=concurrency, grace_s=grace)))
        finally:
            shutdown = getattr(served, "shutdown", None)  # a model engine stops its scheduler threads
            if callable(shutdown):
                shutdown()

    def _load(self, path: str) -> Engine:
        try:
            engine_class = import_string(path)
        except ImportError as exc:
            raise CommandError(f"The engine {path!r} cannot be imported: {exc}") from exc
        if not (isinstance(engine_class, type) and issubclass(engine_class, Engine)):
            raise CommandError(f"{path!r} is not a mediachat.engine.base.Engine.")
        started = time.monotonic()
        logger.info("loading engine %s", path)
        engine = engine_class()
        warm_up = getattr(engine, "warm_up", None)  # a model engine starts loading its model now, not on a reply
        if callable(warm_up):
            warm_up()
        logger.info(
            "loaded engine %s (model version %s) in %.1f s",
            engine.name,
            engine.model_version_id,
            time.monotonic() - started,
        )
        return engine

    async def _serve(self, server: EngineServer) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await server.serve(stop)
