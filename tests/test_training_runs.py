"""Training run services in this process on the test database, and the popularity pipeline on its own."""

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from mediachat.models import Conversation, Message
from mediachat.tasks import conversations_close_stale
from personalization.models import Content, Interaction
from training.models import ModelKind, ModelVersion, TrainingRun
from training.pipelines.popularity import PopularityConfig, PopularityModel, fit, hit_rate, signal_weight
from training.services.runs import (
    TIME_LIMIT_S,
    TrainingRunError,
    recommender_refresh,
    training_run_cancel,
    training_run_execute,
    training_run_here,
    training_run_launch,
    training_runs_fail_lost,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- the pipeline, plain Python ------------------------------------------------------------------


def test_recent_signals_outweigh_old_ones():
    rows = [(1, "click", None, T0), (1, "click", None, T0), (2, "click", None, T0 + timedelta(days=30))]
    model = fit(rows, PopularityConfig(half_life_days=7))
    assert model.ranking() == [2, 1]
    assert model.scores[1] == pytest.approx(2 * 0.5 ** (30 / 7))
    assert fit(rows, PopularityConfig(half_life_days=1000)).ranking() == [1, 2]


def test_kind_weights_and_values():
    config = PopularityConfig()
    assert signal_weight("impression", None, config) == 0
    assert signal_weight("share", None, config) > signal_weight("click", None, config)
    assert signal_weight("dwell", 30, config) == pytest.approx(0.1)
    assert signal_weight("dwell", 10_000, config) == 1.0
    assert signal_weight("rate", 1, config) < 0 < signal_weight("rate", 5, config)
    model = fit([(1, "impression", None, T0), (2, "rate", 1, T0), (3, "click", None, T0)], config)
    assert model.ranking() == [3]  # impressions say nothing and a one-star rating is no recommendation


def test_fit_reports_checkpoints_and_hashes_its_data():
    rows = [(i % 3, "view", None, T0 + timedelta(hours=i)) for i in range(10)]
    seen: list[int] = []
    model = fit(rows, PopularityConfig(chunk_size=4), checkpoint=seen.append)
    assert seen == [4, 8, 10]
    assert model.rows == 10 and model.reference_time == rows[-1][3]
    assert model.data_sha256 == fit(list(rows), PopularityConfig()).data_sha256
    assert model.data_sha256 != fit(rows[:-1], PopularityConfig()).data_sha256


def test_hit_rate_against_the_random_baseline():
    model = PopularityModel(scores={1: 3.0, 2: 2.0, 3: 1.0}, rows=3, data_sha256="", reference_time=T0)
    metrics = hit_rate(model, [1, 2, 9, 9], k=2, catalog_size=10)
    assert metrics["hit_rate_at_2"] == 0.5 and metrics["random_hit_rate_at_2"] == 0.2
    assert metrics["lift"] == 2.5 and metrics["eval_events"] == 4
    assert hit_rate(model, [], k=2, catalog_size=10)["hit_rate_at_2"] is None


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"epochs": 3}, "Unknown parameters ['epochs']"),
        ({"top_k": "ten"}, "top_k must be an integer"),
        ({"half_life_days": 0}, "half_life_days must be positive"),
        ({"holdout_fraction": 1.5}, "holdout_fraction must be between 0 and 1"),
        ({"kind_weights": {"like": 1}}, "unknown kinds ['like']"),
        ({"step_delay_s": True}, "step_delay_s must be a number"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_parameters_are_refused_with_a_message(parameters, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PopularityConfig.from_parameters(parameters)


# --- the services --------------------------------------------------------------------------------


def seed(n_items: int = 20, days: int = 10) -> list[Content]:
    """Item 0 is read every day; the others now and then. Returns the catalog."""
    now = timezone.now()
    items = [
        Content.objects.create(title=f"Item {i}", slug=f"item-{i}", status="published", published_at=now)
        for i in range(n_items)
    ]
    rows = []
    for day in range(days):
        at = now - timedelta(days=days - day)
        rows += [Interaction(content=items[0], kind="click", session_key=f"r{k}", occurred_at=at) for k in range(3)]
        rows.append(Interaction(content=items[1 + day % (n_items - 1)], kind="view", session_key="x", occurred_at=at))
    Interaction.objects.bulk_create(rows)
    return items


@pytest.fixture
def model_dir(tmp_path, settings):
    settings.MODEL_DIR = tmp_path / "models"
    return settings.MODEL_DIR


def test_launch_queues_a_run_and_enqueues_it_on_commit(db, django_capture_on_commit_callbacks, django_user_model):
    user = django_user_model.objects.create_user("trainer")
    with django_capture_on_commit_callbacks() as callbacks:
        run = training_run_launch(kind=ModelKind.RECOMMENDER, parameters={"top_k": 5}, user_id=user.pk)
    assert len(callbacks) == 1  # the task is sent only once the row is committed
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED and run.created_by == user
    assert run.parameters == {"top_k": 5} and len(run.celery_task_id) == 36


def test_launch_refuses_kinds_without_a_pipeline_and_bad_parameters(db):
    with pytest.raises(
        TrainingRunError, match="No training pipeline for kind 'reward' yet; available: chat-lm, intent, recommender"
    ):
        training_run_launch(kind=ModelKind.REWARD, parameters={}, user_id=None)
    with pytest.raises(TrainingRunError, match="Invalid parameters for a recommender run: Unknown parameters"):
        training_run_launch(kind=ModelKind.RECOMMENDER, parameters={"lr": 0.1}, user_id=None)
    assert not TrainingRun.objects.exists()


def test_execute_trains_evaluates_and_registers_a_candidate(db, model_dir):
    items = seed()
    run = training_run_launch(kind=ModelKind.RECOMMENDER, parameters={"half_life_days": 5}, user_id=None)

    training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.log
    assert run.progress == 1.0 and run.started_at and run.finished_at
    version = ModelVersion.objects.get(training_run=run)
    assert version.status == ModelVersion.Status.CANDIDATE and version.name == f"popularity-run-{run.pk}"
    # The last two days are held out: their clicks are all on item 0, which leads the ranking.
    assert version.metrics["hit_rate_at_10"] > version.metrics["random_hit_rate_at_10"] == 10 / 20
    assert version.metrics == run.metrics and version.metrics["rows"] == 40
    path = Path(version.artifact_path)
    assert path == model_dir / "recommender" / str(run.pk) / "model.json"
    artifact = json.loads(path.read_text())
    assert artifact["format"] == "mediachat.popularity/1" and artifact["ranking"][0] == items[0].pk
    assert artifact["config"]["half_life_days"] == 5 and artifact["data"]["rows"] == 40
    assert len(artifact["data"]["sha256"]) == 64
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True)
    assert artifact["git_revision"] == head.stdout.strip()
    assert version.config["data"] == artifact["data"] and version.config["half_life_days"] == 5
    assert [p.name for p in path.parent.parent.iterdir()] == [str(run.pk)]  # no temporary folder left behind


def test_a_run_here_is_recorded_like_a_launched_one_and_observed(db, model_dir, django_capture_on_commit_callbacks):
    seed()
    seen: list[tuple[float, str]] = []
    with django_capture_on_commit_callbacks() as callbacks:
        run = training_run_here(
            kind=ModelKind.RECOMMENDER,
            parameters={"top_k": 5},
            user_id=None,
            observer=lambda fraction, line, phase: seen.append((fraction, line)),
        )
    assert not callbacks and not run.celery_task_id  # no Celery job: it ran here
    assert run.status == TrainingRun.Status.SUCCEEDED and run.model_versions.count() == 1
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0
    assert any("writing the artifact" in line for _, line in seen)
    with pytest.raises(TrainingRunError, match="Unknown parameters"):
        training_run_here(kind=ModelKind.RECOMMENDER, parameters={"lr": 1}, user_id=None)


def test_execute_is_a_no_op_for_a_run_it_does_not_hold(db, model_dir):
    seed()
    run = training_run_launch(kind=ModelKind.RECOMMENDER, parameters={}, user_id=None)
    training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    log = run.log

    training_run_execute(run_id=run.pk)  # a redelivered task

    run.refresh_from_db()
    assert run.log == log and ModelVersion.objects.filter(training_run=run).count() == 1
    # Running under a live lease (another worker has it): left alone.
    other = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER, status="running", started_at=timezone.now())
    training_run_execute(run_id=other.pk)
    other.refresh_from_db()
    assert other.status == TrainingRun.Status.RUNNING and not other.model_versions.exists()
    training_run_execute(run_id=999_999)  # unknown ids are no-ops too


def test_a_run_whose_worker_was_lost_can_be_taken_over(db, model_dir):
    seed()
    lost = TrainingRun.objects.create(
        kind=ModelKind.RECOMMENDER, status="running", started_at=timezone.now() - timedelta(seconds=TIME_LIMIT_S + 60)
    )
    training_run_execute(run_id=lost.pk)
    lost.refresh_from_db()
    assert lost.status == TrainingRun.Status.SUCCEEDED and lost.model_versions.count() == 1


def test_execute_marks_failures_with_the_traceback(db, model_dir):
    run = training_run_launch(kind=ModelKind.RECOMMENDER, parameters={}, user_id=None)
    training_run_execute(run_id=run.pk)  # no interactions yet
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.finished_at
    assert "Traceback" in run.log and "ValueError: No interactions to train on" in run.log
    # A row of a kind without a pipeline (made outside the launch service) fails the same way.
    odd = TrainingRun.objects.create(kind=ModelKind.REWARD)
    training_run_execute(run_id=odd.pk)
    odd.refresh_from_db()
    assert odd.status == TrainingRun.Status.FAILED and "No training pipeline for kind 'reward'" in odd.log
    assert not ModelVersion.objects.exists() and not (model_dir / "recommender").exists()


def test_cancel_a_queued_run_and_refuse_finished_ones(db, model_dir, django_user_model):
    seed()
    user = django_user_model.objects.create_user("editor")
    run = training_run_launch(kind=ModelKind.RECOMMENDER, parameters={}, user_id=None)

    cancelled = training_run_cancel(run_id=run.pk, user_id=user.pk)

    assert cancelled.status == TrainingRun.Status.CANCELLED and cancelled.finished_at
    assert f"cancelled by user {user.pk} before it started" in cancelled.log
    training_run_execute(run_id=run.pk)  # its task arrives anyway
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and not run.model_versions.exists()
    with pytest.raises(TrainingRunError, match=f"Training run {run.pk} is already cancelled"):
        training_run_cancel(run_id=run.pk, user_id=user.pk)
    with pytest.raises(TrainingRunError, match="No training run 424242"):
        training_run_cancel(run_id=424242, user_id=None)


def test_cancel_a_running_run_leaves_it_to_the_job(db):
    run = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER, status="running", started_at=timezone.now())
    cancelled = training_run_cancel(run_id=run.pk, user_id=None)
    assert cancelled.status == TrainingRun.Status.CANCELLED and cancelled.finished_at is None
    assert "the job stops at its next checkpoint" in cancelled.log


def test_recommender_refresh_launches_only_for_new_signals(db, model_dir):
    assert recommender_refresh() is None  # nothing to learn from
    seed()
    first = recommender_refresh()
    assert first is not None and first.kind == ModelKind.RECOMMENDER
    assert recommender_refresh() is None  # one is already queued
    training_run_execute(run_id=first.pk)
    assert recommender_refresh() is None  # nothing new since it started
    Interaction.objects.create(content=Content.objects.first(), kind="share", session_key="s")
    assert recommender_refresh() is not None


def test_lost_runs_are_marked_failed(db):
    long_ago = timezone.now() - timedelta(seconds=TIME_LIMIT_S + 60)
    lost = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER, status="running", started_at=long_ago)
    live = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER, status="running", started_at=timezone.now())
    stuck = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER)
    TrainingRun.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - timedelta(days=2))
    fresh = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER)

    assert training_runs_fail_lost() == 2

    statuses = dict(TrainingRun.objects.values_list("pk", "status"))
    assert statuses == {lost.pk: "failed", live.pk: "running", stuck.pk: "failed", fresh.pk: "queued"}
    assert "its worker was lost" in TrainingRun.objects.get(pk=lost.pk).log


def test_conversations_close_stale_interrupts_only_abandoned_replies(db):
    def reply(conversation: Conversation, minutes_ago: int) -> Message:
        message = Message.objects.create(
            conversation=conversation, role="assistant", status="streaming", text="partial"
        )
        Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
        return message

    crashed = Conversation.objects.create(session_key="a")
    live = Conversation.objects.create(session_key="b")
    both = Conversation.objects.create(session_key="c")
    old, current, old_beside_current, current_beside_old = (
        reply(crashed, 30),
        reply(live, 1),
        reply(both, 30),
        reply(both, 1),
    )

    assert conversations_close_stale() == 1

    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses[old.pk] == "interrupted"
    assert statuses[current.pk] == statuses[old_beside_current.pk] == statuses[current_beside_old.pk] == "streaming"
