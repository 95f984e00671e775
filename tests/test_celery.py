"""Training runs through a real Celery worker process: on this run's broker, and on the embedded SQLite one."""

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from personalization.models import Content, Interaction
from tests.conftest import embedded_env, launch_recommender_run, manage, sqlite_row, start_celery_worker, stop
from training.models import ModelKind, ModelVersion, TrainingRun
from training.services.runs import training_run_cancel, training_run_launch
from training.tasks import training_run_execute

pytestmark = pytest.mark.django_db(transaction=True)


def seed_interactions(n: int = 60, items: int = 12) -> None:
    now = timezone.now()
    contents = [
        Content.objects.create(title=f"Item {i}", slug=f"item-{i}", status="published", published_at=now)
        for i in range(items)
    ]
    Interaction.objects.bulk_create(
        Interaction(
            content=contents[(i * i) % items], kind="click", session_key="r", occurred_at=now - timedelta(hours=i)
        )
        for i in range(n)
    )


def wait_finished(run_id: int, timeout: float = 60) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run_id)
        if run.finished_at is not None:
            return run
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} still {run.status} after {timeout} s:\n{run.log}")


def test_worker_runs_a_training_run_end_to_end(celery_worker):
    seed_interactions()
    run = training_run_launch(kind=ModelKind.RECOMMENDER, parameters={"half_life_days": 3}, user_id=None)

    run = wait_finished(run.pk)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.log
    assert run.progress == 1.0 and run.started_at <= run.finished_at
    version = ModelVersion.objects.get(training_run=run)
    assert version.status == ModelVersion.Status.CANDIDATE and version.kind == ModelKind.RECOMMENDER
    assert version.metrics["eval_events"] > 0 and 0 <= version.metrics["hit_rate_at_10"] <= 1
    artifact = json.loads(Path(version.artifact_path).read_text())
    assert artifact["config"]["half_life_days"] == 3 and artifact["data"]["rows"] == 60
    # The worker ran it under the task id the row recorded at launch.
    assert TaskResult.objects.get(task_id=run.celery_task_id).status == "SUCCESS"


def test_a_task_delivered_twice_runs_once(celery_worker):
    seed_interactions()
    run = training_run_launch(kind=ModelKind.RECOMMENDER, parameters={}, user_id=None)
    again = training_run_execute.delay(run.pk)  # as a broker redelivering the message would

    run = wait_finished(run.pk)
    deadline = time.monotonic() + 30
    while not TaskResult.objects.filter(task_id=again.id, status="SUCCESS").exists():
        assert time.monotonic() < deadline, "the second delivery was not consumed"
        time.sleep(0.2)

    assert run.status == TrainingRun.Status.SUCCEEDED
    assert ModelVersion.objects.filter(training_run=run).count() == 1
    assert run.log.count(" started\n") == 1


def test_cancelling_a_running_job_stops_it(celery_worker):
    seed_interactions(n=80)
    # step_delay_s exists for this: 80 rows in chunks of 2, two passes, 0.2 s a chunk, about 14 s in all.
    run = training_run_launch(
        kind=ModelKind.RECOMMENDER, parameters={"step_delay_s": 0.2, "chunk_size": 2}, user_id=None
    )
    deadline = time.monotonic() + 30
    while not TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING, progress__gt=0).exists():
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)

    training_run_cancel(run_id=run.pk, user_id=None)
    cancelled_at = time.monotonic()
    run = wait_finished(run.pk, timeout=10)

    assert time.monotonic() - cancelled_at < 5
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.progress < 0.9
    assert "stopped: the run was cancelled" in run.log
    assert not ModelVersion.objects.filter(training_run=run).exists()


def test_a_failing_pipeline_marks_the_run_failed(celery_worker):
    run = training_run_launch(kind=ModelKind.RECOMMENDER, parameters={}, user_id=None)  # nothing to learn from

    run = wait_finished(run.pk)

    assert run.status == TrainingRun.Status.FAILED
    assert "Traceback" in run.log and "No interactions to train on" in run.log
    assert not ModelVersion.objects.filter(training_run=run).exists()


def test_worker_on_the_embedded_broker(tmp_path):
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput", "-v", "0")
    worker = start_celery_worker(env, tmp_path / "worker.log")
    try:
        run_id = launch_recommender_run(env)
        db = tmp_path / "mediachat.sqlite3"
        deadline = time.monotonic() + 60
        while (row := sqlite_row(db, "SELECT status, log FROM training_trainingrun WHERE id = ?", run_id))[0] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, f"run {run_id} still {row[0]}"
            time.sleep(0.3)
        assert row[0] == "succeeded", row[1]
        path, metrics = sqlite_row(
            db, "SELECT artifact_path, metrics FROM training_modelversion WHERE training_run_id = ?", run_id
        )
        assert Path(path).is_relative_to(tmp_path / "models" / "recommender") and Path(path).is_file()
        assert json.loads(metrics)["eval_events"] > 0
        assert "sqla+sqlite" in (tmp_path / "worker.log").read_text()
    finally:
        stop(worker)
