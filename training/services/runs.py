"""Training runs: launch (enqueue a Celery job), execute (in the worker), cancel, and the periodic refresh.

A run's row is the record and the lock. `training_run_execute` claims it with a conditional UPDATE
(queued → running), so a task delivered twice runs once; the pipeline reports progress through a
checkpoint that also notices a cancellation and stops the job there.
"""

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path

from celery.utils import uuid
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from personalization.models import Content, Intent, Interaction
from training.models import ModelKind, ModelVersion, TrainingRun
from training.pipelines import popularity

from .registry import model_version_activate

logger = logging.getLogger(__name__)

# The worker kills a training task after TIME_LIMIT_S, so no execution of a run can still be alive after
# that long: a row still `running` past it lost its worker, and a redelivered task may take it over.
SOFT_TIME_LIMIT_S = 2 * 3600
TIME_LIMIT_S = SOFT_TIME_LIMIT_S + 120
# Runs queued this long were never picked up: their message was lost or no worker serves the queue.
QUEUED_EXPIRY = timedelta(hours=24)
PROGRESS_INTERVAL_S = 0.5
STOP_CHECK_INTERVAL_S = 1.0  # how often a running pipeline asks whether its run was cancelled
LOG_TAIL_CHARS = 4000


class TrainingRunError(ValueError):
    """A refusal with a message for people: an unknown kind, bad parameters, a run that cannot be cancelled."""


class RunCancelled(Exception):
    """Raised at a progress checkpoint once the run's row says it was cancelled."""


Observer = Callable[[float, str, str], None]  # (fraction, log line or "", phase or "")


class Checkpoint:
    """Progress reports of one running run; raises RunCancelled when the row is no longer `running`.

    Progress alone is written at most every PROGRESS_INTERVAL_S; a log line is written at once. An
    `observer` (a command's progress bar) sees every report, before the throttle.
    """

    def __init__(self, run_id: int, observer: Observer | None = None):
        self.run_id = run_id
        self.observer = observer
        self._last = 0.0

    def __call__(self, fraction: float, line: str = "", *, phase: str = "") -> None:
        if self.observer is not None:
            self.observer(fraction, line, phase)
        now = time.monotonic()
        if not line and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        updates: dict = {"progress": round(min(max(fraction, 0.0), 1.0), 4)}
        if line:
            updates["log"] = _log_append(line)
        if not TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(**updates):
            raise RunCancelled


@dataclass
class PipelineResult:
    name: str  # the model version's name
    artifact_path: Path  # a file in the run's own folder, or that folder itself (a saved transformers model)
    config: dict
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    check: Callable[[dict], object]  # validates parameters at launch; raises ValueError
    train: Callable[[TrainingRun, Checkpoint], PipelineResult]


class RunWatch:
    """A pipeline's view of its run: `report` progress (a cancellation sets `cancelled` instead of raising)
    and `should_stop`, which reads the run's row at most every STOP_CHECK_INTERVAL_S."""

    def __init__(self, run_id: int, checkpoint: Checkpoint):
        self.run_id = run_id
        self.checkpoint = checkpoint
        self.cancelled = False
        self._checked = 0.0

    def report(self, fraction: float, line: str = "", phase: str = "") -> None:
        try:
            self.checkpoint(fraction, line, phase=phase)
        except RunCancelled:
            self.cancelled = True

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self._checked >= STOP_CHECK_INTERVAL_S:
            self._checked = now
            self.cancelled = not TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).exists()
        return self.cancelled


def _log_append(line: str) -> Concat:
    return Concat(F("log"), Value(f"{timezone.now():%Y-%m-%d %H:%M:%S} {line}\n"))


@cache
def git_revision() -> str | None:
    """The checkout's commit, if this runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, fixed arguments
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def artifact_write(*, kind: str, run_id: int, payload: dict) -> Path:
    """Write `payload` as MODEL_DIR/<kind>/<run_id>/model.json: into a temporary folder, renamed into place."""
    root = Path(settings.MODEL_DIR) / kind
    root.mkdir(parents=True, exist_ok=True)
    final = root / str(run_id)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}-", dir=root))
    try:
        with open(tmp / "model.json", "w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # left by an attempt whose worker was lost before it finished
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / "model.json"


def recommender_train(run: TrainingRun, checkpoint: Checkpoint) -> PipelineResult:
    """The popularity recommender on every interaction so far, evaluated on a time split."""
    config = popularity.PopularityConfig.from_parameters(run.parameters)
    last_id = Interaction.objects.order_by("-id").values_list("id", flat=True).first()
    if last_id is None:
        raise ValueError("No interactions to train on: the recommender learns from readers' reading signals.")
    interactions = Interaction.objects.filter(id__lte=last_id).order_by("occurred_at", "id")
    total = interactions.count()
    split_index = min(total - 1, int(total * (1 - config.holdout_fraction)))
    split_at = interactions.values_list("occurred_at", flat=True)[split_index]
    checkpoint(0.0, f"{total} interactions; evaluation holds out those from {split_at.isoformat()} on")

    def rows(queryset):
        return queryset.values_list("content_id", "kind", "value", "occurred_at").iterator(chunk_size=2000)

    earlier = interactions.filter(occurred_at__lt=split_at)
    n_earlier = earlier.count()
    eval_model = popularity.fit(
        rows(earlier), config, checkpoint=lambda done: checkpoint(0.45 * done / max(n_earlier, 1))
    )
    held_out = list(
        interactions.filter(
            occurred_at__gte=split_at, kind__in=[Interaction.Kind.CLICK, Interaction.Kind.VIEW]
        ).values_list("content_id", flat=True)
    )
    if not n_earlier:
        held_out = []  # nothing before the split to learn from: no evaluation rather than a meaningless one
    catalog_size = max(Content.objects.published().count(), len(set(eval_model.scores) | set(held_out)))
    metrics = popularity.hit_rate(eval_model, held_out, k=config.top_k, catalog_size=catalog_size)
    metrics.update(train_rows=n_earlier, rows=total)
    k = config.top_k
    checkpoint(
        0.5,
        f"evaluation on {metrics['eval_events']} held-out clicks and views: hit rate@{k} "
        f"{metrics[f'hit_rate_at_{k}']}, random {metrics[f'random_hit_rate_at_{k}']}",
    )

    model = popularity.fit(rows(interactions), config, checkpoint=lambda done: checkpoint(0.5 + 0.45 * done / total))
    metrics["items"] = len(model.scores)
    payload = model.to_artifact(
        config,
        run_id=run.id,
        git_revision=git_revision(),
        trained_at=timezone.now().isoformat(),
        split_at=split_at.isoformat(),
        last_interaction_id=last_id,
        metrics=metrics,
    )
    checkpoint(0.95, f"trained on {total} interactions over {len(model.scores)} items; writing the artifact")
    path = artifact_write(kind=ModelKind.RECOMMENDER, run_id=run.id, payload=payload)
    return PipelineResult(
        name=f"popularity-run-{run.id}",
        artifact_path=path,
        config={
            **payload["config"],
            "format": payload["format"],
            "data": payload["data"],
            "git_revision": payload["git_revision"],
        },
        metrics=metrics,
    )


def _chat_lm_check(parameters: dict) -> object:
    # Imported here: torch and transformers load only in processes that train a chat model.
    from .chat_model import ChatLMParameters

    return ChatLMParameters.from_parameters(parameters)


def _chat_lm_train(run: TrainingRun, checkpoint: Checkpoint) -> PipelineResult:
    from .chat_model import chat_lm_train

    return chat_lm_train(run, checkpoint)


def _intent_check(parameters: dict) -> object:
    from .intent_model import intent_check

    return intent_check(parameters)


def _intent_train(run: TrainingRun, checkpoint: Checkpoint) -> PipelineResult:
    from .intent_model import intent_train

    return intent_train(run, checkpoint)


PIPELINES: dict[str, Pipeline] = {
    ModelKind.RECOMMENDER: Pipeline(check=popularity.PopularityConfig.from_parameters, train=recommender_train),
    ModelKind.INTENT: Pipeline(check=_intent_check, train=_intent_train),
    ModelKind.CHAT_LM: Pipeline(check=_chat_lm_check, train=_chat_lm_train),
}


def _check(kind: str, parameters: dict) -> None:
    pipeline = PIPELINES.get(kind) if isinstance(kind, str) else None
    if pipeline is None:
        known = ", ".join(sorted(PIPELINES))
        raise TrainingRunError(f"No training pipeline for kind {str(kind)!r} yet; available: {known}.")
    try:
        pipeline.check(parameters)
    except ValueError as exc:
        raise TrainingRunError(f"Invalid parameters for a {kind} run: {exc}") from None


def training_run_launch(*, kind: str, parameters: dict, user_id: int | None) -> TrainingRun:
    """Create a queued run and enqueue its Celery job once the row is committed.

    Raises TrainingRunError for a kind without a pipeline or parameters its pipeline refuses.
    """
    from training.tasks import training_run_execute as task  # the tasks module imports this one

    _check(kind, parameters)
    task_id = uuid()  # known before the commit, so the row names the task it will run as
    with transaction.atomic():
        run = TrainingRun.objects.create(
            kind=kind, parameters=parameters, created_by_id=user_id, celery_task_id=task_id
        )
        transaction.on_commit(lambda: task.apply_async(args=[run.id], task_id=task_id))
    return run


def training_run_cancel(*, run_id: int, user_id: int | None) -> TrainingRun:
    """Cancel a queued run at once, or a running one at its next progress checkpoint.

    Raises TrainingRunError for an unknown or already finished run.
    """
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise TrainingRunError(f"No training run {run_id}.")
        if run.is_finished:
            raise TrainingRunError(
                f"Training run {run_id} is already {run.status}; only queued or running runs can be cancelled."
            )
        by = f"user {user_id}" if user_id is not None else "the system"
        update_fields = ["status", "log"]
        if run.status == TrainingRun.Status.QUEUED:
            run.finished_at = timezone.now()
            update_fields.append("finished_at")
            note = f"cancelled by {by} before it started"
        else:
            note = f"cancelled by {by}; the job stops at its next checkpoint"
        run.status = TrainingRun.Status.CANCELLED
        run.log += f"{timezone.now():%Y-%m-%d %H:%M:%S} {note}\n"
        run.save(update_fields=update_fields)
        if run.celery_task_id:
            task_id = run.celery_task_id
            transaction.on_commit(lambda: _revoke(task_id))
    return run


def _revoke(task_id: str) -> None:
    # Best effort: the row's status is what stops the job; a revoke only spares a worker the message.
    from mediachat.celery import app

    try:
        app.control.revoke(task_id)
    except Exception:
        logger.warning("could not broadcast the revocation of task %s", task_id, exc_info=True)


def training_run_here(
    *, kind: str, parameters: dict, user_id: int | None, observer: Observer | None = None
) -> TrainingRun:
    """Create a run and execute it in this process, with no Celery job (management commands, `make demo`).

    The run is recorded exactly as a launched one; `observer` sees its progress. Returns the finished
    run (succeeded, failed or cancelled). Raises TrainingRunError as `training_run_launch` does.
    """
    _check(kind, parameters)
    run = TrainingRun.objects.create(kind=kind, parameters=parameters, created_by_id=user_id)
    training_run_execute(run_id=run.id, observer=observer)
    run.refresh_from_db()
    return run


def training_run_execute(*, run_id: int, observer: Observer | None = None) -> None:
    """Run a queued run's pipeline in this process; a no-op unless this call wins the run's lease.

    Success stores a ModelVersion candidate; an exception marks the run failed with the traceback's tail
    in its log; a transient database error puts the run back in the queue and is raised for a retry.
    `observer(fraction, line, phase)` sees every progress report of the pipeline.
    """
    now = timezone.now()
    claimable = Q(status=TrainingRun.Status.QUEUED) | Q(
        status=TrainingRun.Status.RUNNING, started_at__lt=now - timedelta(seconds=TIME_LIMIT_S)
    )
    claimed = TrainingRun.objects.filter(claimable, pk=run_id).update(
        status=TrainingRun.Status.RUNNING, started_at=now, finished_at=None, progress=0.0, log=_log_append("started")
    )
    if not claimed:
        logger.info("training run %s is not queued (or is leased to another execution); nothing to do", run_id)
        return
    run = TrainingRun.objects.get(pk=run_id)
    result: PipelineResult | None = None
    try:
        pipeline = PIPELINES.get(run.kind)
        if pipeline is None:
            raise TrainingRunError(f"No training pipeline for kind {str(run.kind)!r}.")
        result = pipeline.train(run, Checkpoint(run_id, observer))
        _succeed(run, result)
    except RunCancelled:
        _discard(result)
        TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.CANCELLED).update(
            finished_at=timezone.now(), log=_log_append("stopped: the run was cancelled")
        )
    except (OperationalError, InterfaceError):
        _discard(result)
        _release(run_id)
        raise
    except TrainingRunError as exc:  # a refusal for people (too little data...): the message, no traceback
        _discard(result)
        TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.FAILED, finished_at=timezone.now(), log=_log_append(f"failed: {exc}")
        )
    except Exception:
        logger.exception("training run %s failed", run_id)
        _discard(result)
        tail = traceback.format_exc()[-LOG_TAIL_CHARS:]
        TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.FAILED, finished_at=timezone.now(), log=_log_append(f"failed:\n{tail}")
        )


def _succeed(run: TrainingRun, result: PipelineResult) -> None:
    with transaction.atomic():
        version = ModelVersion.objects.create(
            kind=run.kind,
            name=result.name,
            artifact_path=str(result.artifact_path),
            config=result.config,
            metrics=result.metrics,
            training_run=run,
            created_by_id=run.created_by_id,
        )
        finished = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.SUCCEEDED,
            progress=1.0,
            metrics=result.metrics,
            finished_at=timezone.now(),
            log=_log_append(
                f"succeeded: model version {version.pk} ({version.name}) is a candidate; {version.artifact_path}"
            ),
        )
        if not finished:  # cancelled after the last checkpoint: roll the version back
            raise RunCancelled


def _discard(result: PipelineResult | None) -> None:
    if result is not None:
        path = result.artifact_path
        shutil.rmtree(path if path.is_dir() else path.parent, ignore_errors=True)


def _release(run_id: int) -> None:
    try:
        TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.QUEUED,
            started_at=None,
            log=_log_append("interrupted by a database error; queued again for a retry"),
        )
    except DatabaseError:
        logger.warning("could not requeue training run %s; it stays running until its lease expires", run_id)


def training_runs_fail_lost() -> int:
    """Mark failed the runs whose worker was lost (running past the time limit) or that no worker took."""
    now = timezone.now()
    lost = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING, started_at__lt=now - timedelta(seconds=TIME_LIMIT_S)
    ).update(
        status=TrainingRun.Status.FAILED,
        finished_at=now,
        log=_log_append("failed: its worker was lost (running past the task's time limit)"),
    )
    never = TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, created_at__lt=now - QUEUED_EXPIRY).update(
        status=TrainingRun.Status.FAILED,
        finished_at=now,
        log=_log_append("failed: no worker picked it up within a day; is a worker serving the training queue?"),
    )
    return lost + never


def recommender_refresh() -> TrainingRun | None:
    """Launch a recommender run if interactions arrived since the last succeeded one and none is under way."""
    runs = TrainingRun.objects.filter(kind=ModelKind.RECOMMENDER)
    if runs.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]).exists():
        return None
    last = runs.filter(status=TrainingRun.Status.SUCCEEDED).order_by("-started_at").first()
    new = Interaction.objects.all() if last is None else Interaction.objects.filter(created_at__gte=last.started_at)
    if not new.exists():
        return None
    return training_run_launch(kind=ModelKind.RECOMMENDER, parameters={}, user_id=None)


def default_models_train(
    *, parameters: dict[str, dict] | None = None, observer: Observer | None = None
) -> list[tuple[str, ModelVersion | None]]:
    """Train and activate a model of every kind that has a pipeline and no active version.

    Runs here, synchronously (`make demo` calls it before the worker starts). `parameters` maps a kind to
    its run's parameters (the pipeline's defaults otherwise: the chat model trains with preset small).
    Returns (kind, the version activated, or None where one was active already). Raises TrainingRunError
    when a run fails.
    """
    parameters = parameters or {}
    trained: list[tuple[str, ModelVersion | None]] = []
    for kind in PIPELINES:
        if ModelVersion.objects.active().filter(kind=kind).exists():
            trained.append((kind, None))
            continue
        if kind == ModelKind.INTENT:  # a fresh platform trains on the default intent set
            from personalization.understanding.defaults import intents_load_defaults

            if not Intent.objects.exists():
                intents_load_defaults()
        run = training_run_here(kind=kind, parameters=parameters.get(kind, {}), user_id=None, observer=observer)
        version = run.model_versions.order_by("-id").first()
        if run.status != TrainingRun.Status.SUCCEEDED or version is None:
            raise TrainingRunError(f"The default {kind} run {run.id} ended {run.status}:\n{run.log[-2000:]}")
        trained.append((kind, model_version_activate(version_id=version.id, user_id=None)))
    return trained
