"""The intent training run: editors' examples in the database → a compared, reported, loadable model version."""

import pytest
from django.contrib.auth.models import Group, User

from personalization.models import OUT_OF_SCOPE, Intent, IntentExample
from personalization.roles import STAFF, roles_sync
from tests.intent_samples import OUT, TEMPLATES, examples
from training.models import ModelKind, ModelVersion, TrainingRun
from training.pipelines.intents import IntentModel
from training.services.intent_model import IntentParameters, split_records
from training.services.runs import TrainingRunError, training_run_here


@pytest.fixture
def model_dir(tmp_path, settings):
    settings.MODEL_DIR = tmp_path / "models"
    return settings.MODEL_DIR


def _load_examples(extra_oos: list[str] = OUT) -> None:
    for record in examples():
        intent, _ = Intent.objects.get_or_create(name=record.label)
        IntentExample.objects.create(intent=intent, text=record.text)
    oos = Intent.objects.create(name=OUT_OF_SCOPE, action=Intent.Action.FALLBACK)
    IntentExample.objects.bulk_create([IntentExample(intent=oos, text=t) for t in extra_oos])


def test_a_run_compares_pipelines_and_registers_the_best(db, model_dir):
    _load_examples()
    seen = []
    run = training_run_here(
        kind=ModelKind.INTENT,
        parameters={"pipelines": ["tfidf", "embedding"], "seed": 3},
        user_id=None,
        observer=lambda fraction, line, phase: seen.append((fraction, phase)),
    )
    assert run.status == TrainingRun.Status.SUCCEEDED, run.log
    version = ModelVersion.objects.get(training_run=run)
    assert version.kind == ModelKind.INTENT
    metrics = version.metrics
    assert set(metrics["pipelines"]) == {"tfidf", "embedding"}
    assert metrics["pipeline"] == metrics["comparison"]["best"]
    report = metrics["report"]
    assert report["n_oos"] == len(OUT) // 2 and report["inscope_accuracy"] >= 0.8
    assert set(report["per_intent"]) >= {"greeting", "thanks", "latest_news", "search_topic"}
    assert report["confusion"]["labels"][-1] == OUT_OF_SCOPE and report["p95_ms"] > 0
    assert metrics["examples"]["total"] == len(examples()) + len(OUT)
    # Progress rose through the pipelines' phases to the end.
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and {"tfidf", "embedding", "evaluate"} <= {p for _, p in seen}

    model = IntentModel.load(version.artifact_path)
    assert model.meta["run_id"] == run.id and model.meta["pipeline"] == metrics["pipeline"]
    assert [p.label for p in model.predict(["thanks a lot!", "hello there"])] == ["thanks", "greeting"]


def test_too_little_data_fails_naming_the_intents(db, model_dir):
    _load_examples()
    few = Intent.objects.create(name="compare")
    IntentExample.objects.create(intent=few, text="compare these two")
    run = training_run_here(kind=ModelKind.INTENT, parameters={"pipelines": ["tfidf"]}, user_id=None)
    assert run.status == TrainingRun.Status.FAILED
    assert "compare (1)" in run.log and "Traceback" not in run.log
    assert not ModelVersion.objects.filter(kind=ModelKind.INTENT).exists()
    assert not any(model_dir.joinpath("intent").glob("intent-run-*"))


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"pipelines": ["bert"]}, "unknown pipelines"),
        ({"pipelines": []}, "non-empty list"),
        ({"epochs": -1}, "epochs"),
        ({"objective": "triplet"}, "objective must be 'classification' or 'contrastive'"),
        ({"kfold": 1}, "kfold"),
        ({"encoder": "/nowhere/at/all"}, r"neither a packaged encoder \(all-MiniLM-L6-v2, all-mpnet-base-v2\)"),
        ({"int8": "yes"}, "int8 must be true or false"),
        ({"length_grouped": 1}, "length_grouped must be true or false"),
        ({"oos_score": "energy"}, "oos_score must be 'auto' or 'confidence' or 'mahalanobis'"),
        ({"colour": "blue"}, "Unknown parameters"),
    ],
)
def test_bad_parameters_are_refused_at_launch(db, parameters, message):
    with pytest.raises(TrainingRunError, match=message):
        training_run_here(kind=ModelKind.INTENT, parameters=parameters, user_id=None)
    assert not TrainingRun.objects.exists()


def test_the_out_of_scope_score_is_a_parameter():
    assert IntentParameters().oos_score == "auto"
    assert IntentParameters.from_parameters({"oos_score": "mahalanobis"}).oos_score == "mahalanobis"


def test_a_packaged_encoder_is_chosen_by_name():
    params = IntentParameters.from_parameters({"encoder": "all-mpnet-base-v2", "int8": True, "epochs": 1})
    assert (params.encoder, params.int8, params.epochs) == ("all-mpnet-base-v2", True, 1)


def test_split_is_stratified_seeded_and_keeps_out_of_scope_out_of_training():
    from training.pipelines.intent_data import IntentRecord

    records = examples() + [IntentRecord(t, OUT_OF_SCOPE) for t in OUT]
    params = IntentParameters(seed=5)
    train, validation, test = split_records(records, params)
    assert split_records(records, params) == (train, validation, test)
    assert not any(r.label == OUT_OF_SCOPE for r in train)
    assert sum(r.label == OUT_OF_SCOPE for r in validation) == sum(r.label == OUT_OF_SCOPE for r in test) == 4
    counts = {label: [sum(r.label == label for r in part) for part in (train, validation, test)] for label in TEMPLATES}
    assert counts["latest_news"] == [28, 6, 6] and counts["greeting"] == [12, 3, 3]  # 40 and 18 examples
    assert len(set(train) | set(validation) | set(test)) == len(set(records))


def test_the_report_renders_in_the_admin_with_its_pictures(db, model_dir, client):
    _load_examples()
    run = training_run_here(kind=ModelKind.INTENT, parameters={"pipelines": ["tfidf"]}, user_id=None)
    version = ModelVersion.objects.get(training_run=run)
    roles_sync()
    staff = User.objects.create_user("stella", is_staff=True)
    staff.groups.add(Group.objects.get(name=STAFF))
    client.force_login(staff)
    for url in (f"/admin/training/modelversion/{version.pk}/change/", f"/admin/training/trainingrun/{run.pk}/change/"):
        page = client.get(url).content.decode()
        assert "Most confused pairs" in page or "Pipelines side by side" in page
        assert page.count("<svg") >= 2 and "In-scope accuracy" in page and "Out-of-scope recall" in page


def test_k_fold_cross_validation_is_reported(db, model_dir, client):
    _load_examples()
    run = training_run_here(kind=ModelKind.INTENT, parameters={"pipelines": ["tfidf"], "kfold": 3}, user_id=None)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.log
    kfold = run.metrics["kfold"]
    assert kfold["k"] == 3 and len(kfold["folds"]) == 3
    assert 0.8 <= kfold["accuracy"]["mean"] <= 1.0 and kfold["accuracy"]["std"] >= 0.0
    assert "k-fold: fold 3/3" in run.log
    roles_sync()
    staff = User.objects.create_user("stella", is_staff=True)
    staff.groups.add(Group.objects.get(name=STAFF))
    client.force_login(staff)
    page = client.get(f"/admin/training/trainingrun/{run.pk}/change/").content.decode()
    assert "Cross-validation (3 folds)" in page


def test_the_command_trains_activates_and_reports(db, model_dir):
    from io import StringIO

    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="too little data"):
        call_command("train_intent_model", "--pipelines", "tfidf", "--no-progress", stdout=StringIO())
    _load_examples()
    out = StringIO()
    call_command(
        "train_intent_model", "--pipelines", "tfidf", "--activate", "--no-progress", "--oos-score", "confidence",
        "--length-grouped", stdout=out,
    )  # fmt: skip
    version = ModelVersion.objects.active().get(kind=ModelKind.INTENT)
    run = TrainingRun.objects.get(pk=version.training_run_id)
    assert run.parameters["oos_score"] == "confidence" and run.parameters["length_grouped"] is True
    assert f"model version {version.pk}" in out.getvalue() and "tfidf (best): inscope_accuracy" in out.getvalue()
    with pytest.raises(CommandError, match="unknown pipelines"):
        call_command("train_intent_model", "--pipelines", "bert", stdout=StringIO())
