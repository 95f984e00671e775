"""`manage.py train_defaults` (run by `make demo`): a model of each trainable kind, trained once and activated."""

from io import StringIO
from pathlib import Path

import pytest
import torch
from django.core.management import call_command

from personalization.demo.seed import demo_seed
from training.models import ModelKind, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def test_trains_and_activates_each_kind_without_an_active_version_once(settings, tmp_path):
    torch.set_num_threads(1)
    settings.MODEL_DIR = tmp_path
    demo_seed()
    retired = ModelVersion.objects.create(kind=ModelKind.CHAT_LM, name="old", status=ModelVersion.Status.RETIRED)

    out = StringIO()
    call_command("train_defaults", "--chat-preset", "tiny", "--intent-pipelines", "tfidf", stdout=out)
    for kind in (ModelKind.RECOMMENDER, ModelKind.INTENT, ModelKind.CHAT_LM):
        active = ModelVersion.objects.active().get(kind=kind)
        assert active.training_run.status == TrainingRun.Status.SUCCEEDED
        assert (tmp_path / kind).is_dir() and active.artifact_path.startswith(str(tmp_path))
        assert f"{kind}: trained and activated {active.name}" in out.getvalue()
    chat = ModelVersion.objects.active().get(kind=ModelKind.CHAT_LM)
    assert chat != retired and chat.name.startswith("chat-lm-tiny-run-")  # a retired version is no active one
    assert chat.training_run.parameters == {"preset": "tiny"} and chat.metrics["preset"] == "tiny"
    assert Path(chat.artifact_path, "config.json").exists() and "groundedness=" in out.getvalue()

    intent = ModelVersion.objects.active().get(kind=ModelKind.INTENT)
    assert intent.metrics["pipeline"] == "tfidf" and "greeting" in intent.metrics["labels"]

    out = StringIO()
    call_command("train_defaults", "--chat-preset", "tiny", stdout=out)
    assert ModelVersion.objects.filter(kind=ModelKind.RECOMMENDER).count() == 1
    assert ModelVersion.objects.filter(kind=ModelKind.INTENT).count() == 1
    assert ModelVersion.objects.filter(kind=ModelKind.CHAT_LM).count() == 2
    assert out.getvalue().count("an active model exists already") == 3
