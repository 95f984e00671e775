"""seed_demo and generate_catalog against the real test database."""

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from django.db.models import F
from django.utils import timezone

from personalization.demo.synthetic import vocabulary
from personalization.models import Author, Content, Interaction, ReaderProfile, Section, Tag
from personalization.roles import EDITORS, STAFF
from personalization.search import catalog_search, query_terms

ROOT = Path(__file__).resolve().parent.parent
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SMALL = ["--items", "300", "--readers", "30", "--interactions", "3000", "--end", "2025-06-01"]
END = datetime(2025, 6, 1, tzinfo=UTC)


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def table_counts() -> dict[str, int]:
    user_model = get_user_model()
    return {
        "content": Content.objects.count(),
        "sections": Section.objects.count(),
        "tags": Tag.objects.count(),
        "authors": Author.objects.count(),
        "content_tags": Content.tags.through.objects.count(),
        "content_authors": Content.authors.through.objects.count(),
        "users": user_model.objects.count(),
        "memberships": user_model.groups.through.objects.count(),
        "groups": Group.objects.count(),
        "profiles": ReaderProfile.objects.count(),
        "interactions": Interaction.objects.count(),
    }


@pytest.fixture
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS


@pytest.mark.django_db
def test_seed_demo_writes_a_realistic_catalog(fast_passwords):
    out = seed()
    demo = Content.objects.exclude(slug__startswith="gen-")
    assert demo.count() >= 80
    assert demo.values("section").distinct().count() >= 8

    now = timezone.now()
    visible = demo.published(now).prefetch_related("tags", "authors")
    assert {c.kind for c in visible} == {"article", "video", "podcast"}
    assert Counter(c.kind for c in visible).most_common(1)[0][0] == "article"
    for content in visible:
        paragraphs = [p for p in content.body.split("\n\n") if p.strip()]
        words = len(content.body.split())
        if content.kind == "article":
            assert 3 <= len(paragraphs) <= 6, content.slug
            assert 250 <= words <= 600, (content.slug, words)
        else:
            assert content.duration_seconds and content.duration_seconds >= 60, content.slug
            assert words >= 50, content.slug
        sentences = len(re.findall(r"[.!?](?:\s|$)", content.summary))
        assert 1 <= sentences <= 3, content.slug
        assert len(content.tags.all()) >= 2 and len(content.authors.all()) >= 1, content.slug
        assert content.url == "" and content.reader_url == f"/c/{content.slug}/"
        assert content.published_at <= now

    dates = sorted(c.published_at for c in visible)
    assert dates[-1] - dates[0] >= timedelta(days=120)
    assert Tag.objects.filter(contents__in=demo).distinct().count() >= 40
    authors = Author.objects.filter(contents__in=demo).distinct()
    assert authors.count() >= 15 and all(a.bio for a in authors)

    drafts = demo.filter(status=Content.Status.DRAFT)
    assert drafts.exists() and not drafts.filter(pk__in=visible).exists()
    assert demo.filter(status=Content.Status.ARCHIVED).exclude(pk__in=visible).exists()
    embargoed = demo.filter(status=Content.Status.PUBLISHED, embargo_until__gt=now)
    assert embargoed.exists() and not embargoed.filter(pk__in=visible).exists()
    assert "Demo ready: " in out


@pytest.mark.django_db
def test_seed_demo_readers_have_histories_that_fit_their_taste(fast_passwords):
    seed()
    readers = get_user_model().objects.filter(username__regex=r"^reader\d+$")
    assert readers.count() >= 6
    consents = set(ReaderProfile.objects.filter(user__in=readers).values_list("training_consent", flat=True))
    assert consents == {True, False}
    kinds = set(Interaction.objects.filter(user__in=readers).values_list("kind", flat=True))
    assert kinds == set(Interaction.Kind.values)
    months = {
        d.strftime("%Y-%m") for d in Interaction.objects.filter(user__in=readers).values_list("occurred_at", flat=True)
    }
    assert len(months) >= 5
    assert not Interaction.objects.filter(user__in=readers, occurred_at__lt=F("content__published_at")).exists()
    assert not Interaction.objects.filter(user__in=readers, occurred_at__gt=timezone.now()).exists()

    checked = 0
    for reader in readers:
        profile = reader.reader_profile
        stated = set(profile.preferences["sections"])
        assert stated and profile.last_seen_at is not None
        rows = Interaction.objects.filter(user=reader)
        assert rows.filter(kind="impression").exists(), reader.username
        clicks = Counter(rows.filter(kind="click").values_list("content__section__slug", flat=True))
        if sum(clicks.values()) >= 5:
            # Most of a reader's clicks fall in the sections they said they like.
            assert sum(clicks[s] for s in stated) / sum(clicks.values()) >= 0.6, (reader.username, clicks)
            checked += 1
        ratings = rows.filter(kind="rate")
        if ratings.exists():
            good = ratings.filter(content__section__slug__in=stated).values_list("value", flat=True)
            assert all(v >= 3 for v in good), reader.username
        for dwell in rows.filter(kind="dwell").values_list("value", flat=True):
            assert dwell > 0
    assert checked >= 4


@pytest.mark.django_db
def test_seed_demo_accounts_and_groups(fast_passwords):
    # The roles migration made the groups; seed_demo must join them and leave their permissions alone.
    editors = Group.objects.get(name=EDITORS)
    marker = Permission.objects.get(codename="view_interaction")
    editors.permissions.add(marker)
    before = set(editors.permissions.values_list("id", flat=True))
    out = seed()

    user_model = get_user_model()
    editor = user_model.objects.get(username="editor")
    staff = user_model.objects.get(username="staff")
    admin = user_model.objects.get(username="admin")
    assert editor.groups.filter(name=EDITORS).exists() and editor.is_staff and not editor.is_superuser
    assert staff.groups.filter(name=STAFF).exists() and staff.is_staff and not staff.is_superuser
    assert admin.is_superuser and admin.is_staff
    assert editor.check_password("editor-demo-pass") and staff.check_password("staff-demo-pass")
    assert admin.check_password("admin-demo-pass")
    assert user_model.objects.get(username="reader1").check_password("reader-demo-pass")
    assert set(Group.objects.get(name=EDITORS).permissions.values_list("id", flat=True)) == before
    for line in ("editor / editor-demo-pass", "staff / staff-demo-pass", "admin / admin-demo-pass", "/admin/"):
        assert line in out


@pytest.mark.django_db
def test_seed_demo_creates_missing_groups_without_permissions(fast_passwords):
    Group.objects.filter(name__in=[EDITORS, STAFF]).delete()
    seed()
    for name in (EDITORS, STAFF):
        group = Group.objects.get(name=name)
        assert group.user_set.count() == 1 and not group.permissions.exists()


@pytest.mark.django_db
def test_seed_demo_twice_changes_no_counts_and_restores_edits(fast_passwords):
    seed()
    first = table_counts()
    editor = get_user_model().objects.get(username="editor")
    editor.set_password("changed-by-the-editor")
    editor.save(update_fields=["password"])
    Content.objects.filter(slug="lantern-theatre-reopens").update(title="Edited")
    seed()
    assert table_counts() == first
    assert Content.objects.get(slug="lantern-theatre-reopens").title.startswith("The Lantern Theatre reopens")
    assert get_user_model().objects.get(username="editor").check_password("changed-by-the-editor")


@pytest.mark.django_db
def test_seed_and_generate_use_a_hand_made_section_of_the_same_name(fast_passwords):
    hand_made = Section.objects.create(name="Science", slug="sci")
    Tag.objects.create(name="Oceans", slug="the-oceans")
    seed()
    generate(*SMALL, "--seed", "4")
    assert not Section.objects.filter(slug="science").exists()
    assert Content.objects.filter(slug="bay-seahorse-population-recovers", section=hand_made).exists()
    assert Content.objects.filter(slug__startswith="gen-s4-", section=hand_made).exists()
    assert Content.objects.get(slug="bay-seahorse-population-recovers").tags.filter(slug="the-oceans").exists()


def generate(*args: str) -> str:
    out = StringIO()
    call_command("generate_catalog", *args, stdout=out)
    return out.getvalue()


def generated_fingerprint() -> tuple[dict, str]:
    """Aggregate stats of the generated rows, and a digest of every row by natural keys."""
    rows = Interaction.objects.filter(idempotency_key__startswith="gen:").values_list(
        "user__username", "content__slug", "kind", "value", "source", "occurred_at"
    )
    digest = hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()
    contents = Content.objects.filter(slug__startswith="gen-")
    stats = {
        "items": contents.count(),
        "sections": dict(Counter(contents.values_list("section__slug", flat=True))),
        "kinds": dict(
            Counter(Interaction.objects.filter(idempotency_key__startswith="gen:").values_list("kind", flat=True))
        ),
        "titles": hashlib.sha256(
            repr(sorted(contents.values_list("slug", "title", "published_at"))).encode()
        ).hexdigest(),
        "tag_links": Content.tags.through.objects.filter(content__in=contents).count(),
    }
    return stats, digest


@pytest.mark.django_db
def test_generate_catalog_is_deterministic_and_idempotent(tmp_path):
    truth = tmp_path / "truth.json"
    out = generate(*SMALL, "--seed", "5", "--replace", "--truth", str(truth))
    assert "Generated 300 items, 30 readers and 3,000 interactions" in out
    first = generated_fingerprint()
    assert first[0]["items"] == 300 and sum(first[0]["kinds"].values()) == 3000
    first_truth = truth.read_text()

    generate(*SMALL, "--seed", "5", "--replace", "--truth", str(truth))
    assert generated_fingerprint() == first
    assert truth.read_text() == first_truth

    counts = table_counts()
    out = generate(*SMALL, "--seed", "5")
    assert "nothing written" in out and table_counts() == counts

    # Another seed plants another world beside it, under its own names.
    generate(*SMALL, "--seed", "6")
    assert Content.objects.filter(slug__startswith="gen-s6-").count() == 300
    assert Interaction.objects.filter(idempotency_key__startswith="gen:s6:").count() == 3000
    assert generated_fingerprint() != first
    generate(*SMALL, "--seed", "5", "--replace")
    assert generated_fingerprint() == first


def test_plan_is_the_same_in_another_process():
    """String hashing is salted per process; the plan must not depend on it."""
    script = (
        "import hashlib; from datetime import datetime, UTC;"
        "from personalization.demo.synthetic import SyntheticConfig, plan;"
        "end = datetime(2025, 1, 1, tzinfo=UTC);"
        "p = plan(SyntheticConfig(items=200, readers=20, interactions=1500, seed=3, end=end));"
        "print(hashlib.sha256(repr((p.items, p.readers, p.interactions, p.truth())).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={"PYTHONHASHSEED": str(salt), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for salt in (1, 2)
    }
    assert len(digests) == 1 and len(digests.pop()) == 64


@pytest.mark.django_db
def test_generated_catalog_has_its_planted_structure(tmp_path):
    truth_path = tmp_path / "truth.json"
    generate(*SMALL, "--seed", "11", "--truth", str(truth_path))
    truth = json.loads(truth_path.read_text())
    assert len(truth["readers"]) == 30 and truth["counts"] == {"items": 300, "readers": 30, "interactions": 3000}
    rows = Interaction.objects.filter(idempotency_key__startswith="gen:s11:")
    assert rows.count() == 3000

    # Popularity is skewed: the top tenth of items holds far more than a tenth of interactions.
    per_item = Counter(rows.values_list("content_id", flat=True))
    top = sum(n for _, n in per_item.most_common(30))
    assert top / 3000 > 0.5  # uniform popularity gives about 0.35 here (sessions vary in length)

    # Every interaction happens after its item's publication, and before the end of the window.
    assert not rows.filter(occurred_at__lte=F("content__published_at")).exists()
    assert not rows.filter(occurred_at__gte=END).exists()
    dates = list(Content.objects.filter(slug__startswith="gen-s11-").values_list("published_at", flat=True))
    assert max(dates) - min(dates) >= timedelta(days=300)

    # Readers' interactions concentrate in their planted affinities (sections or tags).
    items = {}
    for content in (
        Content.objects.filter(slug__startswith="gen-s11-").prefetch_related("tags").select_related("section")
    ):
        items[content.id] = (content.section.slug, {t.slug for t in content.tags.all()})
    per_reader = defaultdict(list)
    for username, content_id in rows.values_list("user__username", "content_id"):
        per_reader[username].append(content_id)
    assert set(per_reader) <= set(truth["readers"])
    shares, lifts = [], []
    for username, content_ids in per_reader.items():
        planted = truth["readers"][username]
        assert 1 <= len(planted["sections"]) + len(planted["tags"]) <= 3

        def liked(cid, planted=planted):
            section, tags = items[cid]
            return section in planted["sections"] or bool(tags & set(planted["tags"]))

        share = sum(map(liked, content_ids)) / len(content_ids)
        base = sum(map(liked, items)) / len(items)
        shares.append(share)
        if len(content_ids) >= 20:
            lifts.append(share - base)
    assert sum(shares) / len(shares) >= 0.6
    assert lifts and sum(lift > 0.15 for lift in lifts) / len(lifts) >= 0.9

    # Recent sessions lean towards the trending tags.
    recent = rows.filter(occurred_at__gte=END - timedelta(days=truth["trending"]["window_days"]))
    trending = set(truth["trending"]["tags"])
    recent_share = sum(bool(items[c][1] & trending) for c in recent.values_list("content_id", flat=True)) / max(
        recent.count(), 1
    )
    overall_share = sum(bool(items[c][1] & trending) for c in rows.values_list("content_id", flat=True)) / 3000
    assert recent_share > overall_share


@pytest.mark.django_db
def test_generated_items_are_found_by_section_words():
    generate(*SMALL, "--seed", "12")
    sections = vocabulary()["sections"]
    elsewhere = set(query_terms(json.dumps({k: v for k, v in sections.items() if k != "science"})))
    elsewhere |= set(query_terms(json.dumps(vocabulary()["title_templates"] + vocabulary()["places"])))
    # Search matches substrings, so a science word must not hide inside any word of the other sections.
    science_words = {
        w for w in query_terms(" ".join(sections["science"]["topics"])) if not any(w in other for other in elsewhere)
    }
    found = 0
    for content in Content.objects.filter(slug__startswith="gen-s12-", section__slug="science", kind="article"):
        assert len(content.body.split("\n\n")) >= 3
        words = [w for w in query_terms(content.title) if w in science_words]
        if not words:
            continue
        hits = catalog_search(words[0], limit=100)
        assert content.pk in {h.content.pk for h in hits}, words[0]
        assert {h.content.section.slug for h in hits} == {"science"}, words[0]
        found += 1
    assert found >= 5


@pytest.mark.django_db
def test_generate_catalog_refuses_bad_input(tmp_path):
    with pytest.raises(CommandError, match="--items"):
        generate("--items", "0", "--readers", "3", "--interactions", "10")
    with pytest.raises(CommandError, match="--seed"):
        generate("--items", "5", "--readers", "3", "--interactions", "10", "--seed", "-1")
    with pytest.raises(CommandError, match="--end"):
        generate("--items", "5", "--readers", "3", "--interactions", "10", "--end", "yesterday")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CommandError, match="truth file"):
        generate("--items", "5", "--readers", "3", "--interactions", "10", "--truth", str(blocker / "truth.json"))
    assert not Content.objects.filter(slug__startswith="gen-").exists()

    generate(*SMALL, "--seed", "8")
    with pytest.raises(CommandError, match="--replace"):
        generate("--items", "301", "--readers", "30", "--interactions", "3000", "--end", "2025-06-01", "--seed", "8")
    with pytest.raises(CommandError, match="--replace"):
        generate(*SMALL[:-1], "2025-07-01", "--seed", "8")
    assert Content.objects.filter(slug__startswith="gen-s8-").count() == 300
