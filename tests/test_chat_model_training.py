"""The chat model's training run on the test database: consent, the command, the Celery-path service with cancel,
and the admin pages of what it registers. Preset tiny, on a small seeded catalog."""

import json
import random
from io import StringIO
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from transformers import AutoModelForCausalLM, AutoTokenizer

from mediachat.models import Conversation, Message, MessageFeedback
from personalization.models import Author, Content, CustomerMessage, ReaderProfile, Section, Tag
from training.models import ModelKind, ModelVersion, TrainingRun
from training.services.chat_model import ChatLMParameters, training_data_collect
from training.services.runs import TrainingRunError, training_run_cancel, training_run_execute, training_run_launch

pytestmark = pytest.mark.django_db

EVALUATION_KEYS = [
    "val_loss", "val_perplexity", "coherence", "groundedness", "citing_share", "ungrounded_citation_share",
    "heldout_questions", "mean_reply_words", "empty_reply_share",
]  # fmt: skip
TOPICS = {
    "Science": ["comet", "telescope", "orbit", "genome", "fossil", "glacier", "volcano", "neutrino"],
    "Culture": ["opera", "novel", "museum", "festival", "painting", "cinema", "poetry", "sculpture"],
    "Sport": ["marathon", "football", "tennis", "cycling", "rowing", "boxing", "sailing", "climbing"],
}
FILLER = "city region team report week study plan data season people market school river road park".split()


@pytest.fixture(autouse=True)
def _one_thread(settings, tmp_path):
    torch.set_num_threads(1)
    settings.MODEL_DIR = tmp_path / "models"


def catalog(n_per_section: int = 8) -> list[Content]:
    """Distinct published items (no near-duplicates) in three sections, with tags and authors."""
    rng = random.Random(7)
    items = []
    now = timezone.now()
    for s, (section_name, words) in enumerate(TOPICS.items()):
        section = Section.objects.create(name=section_name, slug=section_name.lower(), position=s)
        author = Author.objects.create(name=f"{section_name} Writer", slug=f"{section_name.lower()}-writer")
        for i, word in enumerate(words[:n_per_section]):
            tag, _ = Tag.objects.get_or_create(name=word.title(), slug=word)
            body = " ".join(rng.choice([word, *FILLER, *rng.sample(words, 3)]) for _ in range(90))
            content = Content.objects.create(
                title=f"The {word} story of the week",
                slug=f"{word}-{i}",
                summary=f"What the {word} means for the {rng.choice(FILLER)}.",
                body=f"<p>{body}.</p>",
                section=section,
                status=Content.Status.PUBLISHED,
                published_at=now - timezone.timedelta(days=3 * i + s),
            )
            content.tags.add(tag)
            content.authors.add(author)
            items.append(content)
    Content.objects.create(title="A draft", slug="draft", body="UNPUBLISHEDMARKER " * 20)
    return items


def conversation(user, texts: list[tuple[str, str, int | None]], *, session_key: str = "") -> Conversation:
    """A conversation of (role, text, rating of that reply or None) turns; replies answer the turn before."""
    convo = Conversation.objects.create(user=user, session_key=session_key)
    previous = None
    for role, text, rating in texts:
        message = Message.objects.create(
            conversation=convo, role=role, text=text, reply_to=previous if role == "assistant" else None
        )
        if rating is not None:
            MessageFeedback.objects.create(message=message, rating=rating)
        previous = message
    return convo


@pytest.fixture
def items(db) -> list[Content]:
    return catalog()


@pytest.fixture
def readers(django_user_model, items):
    """A consenting reader, one who did not consent, an anonymous one, and customer messages of both kinds."""
    yes = django_user_model.objects.create_user("yes")
    ReaderProfile.objects.create(user=yes, training_consent=True)
    no = django_user_model.objects.create_user("no")
    ReaderProfile.objects.create(user=no, training_consent=False)
    up, down = MessageFeedback.Rating.UP, MessageFeedback.Rating.DOWN
    comet = items[0]
    consented = conversation(
        yes,
        [
            ("user", "Anything about CONSENTEDQUESTION comets and telescopes this week?", None),
            ("assistant", f"Yes: read CONSENTEDANSWER about the comet story [#{comet.pk}] and [#999999].", up),
            ("user", "And the DOWNRATEDQUESTION about opera festivals in the region?", None),
            ("assistant", "DOWNRATEDANSWER opera opera opera festival festival nonsense.", down),
        ],
    )
    consented.messages.get(text__contains="CONSENTEDANSWER").cited.add(comet)
    conversation(
        no,
        [
            ("user", "Tell me about NOCONSENTMARKER marathons and cycling in the city.", None),
            ("assistant", "Here is NOCONSENTREPLY the marathon story and a cycling report.", up),
        ],
    )
    conversation(
        None,
        [
            ("user", "ANONYMOUSMARKER what is new in football and tennis?", None),
            ("assistant", "ANONYMOUSREPLY the football story and the tennis report.", up),
        ],
        session_key="anon",
    )
    now = timezone.now()
    CustomerMessage.objects.create(
        channel="ticket",
        source="helpdesk",
        content_hash="a",
        text="CUSTOMERCONSENTED my newsletter about the museum stopped arriving last week, please help",
        training_consent=True,
        received_at=now,
    )
    CustomerMessage.objects.create(
        channel="ticket",
        source="helpdesk",
        content_hash="b",
        text="CUSTOMERREFUSED the cinema page shows the wrong times for the festival screenings",
        training_consent=False,
        received_at=now,
    )


def test_only_consented_text_reaches_the_training_data(readers, items):
    data = training_data_collect(ChatLMParameters(preset="tiny", dialogues=20, heldout=4))

    corpus_text = "\n".join(data.corpus.train + data.corpus.validation)
    sft_text = json.dumps(data.dialogues_train + data.dialogues_validation)
    everything = corpus_text + sft_text + json.dumps(data.heldout)
    for marker in ("CONSENTEDQUESTION", "CONSENTEDANSWER", "CUSTOMERCONSENTED"):
        assert marker in corpus_text, marker
    for marker in (
        "NOCONSENTMARKER", "NOCONSENTREPLY", "ANONYMOUSMARKER", "ANONYMOUSREPLY", "CUSTOMERREFUSED",
        "DOWNRATEDQUESTION", "DOWNRATEDANSWER", "UNPUBLISHEDMARKER",
    ):  # fmt: skip
        assert marker not in everything, marker
    # The rated-up conversation joins SFT, with the item it cited as its context: that citation stays.
    real = next(d for d in data.dialogues_train + data.dialogues_validation if "CONSENTEDANSWER" in json.dumps(d))
    assert [m["role"] for m in real] == ["system", "context", "user", "assistant"]
    assert real[1]["content"].startswith(f"[#{items[0].pk}] The comet story")
    assert f"[#{items[0].pk}]" in real[-1]["content"] and "[#999999]" not in real[-1]["content"]
    assert data.counts["conversations"] == 1 and data.counts["synthetic"] == 20
    assert data.corpus.stats["documents_out"] == 24 and len(data.heldout) == 4
    assert len(data.corpus.dataset_hash) == 64


def test_train_chat_model_registers_a_loadable_evaluated_model(readers, items, settings, client, django_user_model):
    out = StringIO()

    call_command(
        "train_chat_model", "--preset", "tiny", "--activate", "--dialogues", "40", "--heldout", "6", "--no-progress",
        stdout=out, stderr=StringIO(),
    )  # fmt: skip

    version = ModelVersion.objects.get(kind=ModelKind.CHAT_LM)
    run = version.training_run
    assert version.status == ModelVersion.Status.ACTIVE and run.status == TrainingRun.Status.SUCCEEDED, run.log
    assert run.progress == 1.0 and run.metrics == version.metrics
    path = Path(version.artifact_path)
    assert path == settings.MODEL_DIR / "chat-lm" / f"chat-lm-tiny-run-{run.pk}" == path
    assert not (settings.MODEL_DIR / "chat-lm" / ".work" / f"run-{run.pk}").exists()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "comets?"}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    generated = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    metrics = version.metrics
    for key in EVALUATION_KEYS:
        assert isinstance(metrics[key], int | float), key
    # A model this small may say too little for word pairs: then the fluency figures are None, not made up.
    for key in ("distinct_1", "distinct_2", "repetition_rate"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0, key
    assert (metrics["distinct_1"] is None) == (metrics["mean_reply_words"] == 0)
    assert metrics["heldout_questions"] == 6 and 1 < metrics["val_perplexity"] < len(tokenizer) * 2
    assert metrics["preset"] == "tiny" and metrics["sft_dialogues"]["conversations"] == 1
    assert (
        version.config["dataset_hash"]
        == metrics["dataset_hash"]
        == json.loads((path / "mediachat.json").read_text())["meta"]["dataset_hash"]
    )
    assert version.config["train"]["pretrain"]["steps"] == 60 and version.config["git_revision"]
    history = metrics["loss_history"]
    assert history["pretrain"]["train"] and history["sft"]["validation"]
    assert json.loads((path / "evaluation.json").read_text())["groundedness"] == metrics["groundedness"]
    text = out.getvalue()
    assert f"Model: {path}" in text and "groundedness" in text and "(active)" in text
    assert "pretrain step 60/60" in run.log and "evaluation:" in run.log

    # The admin shows the evaluation and the loss curve on both pages.
    staff = django_user_model.objects.create_superuser("boss", "b@example.com", "x")
    client.force_login(staff)
    page = client.get(reverse("admin:training_modelversion_change", args=[version.pk])).content.decode()
    for label in ("Validation perplexity", "Distinct-2", "Repetition rate", "Coherence", "Groundedness", "Preset"):
        assert label in page
    assert metrics["dataset_hash"] in page and "<svg" in page and page.count('class="loss-line"') == 2
    page = client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert "<svg" in page and 'id="run-live"' in page and "Succeeded" in page
    assert len(items) == 24


def test_a_cancelled_run_stops_in_training_and_leaves_nothing(readers, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():  # the Celery job is not sent; the worker's service runs here
        run = training_run_launch(
            kind=ModelKind.CHAT_LM, parameters={"preset": "tiny", "dialogues": 20, "heldout": 2}, user_id=None
        )
    phases: list[str] = []

    def cancel_in_pretraining(fraction: float, line: str, phase: str) -> None:
        phases.append(phase)
        if phase == "pretrain" and "step 20/" in line:
            training_run_cancel(run_id=run.pk, user_id=None)

    training_run_execute(run_id=run.pk, observer=cancel_in_pretraining)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.finished_at, run.log
    assert "stopped: the run was cancelled" in run.log and "pretrain step 0/" in run.log
    assert "pretrain step 40/" not in run.log  # the observer sees step 20 before the run's row does
    assert "sft" not in phases and "evaluate" not in phases
    assert not ModelVersion.objects.exists()
    root = settings.MODEL_DIR / "chat-lm"
    assert not (root / f"chat-lm-tiny-run-{run.pk}").exists() and not list((root / ".work").iterdir())


def test_launch_checks_chat_parameters(db):
    with pytest.raises(TrainingRunError, match="preset must be one of tiny, small, base"):
        training_run_launch(kind=ModelKind.CHAT_LM, parameters={"preset": "huge"}, user_id=None)
    with pytest.raises(TrainingRunError, match="heldout must be an integer from 1 to 2,000"):
        training_run_launch(kind=ModelKind.CHAT_LM, parameters={"heldout": 0}, user_id=None)
    with pytest.raises(TrainingRunError, match=r"Unknown parameters \['epochs'\]"):
        training_run_launch(kind=ModelKind.CHAT_LM, parameters={"epochs": 3}, user_id=None)
    assert not TrainingRun.objects.exists()


def test_a_run_without_a_catalog_fails_with_a_reason(db):
    run = TrainingRun.objects.create(kind=ModelKind.CHAT_LM, parameters={"preset": "tiny"})
    training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "No published content to train on" in run.log


def test_admin_reads_a_chat_model_and_follows_a_run(client, django_user_model):
    run = TrainingRun.objects.create(
        kind=ModelKind.CHAT_LM,
        status=TrainingRun.Status.RUNNING,
        started_at=timezone.now(),
        progress=0.42,
        log="".join(f"line {i}\n" for i in range(20)),
    )
    metrics = {
        "val_perplexity": 31.4159,
        "distinct_1": 0.25,
        "distinct_2": 0.5,
        "repetition_rate": 0.125,
        "coherence": 0.61,
        "groundedness": 0.75,
        "heldout_questions": 8,
        "dataset_hash": "f" * 64,
        "training": {"parameters": 123456},
        "samples": [{"question": "Comets <b>now</b>?", "reply": "See [#3]."}],
        "loss_history": {"pretrain": {"train": [[10, 4.0], [20, 3.0]], "validation": [[0, 5.0]]}, "sft": {}},
    }
    version = ModelVersion.objects.create(
        kind=ModelKind.CHAT_LM, name="chat-x", metrics=metrics, config={"preset": "small"}, training_run=run
    )
    plain = ModelVersion.objects.create(kind=ModelKind.RECOMMENDER, name="pop-x", metrics={"hit_rate_at_10": 0.5})
    client.force_login(django_user_model.objects.create_superuser("boss", "b@example.com", "x"))

    page = client.get(reverse("admin:training_modelversion_change", args=[version.pk])).content.decode()
    for shown in ("31.42", "0.250", "0.500", "0.125", "0.610", "0.750", "123,456", "small", "f" * 64):
        assert f'<td class="chat-metric">{shown}</td>' in page, shown
    assert "Comets &lt;b&gt;now&lt;/b&gt;?" in page  # sample replies are escaped
    assert page.count('class="loss-line"') == 2 and "pretrain step 0: validation loss 5.000" in page
    page = client.get(reverse("admin:training_modelversion_change", args=[plain.pk])).content.decode()
    assert "chat-metric" not in page and "hit_rate_at_10" in page

    page = client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert 'id="run-live"' in page and 'value="42"' in page and "fetch(url" in page
    live = client.get(reverse("admin:training_trainingrun_progress", args=[run.pk])).json()
    assert live["percent"] == 42 and not live["finished"] and live["status"] == "running"
    assert live["log_tail"].split("\n") == [f"line {i}" for i in range(8, 20)]
    assert client.get(reverse("admin:training_trainingrun_progress", args=[999999])).status_code == 404
    client.force_login(django_user_model.objects.create_user("nobody", is_staff=True))
    assert client.get(reverse("admin:training_trainingrun_progress", args=[run.pk])).status_code == 403
