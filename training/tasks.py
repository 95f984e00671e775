"""Celery entry points for training: each loads nothing itself and calls one service with ids."""

from celery import shared_task

from mediachat.celery import retry_transient_db
from training.services import runs


@shared_task(
    name="training.tasks.training_run_execute",
    queue="training",
    soft_time_limit=runs.SOFT_TIME_LIMIT_S,
    time_limit=runs.TIME_LIMIT_S,
    **retry_transient_db(max_retries=5, backoff_max=300),
)
def training_run_execute(run_id: int) -> None:
    runs.training_run_execute(run_id=run_id)


@shared_task(
    name="training.tasks.recommender_refresh",
    queue="training",
    soft_time_limit=60,
    time_limit=90,
    **retry_transient_db(max_retries=3),
)
def recommender_refresh() -> int | None:
    """Daily: a new recommender run when readers left signals since the last one; returns its id."""
    run = runs.recommender_refresh()
    return run.pk if run is not None else None


@shared_task(
    name="training.tasks.training_runs_fail_lost",
    queue="training",
    soft_time_limit=60,
    time_limit=90,
    **retry_transient_db(max_retries=3),
)
def training_runs_fail_lost() -> int:
    """Hourly: runs whose worker died or that no worker took are marked failed instead of hanging."""
    return runs.training_runs_fail_lost()
