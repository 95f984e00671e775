"""`manage.py train_defaults` (run by `make demo`): a model of each trainable kind, trained once and activated."""

from io import StringIO

import pytest
from django.core.management import call_command

from personalization.demo.seed import demo_seed
from training.models import ModelKind, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def test_trains_and_activates_a_recommender_once(settings, tmp_path):
    settings.MODEL_DIR = tmp_path
    demo_seed()

    out = StringIO()
    call_command("train_defaults", stdout=out)
    active = ModelVersion.objects.active().get(kind=ModelKind.RECOMMENDER)
    assert active.training_run.status == TrainingRun.Status.SUCCEEDED
    assert (tmp_path / "recommender").is_dir() and active.artifact_path.startswith(str(tmp_path))
    assert f"trained and activated {active.name}" in out.getvalue()

    out = StringIO()
    call_command("train_defaults", stdout=out)
    assert ModelVersion.objects.filter(kind=ModelKind.RECOMMENDER).count() == 1
    assert "a model exists already" in out.getvalue()
