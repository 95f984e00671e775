"""Serving a chat model: the loaded model with its batch scheduler, swapped at a reply boundary, and its status.

`ModelServing`, the base of `engine.lm.LMEngine`, serves the `Target` it is asked for. The model is loaded
once per process, in a background thread. When another target is asked for, it loads in the background
while replies go on on the old one (`Served`); then new replies go to the new one, and the old scheduler is
stopped once its last reply has finished, so nothing in flight is dropped. A model that fails to load is
tried again after `RETRY_LOAD_SECONDS`; meanwhile replies go on on the model serving, if any (`served_for`
returns None when there is none).

The state (`State`: idle, loading, ready, no_model, error) is published to Django's cache, so that a web
process's admin shows the state of a separate `run_engine` (`engine_status()`).

Threads: the scheduler thread is the engine's own thread inside the ASGI process on the embedded default.
torch gets `ENGINE_THREADS`, or 1 when it is 0: on the embedded default the web server, the Celery worker
and beat share the machine, and two processes with several torch threads each on shared cores run many
times slower than with one each (measured on 2 cores: 435 → 18 tok/s). A machine given to the engine
alone (`run_engine`) sets `MEDIACHAT_ENGINE_THREADS` to its core count.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from .batching import BatchScheduler
from .loading import LoadedModel, model_load

logger = logging.getLogger(__name__)

RETRY_LOAD_SECONDS = 60.0  # a model that failed to load is tried again after this long
STATUS_KEY = "mediachat:engine:status"  # in Django's cache, so a web process can show a run_engine's state


# --- Status, for the admin -------------------------------------------------------------------------


class State:
    IDLE = "idle"  # not serving yet (the model loads with the first reply or `LMEngine.warm_up`), or shut down
    LOADING = "loading"
    READY = "ready"
    NO_MODEL = "no_model"  # no active chat-lm version and no CHAT_MODEL: replies are search results
    ERROR = "error"  # the model failed to load: replies are search results; `last_error` says why


_status: dict = {"state": State.IDLE, "model_path": "", "model_version_id": None, "last_error": "", "since": None}
_status_lock = threading.Lock()


def _status_set(**changes) -> None:
    with _status_lock:
        if all(_status.get(key) == value for key, value in changes.items()):
            return  # unchanged: no cache write (this can run on the event loop)
        if "state" in changes and changes["state"] != _status["state"]:
            changes["since"] = timezone.now().isoformat()
        _status.update(changes)
    _status_publish()


def _status_publish() -> None:
    with _status_lock:
        snapshot = dict(_status)
    try:
        cache.set(STATUS_KEY, snapshot, timeout=None)
    except Exception:  # the status is a courtesy to the admin; a cache outage must not fail a reply
        logger.warning("Could not publish the engine status to the cache.", exc_info=True)


def engine_status() -> dict:
    """The chat model's state for the admin dashboard.

    `state` (one of `State`: idle, loading, ready, no_model, error), `model_path`, `model_version_id`,
    `last_error` and `since` (ISO time of the last change of state). Read from Django's cache, where
    the serving process writes it, so that a web process shows the state of a separate `run_engine`;
    this process's own state when the cache holds none.
    """
    try:
        shared = cache.get(STATUS_KEY)
    except Exception:
        shared = None
    if shared:
        return dict(shared)
    with _status_lock:
        return dict(_status)


# --- The model served ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A model to serve: a folder, and the registry version it came from (None for CHAT_MODEL)."""

    path: str
    version_id: int | None


class Served:
    """One loaded model with its scheduler, and the replies it has in flight."""

    def __init__(self, target: Target, loaded: LoadedModel, scheduler: BatchScheduler) -> None:
        self.target = target
        self.loaded = loaded
        self.scheduler = scheduler
        self._lock = threading.Lock()
        self._inflight = 0
        self._retired = False
        self._stopped = False

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def acquire(self) -> bool:
        """Count a reply in; False once retired (the caller takes the model that replaced it)."""
        with self._lock:
            if self._retired:
                return False
            self._inflight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._inflight -= 1
            stop = self._should_stop()
        if stop:
            self._stop_later()

    def retire(self) -> None:
        """Take no new replies; stop the scheduler once the ones in flight have finished."""
        with self._lock:
            self._retired = True
            stop = self._should_stop()
        if stop:
            self._stop_later()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _should_stop(self) -> bool:
        if self._retired and self._inflight == 0 and not self._stopped:
            self._stopped = True
            return True
        return False

    def _stop_later(self) -> None:
        # stop() joins the scheduler thread: never on the event loop.
        threading.Thread(target=self.scheduler.stop, name="batch-scheduler-stop", daemon=True).start()


class ModelServing:
    """Loads the `Target` asked for in the background and serves it; the model half of `LMEngine`."""

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads  # None: ENGINE_THREADS, or 1 when that is 0
        self._lock = threading.Lock()
        self._served: Served | None = None
        self._loading: tuple[Target, Future] | None = None
        self._failed: dict[Target, float] = {}

    def _threads(self) -> int:
        if self.threads is not None:
            return self.threads
        return settings.MEDIACHAT.get("ENGINE_THREADS") or 1

    def _load(self, target: Target, done: Future) -> None:
        """Load `target` and start its scheduler (on a loader thread); then route new replies to it."""
        try:
            if not target.path:
                raise ValueError(f"Chat model version {target.version_id} has no artifact path.")
            device = settings.MEDIACHAT.get("ENGINE_DEVICE", "auto")
            loaded = model_load(target.path, device=device, threads=self._threads())
            scheduler = BatchScheduler(
                loaded.model,
                loaded.tokenizer,
                max_batch=settings.MEDIACHAT.get("ENGINE_MAX_BATCH", 16),
                max_queue=settings.MEDIACHAT.get("ENGINE_QUEUE", 64),
                device=loaded.device,
                max_context=loaded.max_context,
            )
        except Exception as exc:
            logger.exception("Loading the chat model %s failed.", target.path)
            with self._lock:
                self._failed[target] = time.monotonic()
                self._loading = None
                serving = self._served
            if serving is None:
                _status_set(state=State.ERROR, last_error=f"{type(exc).__name__}: {exc}")
            else:  # the old model goes on serving; the admin still sees why the new one is not there
                _status_set(
                    state=State.READY,
                    model_path=serving.target.path,
                    model_version_id=serving.target.version_id,
                    last_error=f"Loading {target.path} failed: {type(exc).__name__}: {exc}",
                )
            done.set_result(None)
            return
        served = Served(target, loaded, scheduler)
        # Published first, so that whoever sees the new model serving also reads it in the status.
        _status_set(state=State.READY, model_path=target.path, model_version_id=target.version_id, last_error="")
        with self._lock:
            old, self._served = self._served, served
            self._loading = None
            self._failed.pop(target, None)
        if old is not None:
            old.retire()
        logger.info("Chat model %s (version %s) is serving.", target.path, target.version_id)
        done.set_result(served)

    def _ensure(self, target: Target | None) -> Future | None:
        """Start loading `target` unless it is served, loading or failed lately; returns the load's future."""
        with self._lock:
            served = self._served
            if target is None:
                if served is not None:  # deactivated with nothing in its place
                    self._served = None
                    served.retire()
                if self._loading is None:
                    _status_set(state=State.NO_MODEL, model_path="", model_version_id=None, last_error="")
                return None
            if served is not None and served.target == target:
                return None
            if self._loading is not None:
                # One load at a time; a load of another target is picked up by a later check.
                return self._loading[1]
            if self.load_failed_lately(target):
                return None
            done: Future = Future()
            done.set_running_or_notify_cancel()  # running: nobody can cancel it
            self._loading = (target, done)
        if self._served is None:  # while a model serves, the admin goes on seeing it until the swap
            _status_set(state=State.LOADING, model_path=target.path, model_version_id=target.version_id, last_error="")
        threading.Thread(target=self._load, args=(target, done), name="chat-model-load", daemon=True).start()
        return done

    def load_failed_lately(self, target: Target) -> bool:
        """Whether `target` failed to load less than RETRY_LOAD_SECONDS ago (no new try before then)."""
        failed_at = self._failed.get(target)
        return failed_at is not None and time.monotonic() - failed_at < RETRY_LOAD_SECONDS

    async def served_for(self, target: Target | None) -> Served | None:
        """The model this reply goes to, counted in; None: no model (the reply is search results).

        While another model loads, replies go on to the one serving; only with nothing serving yet does
        a reply wait for the load.
        """
        loading = self._ensure(target)
        while True:
            served = self._served
            if served is None and loading is not None and target is not None:
                # Shielded: a reply cancelled while it waits must not cancel the load others wait for.
                served = await asyncio.shield(asyncio.wrap_future(loading))
                loading = None
                if served is None:
                    served = self._served
            if served is None:
                return None
            if served.acquire():
                return served
            # Retired between the read and the count (a swap): the next read finds its successor.
            await asyncio.sleep(0)

    def shutdown(self) -> None:
        """Stop serving: the schedulers end, replies in flight end as cancelled."""
        with self._lock:
            served, self._served = self._served, None
        if served is not None:
            served.retire()
            if not served.stopped:
                served.scheduler.stop()
        _status_set(state=State.IDLE, model_path="", model_version_id=None, last_error="")
