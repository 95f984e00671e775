"""The admin: roles, every page for each role, the Content preview and actions, Activate and Cancel, the dashboard."""

import datetime as dt
import io
import json
import subprocess
import sys

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection, models
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.state import ModelState
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mediachat.models import Conversation, Message, MessageFeedback
from personalization.models import Author, Content, Interaction, ReaderProfile, Section, Tag
from personalization.publishing import content_publish
from personalization.roles import EDITORS, STAFF, roles_sync
from training.models import ModelKind, ModelVersion, TrainingRun
from training.services.registry import model_version_activate

from .conftest import ROOT, child_env

CATALOG = ["content", "section", "tag", "author"]
READER_DATA = ["readerprofile", "interaction"]
CONVERSATIONS = ["conversation", "message", "messagefeedback"]
TRAINING = ["modelversion", "trainingrun"]
APP = {
    **dict.fromkeys(CATALOG + READER_DATA, "personalization"),
    **dict.fromkeys(CONVERSATIONS, "mediachat"),
    **dict.fromkeys(TRAINING, "training"),
}
# Pages a role can open; "add" lists the models whose add page it may open.
ALL_MODELS = CATALOG + READER_DATA + CONVERSATIONS + TRAINING
CAN_ADD = {
    "superuser": CATALOG + READER_DATA + TRAINING,
    "staff": CATALOG + TRAINING,
    "editor": CATALOG,
    "reader": [],
}
CAN_VIEW = {
    "superuser": ALL_MODELS,
    "staff": ALL_MODELS,
    "editor": CATALOG + READER_DATA + CONVERSATIONS,
    "reader": [],
}


@pytest.fixture
def users(db) -> dict[str, User]:
    # Idempotent; the migration made the groups, but a flush by a transactional test elsewhere drops them.
    roles_sync()
    superuser = User.objects.create_superuser("root", "root@example.com", "x")
    staff = User.objects.create_user("stella", is_staff=True)
    staff.groups.add(Group.objects.get(name=STAFF))
    editor = User.objects.create_user("eddie", is_staff=True)
    editor.groups.add(Group.objects.get(name=EDITORS))
    reader = User.objects.create_user("rita")
    return {"superuser": superuser, "staff": staff, "editor": editor, "reader": reader}


@pytest.fixture
def objects(users) -> dict[str, object]:
    """One row of every model, so every change page exists."""
    section = Section.objects.create(name="Science", slug="science")
    tag = Tag.objects.create(name="Space", slug="space")
    author = Author.objects.create(name="Ada Writer", slug="ada-writer")
    content = Content.objects.create(
        title="Draft about comets", slug="draft-comets", section=section, summary="Comets, up close.", body="Body."
    )
    content.tags.add(tag)
    content.authors.add(author)
    reader = users["reader"]
    profile = ReaderProfile.objects.create(user=reader)
    interaction = Interaction.objects.create(user=reader, content=content, kind=Interaction.Kind.CLICK)
    run = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER, progress=0.4, log="started\nstep 1\n")
    version = ModelVersion.objects.create(kind=ModelKind.RECOMMENDER, name="popularity-1", training_run=run)
    conversation = Conversation.objects.create(user=reader, title="About comets")
    question = Message.objects.create(conversation=conversation, role=Message.Role.USER, text="Comets?")
    answer = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text="Here is a piece on comets.",
        reply_to=question,
        model_version=version,
    )
    feedback = MessageFeedback.objects.create(message=answer, rating=MessageFeedback.Rating.UP)
    return {
        "content": content,
        "section": section,
        "tag": tag,
        "author": author,
        "readerprofile": profile,
        "interaction": interaction,
        "conversation": conversation,
        "message": answer,
        "messagefeedback": feedback,
        "modelversion": version,
        "trainingrun": run,
    }


def admin_url(model: str, view: str, *args) -> str:
    return reverse(f"admin:{APP[model]}_{model}_{view}", args=args)


def test_migration_creates_the_roles(tmp_path):
    """A fresh database gets both groups from the migrations alone."""
    env = child_env(DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}", MEDIACHAT_DATA_DIR=str(tmp_path))
    env.pop("REDIS_URL", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    script = (
        "import json; from django.contrib.auth.models import Group; "
        "print(json.dumps({g.name: sorted(g.permissions.values_list('codename', flat=True)) "
        "for g in Group.objects.all()}))"
    )
    out = subprocess.run(
        [*manage, "shell", "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=60
    )
    groups = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(groups) >= {EDITORS, STAFF}
    assert {"add_content", "delete_tag", "view_conversation", "view_readerprofile"} <= set(groups[EDITORS])
    # Data collection's models, granted by a later migration.
    assert {"add_feedsource", "change_mappingrule", "add_importjob", "view_importrowerror"} <= set(groups[EDITORS])
    assert not any("modelversion" in p or "trainingrun" in p for p in groups[EDITORS])
    assert set(groups[EDITORS]) < set(groups[STAFF])
    assert {"activate_modelversion", "cancel_trainingrun", "add_trainingrun", "change_modelversion"} <= set(
        groups[STAFF]
    )
    assert "delete_modelversion" not in groups[STAFF]


def test_sync_roles_repairs_a_changed_group(db):
    roles_sync()
    editors = Group.objects.get(name=EDITORS)
    wrong = Permission.objects.get(codename="delete_modelversion")
    editors.permissions.add(wrong)
    editors.permissions.remove(Permission.objects.get(codename="view_message"))
    out = io.StringIO()
    call_command("sync_roles", stdout=out)
    assert "Editors: " in out.getvalue()
    codenames = set(editors.permissions.values_list("codename", flat=True))
    assert "delete_modelversion" not in codenames
    assert "view_message" in codenames


def test_roles_take_in_intent_and_survey_models_added_later(db):
    """Models named intent*, keywordrule and survey* join the Editors' permissions when they appear."""
    state = MigrationExecutor(connection).loader.project_state()
    for name in ("Intent", "IntentExample", "KeywordRule", "Survey", "SurveyResponse", "Unrelated"):
        state.add_model(ModelState("personalization", name, [("id", models.BigAutoField(primary_key=True))]))
    try:
        roles_sync(apps=state.apps)
    finally:
        ContentType.objects.clear_cache()  # it now holds rows that the test's rollback removes
    editors = set(Group.objects.get(name=EDITORS).permissions.values_list("codename", flat=True))
    added = {"view_intent", "view_intentexample", "view_keywordrule", "view_survey", "view_surveyresponse"}
    added |= {"change_survey", "add_keywordrule", "delete_intentexample"}
    assert added <= editors
    assert "view_unrelated" not in editors and "change_unrelated" not in editors
    staff = set(Group.objects.get(name=STAFF).permissions.values_list("codename", flat=True))
    assert added <= staff


@pytest.mark.parametrize("role", ["superuser", "staff", "editor"])
def test_pages_render_for_each_role(client, users, objects, role):
    client.force_login(users[role])
    assert client.get(reverse("admin:index")).status_code == 200
    for model in ALL_MODELS:
        expected = 200 if model in CAN_VIEW[role] else 403
        pk = objects[model].pk
        assert client.get(admin_url(model, "changelist")).status_code == expected, (role, model, "changelist")
        assert client.get(admin_url(model, "change", pk)).status_code == expected, (role, model, "change")
        expected_add = 200 if model in CAN_ADD[role] else 403
        assert client.get(admin_url(model, "add")).status_code == expected_add, (role, model, "add")


def test_a_reader_cannot_enter_the_admin(client, users, objects):
    client.force_login(users["reader"])
    login = reverse("admin:login")
    pages = [reverse("admin:index"), reverse("admin-dashboard"), admin_url("content", "preview", objects["content"].pk)]
    for model in ALL_MODELS:
        pages += [admin_url(model, "changelist"), admin_url(model, "change", objects[model].pk)]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith(login), page


def test_editors_do_not_see_training(client, users, objects):
    client.force_login(users["editor"])
    index = client.get(reverse("admin:index")).content.decode()
    assert "Model versions" not in index and "Training runs" not in index
    assert "Contents" in index
    dashboard = client.get(reverse("admin-dashboard")).content.decode()
    assert 'id="active-models"' not in dashboard and 'id="recent-runs"' not in dashboard


def test_conversations_are_read_only_with_messages_inline(client, users, objects):
    conversation = objects["conversation"]
    for role in ("superuser", "staff", "editor"):
        client.force_login(users[role])
        page = client.get(admin_url("conversation", "change", conversation.pk)).content.decode()
        assert "Here is a piece on comets." in page
        assert "Helpful" in page  # the inline shows the reader's rating
        assert 'name="_save"' not in page
        response = client.post(admin_url("conversation", "change", conversation.pk), {"title": "changed"})
        assert response.status_code == 403
    assert Conversation.objects.get(pk=conversation.pk).title == "About comets"


def test_changelists_do_not_grow_queries_with_rows(client, users, objects):
    """list_select_related and annotations keep a changelist's query count flat as rows multiply."""
    client.force_login(users["superuser"])

    def queries(model: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(admin_url(model, "changelist")).status_code == 200
        return len(ctx.captured_queries)

    models = ["content", "interaction", "conversation", "message", "messagefeedback", "modelversion", "trainingrun"]
    before = {model: queries(model) for model in models}
    reader, content = users["reader"], objects["content"]
    for i in range(5):
        conversation = Conversation.objects.create(user=reader, title=f"c{i}")
        message = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, text="a")
        MessageFeedback.objects.create(message=message, rating=MessageFeedback.Rating.DOWN)
        Interaction.objects.create(user=reader, content=content, kind=Interaction.Kind.VIEW)
        section = Section.objects.create(name=f"s{i}", slug=f"s{i}")
        Content.objects.create(title=f"t{i}", slug=f"t{i}", section=section)
        run = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER, created_by=reader)
        ModelVersion.objects.create(kind=ModelKind.RECOMMENDER, name=f"v{i}", training_run=run, created_by=reader)
    after = {model: queries(model) for model in models}
    assert after == before


def test_content_preview_renders_a_draft_for_staff(client, users, objects):
    content = objects["content"]
    assert content.status == Content.Status.DRAFT
    for role in ("staff", "editor"):
        client.force_login(users[role])
        change = client.get(admin_url("content", "change", content.pk)).content.decode()
        preview_url = admin_url("content", "preview", content.pk)
        assert preview_url in change
        response = client.get(preview_url)
        assert response.status_code == 200
        page = response.content.decode()
        assert "Draft about comets" in page and "Comets, up close." in page and "Ada Writer" in page
        assert "not visible to readers" in page
    # Readers see nothing of it: not through the admin, not on the public page.
    client.force_login(users["reader"])
    assert client.get(admin_url("content", "preview", content.pk)).status_code == 302
    assert client.get(content.get_absolute_url()).status_code == 404
    client.force_login(users["staff"])
    assert client.get(admin_url("content", "preview", 999999)).status_code == 404
    assert client.get(admin_url("content", "preview", "not-a-number")).status_code == 404


def test_publish_unpublish_archive_actions(client, users, objects):
    content = objects["content"]
    changelist = admin_url("content", "changelist")
    client.force_login(users["editor"])

    def act(action: str) -> Content:
        response = client.post(changelist, {"action": action, "_selected_action": [content.pk]})
        assert response.status_code == 302
        return Content.objects.get(pk=content.pk)

    published = act("publish")
    assert published.status == Content.Status.PUBLISHED and published.published_at is not None
    assert client.get(content.get_absolute_url()).status_code == 200
    assert act("unpublish").status == Content.Status.DRAFT
    assert act("archive").status == Content.Status.ARCHIVED
    assert act("publish").published_at == published.published_at  # a return keeps its first date


def test_publishing_dates_content_before_its_past_embargo(db):
    embargo = timezone.now() - dt.timedelta(days=2)
    content = Content.objects.create(title="Embargoed", slug="embargoed", embargo_until=embargo)
    assert content_publish(content_ids=[content.pk]) == 1
    content.refresh_from_db()
    assert (content.status, content.published_at) == (Content.Status.PUBLISHED, embargo)
    content.full_clean()
    assert content_publish(content_ids=[content.pk]) == 0  # already published


def test_content_add_with_bad_input_is_a_form_error(client, users, objects):
    client.force_login(users["editor"])
    response = client.post(
        admin_url("content", "add"),
        {"title": "x", "slug": "not a slug!", "kind": "article", "status": "published", "language": "en"},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert not Content.objects.filter(title="x").exists()


def make_versions() -> tuple[ModelVersion, ModelVersion]:
    old = ModelVersion.objects.create(
        kind=ModelKind.INTENT, name="intent-old", status=ModelVersion.Status.ACTIVE, activated_at=timezone.now()
    )
    new = ModelVersion.objects.create(kind=ModelKind.INTENT, name="intent-new")
    return old, new


def test_activate_action_retires_the_previous_version(client, users, objects):
    old, new = make_versions()
    other_kind = ModelVersion.objects.create(kind=ModelKind.REWARD, name="reward-1", status=ModelVersion.Status.ACTIVE)
    client.force_login(users["staff"])
    response = client.post(
        admin_url("modelversion", "changelist"), {"action": "activate", "_selected_action": [new.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "Intent-new is now the active Intent classifier" in response.content.decode()
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, new.status) == (ModelVersion.Status.RETIRED, ModelVersion.Status.ACTIVE)
    assert new.activated_at is not None
    assert ModelVersion.objects.get(pk=other_kind.pk).status == ModelVersion.Status.ACTIVE
    # Rolling back: the retired version can be activated again.
    model_version_activate(version_id=old.pk, user_id=users["staff"].pk)
    assert list(ModelVersion.objects.active().filter(kind=ModelKind.INTENT)) == [old]


def test_activate_needs_one_selection(client, users, objects):
    old, new = make_versions()
    client.force_login(users["staff"])
    response = client.post(
        admin_url("modelversion", "changelist"),
        {"action": "activate", "_selected_action": [old.pk, new.pk]},
        follow=True,
    )
    assert "Select exactly one model version" in response.content.decode()
    assert ModelVersion.objects.get(pk=new.pk).status == ModelVersion.Status.CANDIDATE


def test_activate_is_post_only_and_permission_checked(client, users, objects):
    old, new = make_versions()
    changelist = admin_url("modelversion", "changelist")
    client.force_login(users["staff"])
    # Admin actions run on POST only: the same request as a GET changes nothing.
    assert client.get(changelist, {"action": "activate", "_selected_action": new.pk, "index": 0}).status_code < 400
    assert ModelVersion.objects.get(pk=new.pk).status == ModelVersion.Status.CANDIDATE
    # A staff user who may edit versions but not activate them: the action is neither offered nor run.
    viewer = User.objects.create_user("vera", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_modelversion", "change_modelversion"]))
    client.force_login(viewer)
    page = client.get(changelist).content.decode()
    assert 'value="activate"' not in page
    client.post(changelist, {"action": "activate", "_selected_action": [new.pk]})
    client.force_login(users["editor"])
    assert client.post(changelist, {"action": "activate", "_selected_action": [new.pk]}).status_code == 403
    assert ModelVersion.objects.get(pk=new.pk).status == ModelVersion.Status.CANDIDATE
    assert ModelVersion.objects.get(pk=old.pk).status == ModelVersion.Status.ACTIVE


def test_cancel_action_cancels_a_queued_run(client, users, objects):
    queued = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER)
    finished = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER, status=TrainingRun.Status.SUCCEEDED)
    client.force_login(users["staff"])
    response = client.post(
        admin_url("trainingrun", "changelist"),
        {"action": "cancel", "_selected_action": [queued.pk, finished.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert f"Cancelled runs #{queued.pk}" in page
    assert "already succeeded" in page
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.CANCELLED and queued.finished_at is not None
    assert f"cancelled by user {users['staff'].pk}" in queued.log
    assert TrainingRun.objects.get(pk=finished.pk).status == TrainingRun.Status.SUCCEEDED


def test_cancel_is_post_only_and_permission_checked(client, users, objects):
    run = TrainingRun.objects.create(kind=ModelKind.RECOMMENDER)
    changelist = admin_url("trainingrun", "changelist")
    client.force_login(users["staff"])
    assert client.get(changelist, {"action": "cancel", "_selected_action": run.pk, "index": 0}).status_code < 400
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.QUEUED
    viewer = User.objects.create_user("victor", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_trainingrun", "change_trainingrun"]))
    client.force_login(viewer)
    assert 'value="cancel"' not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "cancel", "_selected_action": [run.pk]})
    client.force_login(users["editor"])
    assert client.post(changelist, {"action": "cancel", "_selected_action": [run.pk]}).status_code == 403
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.QUEUED


def test_training_run_pages_show_progress_log_and_metrics(client, users, objects):
    run = objects["trainingrun"]
    TrainingRun.objects.filter(pk=run.pk).update(metrics={"hit_rate_at_10": 0.25})
    client.force_login(users["staff"])
    changelist = client.get(admin_url("trainingrun", "changelist")).content.decode()
    assert '<progress max="100" value="40"' in changelist
    change = client.get(admin_url("trainingrun", "change", run.pk)).content.decode()
    assert "step 1" in change and "hit_rate_at_10" in change
    assert 'name="log"' not in change  # shown, not editable


def test_training_run_add_refuses_bad_input_and_launches_good(client, users, objects):
    client.force_login(users["staff"])
    add = admin_url("trainingrun", "add")
    response = client.post(add, {"kind": ModelKind.REWARD, "parameters": "{}"})
    assert response.status_code == 200 and "No training pipeline" in response.content.decode()
    response = client.post(add, {"kind": ModelKind.CHAT_LM, "parameters": '{"preset": "huge"}'})
    assert response.status_code == 200 and "preset" in str(response.context["adminform"].form.errors)
    response = client.post(add, {"kind": ModelKind.RECOMMENDER, "parameters": '{"bogus": 1}'})
    assert response.status_code == 200 and "Unknown parameters" in response.content.decode()
    response = client.post(add, {"kind": ModelKind.RECOMMENDER, "parameters": "not json"})
    assert response.status_code == 200 and response.context["adminform"].form.errors
    before = TrainingRun.objects.count()
    response = client.post(add, {"kind": ModelKind.RECOMMENDER, "parameters": '{"top_k": 5}'})
    assert response.status_code == 302
    run = TrainingRun.objects.latest("id")
    assert TrainingRun.objects.count() == before + 1
    assert (run.status, run.parameters, run.created_by) == (TrainingRun.Status.QUEUED, {"top_k": 5}, users["staff"])
    assert run.celery_task_id


def test_model_version_add_records_its_author_and_keeps_status(client, users, objects):
    client.force_login(users["staff"])
    response = client.post(
        admin_url("modelversion", "add"),
        {"kind": ModelKind.REWARD, "name": "reward-manual", "status": "active", "config": "{}", "metrics": "{}"},
    )
    assert response.status_code == 302
    version = ModelVersion.objects.get(name="reward-manual")
    assert version.created_by == users["staff"]
    assert version.status == ModelVersion.Status.CANDIDATE  # activation goes through the action only


def at(days_ago: int, hour: int = 12) -> dt.datetime:
    day = timezone.localdate() - dt.timedelta(days=days_ago)
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour)))


def test_dashboard_shows_the_numbers(client, users, objects):
    reader = users["reader"]
    # Beside the fixture's one conversation (2 messages, 1 helpful) today: 2 more 3 days ago, 1 out of range.
    for days_ago in (3, 3, 45):
        conversation = Conversation.objects.create(user=reader, title=f"{days_ago} days ago")
        Conversation.objects.filter(pk=conversation.pk).update(started_at=at(days_ago))
        message = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, text="a")
        Message.objects.filter(pk=message.pk).update(created_at=at(days_ago))
        feedback = MessageFeedback.objects.create(message=message, rating=MessageFeedback.Rating.DOWN)
        MessageFeedback.objects.filter(pk=feedback.pk).update(created_at=at(days_ago))
    popular = Content.objects.create(title="Popular piece", slug="popular", status=Content.Status.PUBLISHED)
    for _ in range(3):
        Interaction.objects.create(user=reader, content=popular, kind=Interaction.Kind.CLICK)
    Interaction.objects.create(user=reader, content=popular, kind=Interaction.Kind.COMPLETE)
    ModelVersion.objects.filter(pk=objects["modelversion"].pk).update(status=ModelVersion.Status.ACTIVE)

    client.force_login(users["staff"])
    response = client.get(reverse("admin-dashboard"))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="stat-conversations">3<' in page  # the one 45 days ago is out of the window
    assert 'id="stat-messages">4<' in page
    assert 'id="stat-helpful">1<' in page and 'id="stat-not-helpful">2<' in page
    assert 'id="stat-helpful-rate">33.3%<' in page
    main = page.split('id="content-main"')[1]
    assert main.count('<svg viewBox="0 0 640 170"') == 3 and "<script" not in main
    assert main.count("<rect ") == 6  # two days with activity in each of the three charts
    day = f"{timezone.localdate() - dt.timedelta(days=3):%b %-d}"
    assert f"<title>{day}: 2 conversations</title>" in main and f"<title>{day}: 2 not helpful</title>" in main
    three_days_ago = (timezone.localdate() - dt.timedelta(days=3)).isoformat()
    assert f'<td>{three_days_ago}</td><td class="num">2</td><td class="num">2</td>' in page
    assert 'All time</th><td class="num">1</td><td class="num">3</td><td class="num">4</td>' in page
    top = page.split('id="top-content"')[1].split("</table>")[0]
    assert top.index("Popular piece") < top.index("Draft about comets")
    assert '<td class="num">4</td><td class="num">3</td><td class="num">1</td>' in top
    assert "popularity-1" in page.split('id="active-models"')[1].split("</table>")[0]
    assert f"#{objects['trainingrun'].pk}" in page.split('id="recent-runs"')[1].split("</table>")[0]
    # The admin index links to it.
    assert reverse("admin-dashboard") in client.get(reverse("admin:index")).content.decode()


def test_dashboard_renders_empty(client, users):
    client.force_login(users["superuser"])
    page = client.get(reverse("admin-dashboard")).content.decode()
    assert 'id="stat-helpful-rate">-<' in page
    assert "No reading signals yet." in page and "No active model" in page and "No training runs yet." in page


def test_dashboard_shows_what_readers_asked_for(client, users):
    conversation = Conversation.objects.create(user=users["reader"], title="asks")
    rows = [("greeting", 0.9, "model"), ("greeting", 0.7, "model"), ("latest_news", 1.0, "rule"), ("", None, "")]
    for intent, confidence, source in rows:
        Message.objects.create(
            conversation=conversation, role=Message.Role.USER, text="x", intent=intent, confidence=confidence,
            intent_source=source,
        )  # fmt: skip
    old = Message.objects.create(conversation=conversation, role=Message.Role.USER, text="x", intent="thanks")
    Message.objects.filter(pk=old.pk).update(created_at=at(45))
    Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, text="x", intent="search")
    client.force_login(users["editor"])
    page = client.get(reverse("admin-dashboard")).content.decode()
    table = page.split('id="intents-asked"')[1].split("</table>")[0]
    assert '>greeting</a></td><td class="num">2</td><td class="num">50.0%</td><td class="num">0.80</td>' in table
    latest = '>latest_news</a></td><td class="num">1</td><td class="num">25.0%</td><td class="num">1.00</td>'
    assert latest + '<td class="num">1<' in table
    assert "(not classified yet)" in table and "thanks" not in table and "search" not in table
