"""The gazetteer: built from a small catalog and the editors' synonyms, swapped atomically, rebuilt by a command,
by the Celery task (with a real worker) and from the admin."""

import io
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from mediachat.celery import app
from personalization.models import Author, Content, EntitySynonym, GazetteerEntry, Section, Tag
from personalization.roles import EDITORS, STAFF, roles_sync
from personalization.understanding.gazetteer import gazetteer_build, gazetteer_rebuild
from personalization.understanding.tasks import gazetteer_rebuild as gazetteer_rebuild_task

from .conftest import wait_until

BODIES = [
    "Divers from the Bayside Marine Institute counted forty seahorses in Saltmarsh this spring. "
    "Mira Okonkwo said the water was the clearest she had seen.",
    "Engineers watched the tide rise in Saltmarsh on Tuesday. The Bayside Marine Institute measured the surge, "
    "and Mira Okonkwo said the barrier held. Greyhaven Bank paid for the sensors.",
]


def make_catalog() -> dict[str, object]:
    """Two sections, two tags, four authors (two share a surname), three published items, a draft, synonyms."""
    now = timezone.now()
    science = Section.objects.create(name="Science", slug="science")
    climate = Section.objects.create(name="Climate Change", slug="climate-change")
    flooding = Tag.objects.create(name="Flooding", slug="flooding")
    ai = Tag.objects.create(name="Artificial Intelligence", slug="artificial-intelligence")
    tomasz = Author.objects.create(name="Tomasz Achterberg", slug="tomasz-achterberg")
    lucia = Author.objects.create(name="Lucía Marenco", slug="lucia-marenco")
    sam = Author.objects.create(name="Sam Hale", slug="sam-hale")
    Author.objects.create(name="Ruth Hale", slug="ruth-hale")
    published = {"status": Content.Status.PUBLISHED, "published_at": now - timezone.timedelta(days=1)}
    seahorses = Content.objects.create(
        title="Seahorses return to Ellery Bay", slug="seahorses", section=science, body=BODIES[0], **published
    )
    barrier = Content.objects.create(
        title="Flood barrier holds through the spring tide",
        slug="barrier",
        section=climate,
        body=BODIES[1],
        **published,
    )
    robots = Content.objects.create(
        title="Video: Robots that sort the city's recycling", slug="robots", section=science, **published
    )
    Content.objects.create(title="An unpublished draft about Greyhaven Bank", slug="draft", body=BODIES[1])
    seahorses.tags.add(flooding)
    barrier.tags.add(flooding)
    robots.tags.add(ai)
    seahorses.authors.add(tomasz)
    barrier.authors.add(lucia, sam)
    EntitySynonym.objects.create(kind="tag", value="artificial-intelligence", synonym="AI")
    EntitySynonym.objects.create(kind="section", value="Climate Change", synonym="global warming")
    EntitySynonym.objects.create(kind="place", value="Saltmarsh", synonym="the Marsh")
    return {
        "science": science,
        "climate": climate,
        "flooding": flooding,
        "ai": ai,
        "tomasz": tomasz,
        "lucia": lucia,
        "sam": sam,
        "seahorses": seahorses,
        "barrier": barrier,
        "robots": robots,
    }


@pytest.fixture
def catalog(db) -> dict[str, object]:
    return make_catalog()


def entries() -> set[tuple[str, str, str, int | None]]:
    return {(e.kind, e.surface, e.value, e.ref_id) for e in gazetteer_build()}


def test_the_gazetteer_holds_the_catalog_names_synonyms_and_named_entities(catalog):
    c = catalog
    built = entries()
    expected = {
        ("section", "science", "science", c["science"].pk),
        ("section", "climate change", "climate-change", c["climate"].pk),
        ("tag", "flooding", "flooding", c["flooding"].pk),
        ("tag", "artificial intelligence", "artificial-intelligence", c["ai"].pk),
        ("author", "tomasz achterberg", "tomasz-achterberg", c["tomasz"].pk),
        ("author", "achterberg", "tomasz-achterberg", c["tomasz"].pk),  # the only Achterberg
        ("author", "lucia marenco", "lucia-marenco", c["lucia"].pk),  # accents folded
        ("author", "sam hale", "sam-hale", c["sam"].pk),
        ("content", "seahorses return to ellery bay", "seahorses", c["seahorses"].pk),
        ("content", "robots that sort the city s recycling", "robots", c["robots"].pk),  # without "Video:"
        ("tag", "ai", "artificial-intelligence", c["ai"].pk),  # synonyms point at the canonical entity
        ("section", "global warming", "climate-change", c["climate"].pk),
        ("place", "the marsh", "Saltmarsh", None),
        ("person", "mira okonkwo", "Mira Okonkwo", None),  # named in two published items
        ("place", "saltmarsh", "Saltmarsh", None),
        ("organization", "bayside marine institute", "Bayside Marine Institute", None),
    }
    assert expected <= built, expected - built
    surfaces = {surface for _, surface, _, _ in built}
    assert "hale" not in surfaces  # two authors are called Hale
    assert "greyhaven bank" not in surfaces  # one published item names it; the draft does not count
    assert "an unpublished draft about greyhaven bank" not in surfaces
    assert not {"engineers", "divers", "tuesday", "the"} & surfaces  # capitalised common words are not names
    weights = {(e.kind, e.surface): e.weight for e in gazetteer_build()}
    assert weights[("tag", "flooding")] == 2 and weights[("person", "mira okonkwo")] == 2


def test_a_synonym_takes_its_surface_from_any_other_entity(catalog):
    Tag.objects.create(name="Saltmarsh", slug="saltmarsh")
    EntitySynonym.objects.create(kind="place", value="Saltmarsh", synonym="Saltmarsh")
    assert [(kind, value) for kind, surface, value, _ in entries() if surface == "saltmarsh"] == [
        ("place", "Saltmarsh")
    ]


def test_rebuild_replaces_every_row(catalog):
    GazetteerEntry.objects.create(kind="tag", surface="stale", value="stale", built_at=timezone.now())
    count = gazetteer_rebuild()
    assert count == GazetteerEntry.objects.count() == len(gazetteer_build())
    assert not GazetteerEntry.objects.filter(surface="stale").exists()
    assert GazetteerEntry.objects.values("built_at").distinct().count() == 1


def test_a_failed_rebuild_leaves_the_old_gazetteer(catalog):
    gazetteer_rebuild()
    before = set(GazetteerEntry.objects.values_list("kind", "surface", "built_at"))
    Tag.objects.create(name="Boom", slug="boom")
    table = GazetteerEntry._meta.db_table
    with connection.cursor() as cursor:  # the database refuses one row half way through the inserts
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN "
                "IF NEW.surface = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER refuse_boom BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_boom()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER refuse_boom BEFORE INSERT ON {table} WHEN NEW.surface = 'boom' "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
    with pytest.raises(DatabaseError):
        gazetteer_rebuild()
    assert set(GazetteerEntry.objects.values_list("kind", "surface", "built_at")) == before


def test_readers_see_the_old_gazetteer_or_the_new_one_never_half(transactional_db):
    Tag.objects.bulk_create(Tag(name=f"Topic {i}", slug=f"topic-{i}") for i in range(2500))
    total = gazetteer_rebuild()
    seen, errors = [], []

    def rebuild() -> None:
        try:
            gazetteer_rebuild()
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=rebuild)
    worker.start()
    while worker.is_alive():
        seen.append(GazetteerEntry.objects.aggregate(n=Count("id"), stamps=Count("built_at", distinct=True)))
    worker.join()
    assert not errors
    assert len(seen) > 1
    assert all(row == {"n": total, "stamps": 1} for row in seen), [row for row in seen if row["n"] != total][:3]


def test_the_command_prints_counts_per_kind(catalog):
    out = io.StringIO()
    call_command("rebuild_gazetteer", stdout=out)
    lines = out.getvalue().splitlines()
    counts = dict(GazetteerEntry.objects.values_list("kind").annotate(n=Count("id")))
    for kind in ("author", "content", "organization", "person", "place", "section", "tag"):
        assert f"{kind}: {counts[kind]}" in lines
    assert f"{sum(counts.values())} gazetteer entries." in lines[-1]


def test_the_task_runs_the_service_on_the_nlu_queue_nightly(catalog):
    assert gazetteer_rebuild_task.name == "personalization.understanding.tasks.gazetteer_rebuild"
    assert gazetteer_rebuild_task.apply().get() == GazetteerEntry.objects.count() > 0
    assert app.amqp.router.route({}, gazetteer_rebuild_task.name)["queue"].name == "nlu"
    assert settings.CELERY_BEAT_SCHEDULE["gazetteer-rebuild"]["task"] == gazetteer_rebuild_task.name


# --- Admin ---------------------------------------------------------------------------------------------------


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:personalization_{model}_{view}", args=args)


REBUILD = "admin:personalization_gazetteer_rebuild"


def make_users() -> dict[str, User]:
    roles_sync()  # a flush by a transactional test drops the groups the migration made
    users = {
        "superuser": User.objects.create_superuser("root", "root@example.com", "x"),
        "staff": User.objects.create_user("stella", is_staff=True),
        "editor": User.objects.create_user("eddie", is_staff=True),
        "viewer": User.objects.create_user("vic", is_staff=True),
        "reader": User.objects.create_user("rita"),
    }
    users["staff"].groups.add(Group.objects.get(name=STAFF))
    users["editor"].groups.add(Group.objects.get(name=EDITORS))
    users["viewer"].user_permissions.add(
        *Permission.objects.filter(codename__in=["view_gazetteerentry", "view_entitysynonym"])
    )
    return users


@pytest.fixture
def users(db) -> dict[str, User]:
    return make_users()


@pytest.mark.parametrize("role", ["superuser", "staff", "editor"])
def test_admin_pages_render_for_staff(client, users, catalog, role):
    gazetteer_rebuild()
    synonym, entry = EntitySynonym.objects.first(), GazetteerEntry.objects.first()
    client.force_login(users[role])
    for page in (
        url("entitysynonym", "changelist"),
        url("entitysynonym", "changelist") + "?kind=tag&q=AI",
        url("entitysynonym", "add"),
        url("entitysynonym", "change", synonym.pk),
        url("gazetteerentry", "changelist"),
        url("gazetteerentry", "changelist") + "?kind=person&q=okonkwo",
        url("gazetteerentry", "change", entry.pk),
    ):
        response = client.get(page)
        assert response.status_code == 200, (role, page)
        if "/change/" not in page and "/add/" not in page:
            assert 'id="rebuild-gazetteer"' in response.content.decode(), (role, page)
    assert "Mira Okonkwo" in client.get(url("gazetteerentry", "changelist") + "?kind=person").content.decode()
    assert client.get(url("gazetteerentry", "add")).status_code == 403  # rebuilt, never written by hand
    page = client.get(url("gazetteerentry", "change", entry.pk)).content.decode()
    assert 'name="_save"' not in page


def test_editors_add_synonyms_and_common_words_are_refused(client, users, catalog):
    client.force_login(users["editor"])
    response = client.post(url("entitysynonym", "add"), {"kind": "tag", "value": "flooding", "synonym": "floods"})
    assert response.status_code == 302 and EntitySynonym.objects.filter(synonym="floods").exists()
    response = client.post(url("entitysynonym", "add"), {"kind": "place", "value": "Saltmarsh", "synonym": "us"})
    assert response.status_code == 200 and "not a common word" in response.content.decode()


def test_admin_pages_are_forbidden_to_others(client, users, catalog):
    gazetteer_rebuild()
    entry, synonym = GazetteerEntry.objects.first(), EntitySynonym.objects.first()
    pages = [url("entitysynonym", "changelist"), url("entitysynonym", "change", synonym.pk)]
    pages += [url("gazetteerentry", "changelist"), url("gazetteerentry", "change", entry.pk)]
    client.force_login(users["reader"])
    login = reverse("admin:login")
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith(login), page
    response = client.post(reverse(REBUILD))
    assert response.status_code == 302 and response["Location"].startswith(login)
    client.force_login(users["viewer"])  # staff who may only look: no button, no rebuild, no edits
    assert 'id="rebuild-gazetteer"' not in client.get(url("gazetteerentry", "changelist")).content.decode()
    assert client.post(reverse(REBUILD)).status_code == 403
    assert client.get(url("entitysynonym", "add")).status_code == 403


def test_the_rebuild_button_is_post_only_and_enqueues_after_commit(
    client, users, catalog, django_capture_on_commit_callbacks
):
    client.force_login(users["editor"])
    assert client.get(reverse(REBUILD)).status_code == 405
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse(REBUILD), follow=True)
    assert response.redirect_chain == [(url("gazetteerentry", "changelist"), 302)]
    assert "Rebuilding the gazetteer" in response.content.decode()
    assert len(callbacks) == 1  # gazetteer_rebuild.delay() once the request commits


def test_the_rebuild_button_rebuilds_with_a_real_worker(client, transactional_db, celery_worker: Path):
    make_catalog()
    users = make_users()
    client.force_login(users["editor"])
    assert client.post(reverse(REBUILD)).status_code == 302
    wait_until(lambda: GazetteerEntry.objects.filter(surface="mira okonkwo").exists(), timeout=60, what="rebuild")
    assert "personalization.understanding.tasks.gazetteer_rebuild" in celery_worker.read_text()
