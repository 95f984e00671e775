"""The intents admin and the services behind it: pages for each role, keyword rules refused as form errors,
importing and exporting examples (CSV, CLINC150 JSON, Rasa YAML), the training set's too-little-data error
and the default intent set."""

import io
import json
from collections import Counter

import pytest
import yaml
from django.contrib.auth.models import Group, User
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from personalization.models import OUT_OF_SCOPE, Intent, IntentExample, KeywordRule
from personalization.roles import EDITORS, STAFF, roles_sync
from personalization.understanding.defaults import DEFAULT_INTENTS, default_intent_records, intents_load_defaults
from personalization.understanding.examples import (
    IntentImportError,
    TooLittleDataError,
    intent_examples_export,
    intent_examples_import,
    intent_training_set,
)
from training.pipelines.intent_data import read_any

ROLES = ["superuser", "staff", "editor"]
MODELS = ["intent", "intentexample", "keywordrule"]
CSV = "text,label\nhello there,greeting\nhi,greeting\nwhat's new today,latest_news\nhi,greeting\nbake bread?,oos\n"


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:personalization_{model}_{view}", args=args)


@pytest.fixture
def users(db) -> dict[str, User]:
    roles_sync()  # a flush by a transactional test elsewhere drops the groups the migration made
    staff = User.objects.create_user("stella", is_staff=True)
    staff.groups.add(Group.objects.get(name=STAFF))
    editor = User.objects.create_user("eddie", is_staff=True)
    editor.groups.add(Group.objects.get(name=EDITORS))
    return {
        "superuser": User.objects.create_superuser("root", "root@example.com", "x"),
        "staff": staff,
        "editor": editor,
        "reader": User.objects.create_user("rita"),
    }


@pytest.fixture
def objects(db) -> dict[str, object]:
    intent = Intent.objects.create(name="greeting", action=Intent.Action.SMALL_TALK)
    example = IntentExample.objects.create(intent=intent, text="hello there")
    rule = KeywordRule.objects.create(intent=intent, pattern="good morning")
    return {"intent": intent, "intentexample": example, "keywordrule": rule}


def pairs(records=None) -> Counter:
    if records is None:
        return Counter(IntentExample.objects.values_list("intent__name", "text"))
    return Counter((record.label, record.text) for record in records)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- Pages and roles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_page_renders_for_each_role(client, users, objects, role):
    client.force_login(users[role])
    for model in MODELS:
        assert client.get(url(model, "changelist")).status_code == 200, (role, model)
        assert client.get(url(model, "change", objects[model].pk)).status_code == 200, (role, model)
        assert client.get(url(model, "add")).status_code == 200, (role, model)
    changelist = client.get(url("intent", "changelist")).content.decode()
    assert url("intent", "import") in changelist and "Export examples as Rasa YAML" in changelist
    assert client.get(url("intent", "import")).status_code == 200
    change = client.get(url("intent", "change", objects["intent"].pk)).content.decode()
    assert "hello there" in change and "good morning" in change  # both inlines


def test_the_changelist_counts_examples_and_rules(client, users, objects):
    IntentExample.objects.create(intent=objects["intent"], text="hiya")
    Intent.objects.create(name="thanks")
    client.force_login(users["editor"])
    response = client.get(url("intent", "changelist"))
    rows = {intent.name: (intent.example_total, intent.rule_total) for intent in response.context["cl"].result_list}
    assert rows == {"greeting": (2, 1), "thanks": (0, 0)}


def test_an_intent_with_many_examples_links_to_them_instead_of_listing_them(client, users, objects):
    intent = objects["intent"]
    client.force_login(users["editor"])
    assert "examples-TOTAL_FORMS" in client.get(url("intent", "change", intent.pk)).content.decode()
    IntentExample.objects.bulk_create(IntentExample(intent=intent, text=f"hello {i}") for i in range(100))
    page = client.get(url("intent", "change", intent.pk)).content.decode()
    assert "examples-TOTAL_FORMS" not in page and "rules-TOTAL_FORMS" in page
    assert f"?intent__id__exact={intent.pk}" in page and "101 examples" in page


def test_a_reader_is_sent_to_the_login_page(client, users, objects):
    client.force_login(users["reader"])
    pages = [url("intent", "import")]
    for model in MODELS:
        pages += [url(model, "changelist"), url(model, "change", objects[model].pk), url(model, "add")]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), page
    upload = SimpleUploadedFile("examples.csv", CSV.encode())
    assert client.post(url("intent", "import"), {"file": upload, "create_intents": "on"}).status_code == 302
    data = {"action": "export_csv", "_selected_action": [objects["intent"].pk]}
    assert client.post(url("intent", "changelist"), data).status_code == 302
    assert pairs() == Counter({("greeting", "hello there"): 1})


# --- Keyword rules in the admin -----------------------------------------------------------------------------


def rule_form(intent: Intent, pattern: str, kind: str = "regex", sample: str = "") -> dict:
    return {"intent": intent.pk, "kind": kind, "pattern": pattern, "priority": 0, "enabled": "on", "sample": sample}


@pytest.mark.parametrize(
    "pattern, error",
    [
        ("(unclosed", "Not a valid regular expression: missing )"),
        ("(a+)+$", "exponential time"),
        ("(a|aa)*b", "exponential time"),
        ("x?", "match without any text"),
        ("   ", "This field is required."),
    ],
)
def test_an_unusable_regex_is_a_form_error_and_nothing_is_saved(client, users, objects, pattern, error):
    client.force_login(users["editor"])
    response = client.post(url("keywordrule", "add"), rule_form(objects["intent"], pattern))
    assert response.status_code == 200
    assert any(error in message for message in response.context["adminform"].form.errors["pattern"])
    assert KeywordRule.objects.count() == 1


def test_a_good_rule_is_saved_and_a_sample_it_misses_is_a_form_error(client, users, objects):
    client.force_login(users["editor"])
    response = client.post(url("keywordrule", "add"), rule_form(objects["intent"], r"\bhowdy\b", sample="well hi"))
    assert response.context["adminform"].form.errors["sample"] == ["The rule does not match this message."]
    response = client.post(url("keywordrule", "add"), rule_form(objects["intent"], r"\bhowdy\b", sample="Howdy!"))
    assert response.status_code == 302
    assert KeywordRule.objects.filter(kind="regex", pattern=r"\bhowdy\b").exists()


def test_an_unusable_regex_in_the_intent_page_inline_is_a_form_error(client, users, objects):
    intent, rule = objects["intent"], objects["keywordrule"]
    client.force_login(users["editor"])
    data = {
        "name": intent.name,
        "action": intent.action,
        "description": "",
        "is_active": "on",
        "rules-TOTAL_FORMS": 2,
        "rules-INITIAL_FORMS": 1,
        "rules-0-id": rule.pk,
        "rules-0-intent": intent.pk,
        "rules-0-kind": "keyword",
        "rules-0-pattern": "good morning",
        "rules-0-priority": 0,
        "rules-0-enabled": "on",
        "rules-1-intent": intent.pk,
        "rules-1-kind": "regex",
        "rules-1-pattern": "(.*)*",
        "rules-1-priority": 0,
        "examples-TOTAL_FORMS": 0,
        "examples-INITIAL_FORMS": 0,
    }
    response = client.post(url("intent", "change", intent.pk), data)
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.errors
    assert "exponential time" in errors[1]["pattern"][0]
    assert list(KeywordRule.objects.values_list("pattern", flat=True)) == ["good morning"]


# --- Import and export services -----------------------------------------------------------------------------


def test_import_creates_intents_skips_duplicates_and_counts(db):
    summary = intent_examples_import(text=CSV, fmt="csv")
    assert summary.created == {"greeting": 2, "latest_news": 1, OUT_OF_SCOPE: 1}
    assert summary.skipped == {"greeting": 1}  # "hi" twice in the file
    assert summary.intents_created == ["greeting", "latest_news", OUT_OF_SCOPE]
    assert str(summary) == "4 examples added, 1 already there, 3 new intents"
    assert Intent.objects.get(name=OUT_OF_SCOPE).action == Intent.Action.FALLBACK
    assert set(IntentExample.objects.values_list("source", flat=True)) == {IntentExample.Source.IMPORT}
    again = intent_examples_import(text=CSV, fmt="csv", source=IntentExample.Source.EDITOR)
    assert (again.created_total, again.skipped_total, again.intents_created) == (0, 5, [])


@pytest.mark.parametrize(
    "text, fmt, message",
    [
        ("text,label\nhello,greeting\n,greeting\n", "csv", "CSV line 3: the text is empty"),
        ('{"train": [["hi", "greeting"], ["x"]]}', "clinc", "train[1] (row 2)"),
        ("nlu:\n- intent: greeting\n  examples: |\n    - hi\n    oops\n", "rasa", "Rasa YAML line 5"),
        ("text,label\n", "csv", "The file holds no examples."),
        ("text,label\nhello,not a slug!\n", "csv", "'not a slug!' is not a usable intent name"),
        ("text,label\nhello,greeting\n" + "x" * 501 + ",greeting\n", "csv", "Example 2 (greeting) has 501 characters"),
        ("hello", "xml", "Unknown format 'xml'"),
    ],
)
def test_a_bad_file_imports_nothing(db, text, fmt, message):
    with pytest.raises(IntentImportError) as raised:
        intent_examples_import(text=text, fmt=fmt)
    assert message in str(raised.value)
    assert not Intent.objects.exists() and not IntentExample.objects.exists()


def test_import_without_creating_intents_names_the_missing_ones(db):
    Intent.objects.create(name="greeting")
    with pytest.raises(IntentImportError, match="No such intents: latest_news, out_of_scope"):
        intent_examples_import(text=CSV, fmt="csv", create_intents=False)
    assert not IntentExample.objects.exists()


@pytest.mark.parametrize("fmt", ["csv", "clinc", "rasa"])
def test_export_then_import_round_trips(db, fmt):
    intents_load_defaults()
    before = pairs()
    text = intent_examples_export(fmt=fmt)
    assert pairs(read_any(text, fmt)) == before
    Intent.objects.all().delete()
    summary = intent_examples_import(text=text, fmt=fmt, intent_specs=DEFAULT_INTENTS)
    assert summary.created_total == sum(before.values()) and pairs() == before
    assert Intent.objects.get(name="greeting").action == Intent.Action.SMALL_TALK


def test_export_of_some_intents(db):
    intent_examples_import(text=CSV, fmt="csv")
    ids = Intent.objects.filter(name__in=["latest_news", OUT_OF_SCOPE]).values_list("pk", flat=True)
    data = json.loads(intent_examples_export(fmt="clinc", intent_ids=ids))
    assert data["train"] == [["what's new today", "latest_news"]] and data["oos_train"] == [["bake bread?", "oos"]]


# --- Import and export in the admin -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, body, fmt, added, message",
    [
        (
            "examples.csv",
            "\ufefftext,label\r\nhello there,greeting\r\nwhat's new,latest_news\r\n",
            "",
            ("latest_news", "what's new"),
            "examples.csv: 1 examples added, 1 already there, 1 new intents (latest_news).",
        ),
        (
            "clinc.json",
            json.dumps({"train": [["hello there", "greeting"]], "oos_val": [["bake bread", "oos"]]}),
            "",
            (OUT_OF_SCOPE, "bake bread"),
            "clinc.json: 1 examples added, 1 already there, 1 new intents (out_of_scope).",
        ),
        (
            "nlu.yml",
            "nlu:\n- intent: greeting\n  examples: |\n    - hello there\n    - hey [Anna](name)\n",
            "",
            ("greeting", "hey Anna"),
            "nlu.yml: 1 examples added, 1 already there.",
        ),
        (
            "nlu.txt",
            "nlu:\n- intent: greeting\n  examples: |\n    - hello there\n",
            "rasa",
            None,
            "nlu.txt: 0 examples added, 1 already there.",
        ),
    ],
)
def test_the_import_page_imports_each_format(client, users, objects, name, body, fmt, added, message):
    client.force_login(users["editor"])
    upload = SimpleUploadedFile(name, body.encode())
    response = client.post(url("intent", "import"), {"file": upload, "format": fmt, "create_intents": "on"})
    assert response.status_code == 302 and response["Location"] == url("intent", "changelist")
    assert messages_of(response) == [message]
    expected = Counter({("greeting", "hello there"): 1})
    if added:
        expected[added] += 1
    assert pairs() == expected


@pytest.mark.parametrize(
    "name, body, fmt, field, error",
    [
        ("bad.csv", "text,label\nhello,\n", "", "file", "CSV line 2: the label is empty"),
        ("data.txt", "text,label\nhello,greeting\n", "", "format", "Cannot tell the format of 'data.txt'"),
        ("latin1.csv", "text,label\ncaf\xe9,greeting\n", "", "file", "not UTF-8"),
        ("wrong.json", "text,label\nhello,greeting\n", "", "file", "JSON line 1 column 1"),
    ],
)
def test_a_bad_upload_is_a_form_error_and_imports_nothing(client, users, objects, name, body, fmt, field, error):
    client.force_login(users["editor"])
    encoded = body.encode("latin-1" if "latin1" in name else "utf-8")
    response = client.post(url("intent", "import"), {"file": SimpleUploadedFile(name, encoded), "format": fmt})
    assert response.status_code == 200
    assert any(error in message for message in response.context["form"].errors[field])
    assert pairs() == Counter({("greeting", "hello there"): 1})


@pytest.mark.parametrize("fmt, extension", [("csv", "csv"), ("clinc", "json"), ("rasa", "yml")])
def test_export_actions_download_the_selected_intents(client, users, objects, fmt, extension):
    intent_examples_import(text=CSV, fmt="csv")
    client.force_login(users["editor"])
    selected = Intent.objects.filter(name__in=["greeting", "latest_news"]).values_list("pk", flat=True)
    response = client.post(url("intent", "changelist"), {"action": f"export_{fmt}", "_selected_action": list(selected)})
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="intent-examples.{extension}"'
    got = pairs(read_any(response.content.decode(), fmt))
    assert got == Counter(
        {("greeting", "hello there"): 1, ("greeting", "hi"): 1, ("latest_news", "what's new today"): 1}
    )
    if fmt == "rasa":
        assert yaml.safe_load(response.content)["version"] == "3.1"


# --- The training set ---------------------------------------------------------------------------------------


def add_examples(name: str, count: int, *, active: bool = True) -> Intent:
    intent = Intent.objects.create(name=name, is_active=active)
    IntentExample.objects.bulk_create(IntentExample(intent=intent, text=f"{name} {i}") for i in range(count))
    return intent


def test_too_little_data_names_every_intent_short_of_examples(db):
    add_examples("greeting", 3)
    add_examples("help", 12)
    add_examples("thanks", 2)
    add_examples(OUT_OF_SCOPE, 1)  # out of scope may be small
    add_examples("retired", 0, active=False)  # inactive intents are left out
    with pytest.raises(TooLittleDataError) as raised:
        intent_training_set(min_examples=10)
    assert str(raised.value) == "too little data: greeting (3), thanks (2) need at least 10 examples each"
    assert raised.value.counts == {"greeting": 3, "thanks": 2}
    records = intent_training_set(min_examples=2)
    assert Counter(record.label for record in records) == {"help": 12, "greeting": 3, "thanks": 2, OUT_OF_SCOPE: 1}


def test_too_little_data_with_fewer_than_two_intents(db):
    add_examples("help", 12)
    add_examples("thanks", 20, active=False)
    with pytest.raises(TooLittleDataError, match=r"at least two active intents are needed \(have: help\)"):
        intent_training_set(min_examples=10)


# --- The default intent set ---------------------------------------------------------------------------------


def test_the_default_set_has_varied_examples_for_every_intent():
    records = default_intent_records()
    counts = Counter(record.label for record in records)
    assert set(counts) == set(DEFAULT_INTENTS)
    assert all(n >= 40 for n in counts.values()) and counts[OUT_OF_SCOPE] >= 60
    assert len({record.text.lower() for record in records}) == len(records)  # no text twice, in or across intents


def test_default_intents_load_idempotently_and_keep_editors_data(db):
    added = intents_load_defaults()
    assert added == len(default_intent_records()) == IntentExample.objects.count()
    actions = dict(Intent.objects.values_list("name", "action"))
    assert actions == {name: spec.action for name, spec in DEFAULT_INTENTS.items()}
    assert actions["unfollow_topic"] == Intent.Action.FOLLOW and actions[OUT_OF_SCOPE] == Intent.Action.FALLBACK
    assert set(IntentExample.objects.values_list("source", flat=True)) == {IntentExample.Source.DEFAULT}
    # Editors change an intent, add an example and a rule; a reload keeps all of it.
    Intent.objects.filter(name="greeting").update(action=Intent.Action.HELP, description="Edited.", is_active=False)
    mine = IntentExample.objects.create(intent=Intent.objects.get(name="thanks"), text="cheers, legend")
    assert intents_load_defaults() == 0
    greeting = Intent.objects.get(name="greeting")
    assert (greeting.action, greeting.description, greeting.is_active) == (Intent.Action.HELP, "Edited.", False)
    assert IntentExample.objects.filter(pk=mine.pk).exists() and IntentExample.objects.count() == added + 1
    out = io.StringIO()
    call_command("load_default_intents", stdout=out)
    assert "0 examples added" in out.getvalue()
    assert intent_training_set(min_examples=40)  # enough data to train on


# --- Training from the admin ------------------------------------------------------------------------------


def test_staff_train_an_intent_model_from_the_changelist(client, users, django_capture_on_commit_callbacks):
    from training.models import ModelKind, TrainingRun

    intents_load_defaults()
    client.force_login(users["staff"])
    ids = list(Intent.objects.values_list("pk", flat=True)[:1])
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(url("intent", "changelist"), {"action": "train_intent_model", "_selected_action": ids})
    run = TrainingRun.objects.get()
    assert (run.kind, run.status, run.created_by) == (ModelKind.INTENT, TrainingRun.Status.QUEUED, users["staff"])
    assert response.status_code == 302 and response.url == reverse("admin:training_trainingrun_change", args=[run.pk])
    assert len(callbacks) == 1  # the Celery job is sent once the row is committed


def test_training_with_too_little_data_names_the_intents_and_launches_nothing(client, users, objects):
    from training.models import TrainingRun

    Intent.objects.create(name="thanks", action=Intent.Action.SMALL_TALK)
    client.force_login(users["staff"])
    response = client.post(
        url("intent", "changelist"), {"action": "train_intent_model", "_selected_action": [objects["intent"].pk]}
    )
    assert response.status_code == 302 and not TrainingRun.objects.exists()
    (message,) = messages_of(response)
    assert "greeting (1)" in message and "thanks (0)" in message


def test_editors_cannot_train(client, users, objects):
    client.force_login(users["editor"])
    page = client.get(url("intent", "changelist")).content.decode()
    assert "export_csv" in page and "train_intent_model" not in page
    response = client.post(
        url("intent", "changelist"), {"action": "train_intent_model", "_selected_action": [objects["intent"].pk]}
    )
    from training.models import TrainingRun

    assert not TrainingRun.objects.exists() and response.status_code in (200, 302)
