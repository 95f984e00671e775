"""`demo_seed`: write the demo catalog, its readers and their histories, and the demo accounts.

Idempotent: every row is upserted by its natural key (slug, username, idempotency key), so a second
run changes no counts; it also resets demo content that was edited since to its written state.
Publication dates are relative to today (midnight UTC), so the demo always looks current.
"""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TextIO

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from personalization.models import Author, Content, Interaction, ReaderProfile, Section, Tag
from personalization.roles import EDITORS, STAFF
from personalization.understanding.defaults import intents_load_defaults

from .catalog import DemoCatalog, DemoItem, demo_catalog
from .history import HistoryEvent, reading_history

KEY_PREFIX = "demo:"
# Demo-only credentials, printed by `seed_demo`; never use these outside a demo.
ADMIN_PASSWORD = "admin-demo-pass"  # noqa: S105
EDITOR_PASSWORD = "editor-demo-pass"  # noqa: S105
STAFF_PASSWORD = "staff-demo-pass"  # noqa: S105
READER_PASSWORD = "reader-demo-pass"  # noqa: S105
BATCH = 500


def demo_credentials() -> list[tuple[str, str, str]]:
    """(username, password, role) for every account `demo_seed` creates."""
    readers = [(r.username, READER_PASSWORD, "reader") for r in demo_catalog().readers]
    return [
        ("admin", ADMIN_PASSWORD, "superuser"),
        ("editor", EDITOR_PASSWORD, f"{EDITORS} group, admin access"),
        ("staff", STAFF_PASSWORD, f"{STAFF} group, admin access"),
        *readers,
    ]


def demo_anchor(now: datetime | None = None) -> datetime:
    """Midnight UTC of today: the fixed point demo dates count back from, so reruns on a day agree."""
    now = (now or timezone.now()).astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _published_at(item: DemoItem, anchor: datetime) -> datetime | None:
    if item.days_ago is None:
        return None
    return anchor - timedelta(days=item.days_ago) + timedelta(hours=item.hour)


def _say(stdout: TextIO | None, text: str) -> None:
    if stdout is not None:
        stdout.write(text + "\n")


def _upsert(model: type[models.Model], rows: list[models.Model], fields: list[str]) -> dict[str, int]:
    """Insert or update `rows` by slug; the slug → id map of them all."""
    model.objects.bulk_create(rows, update_conflicts=True, unique_fields=["slug"], update_fields=fields)
    return dict(model.objects.filter(slug__in=[r.slug for r in rows]).values_list("slug", "id"))


def _upsert_named(model: type[models.Model], rows: list[models.Model], fields: list[str], *, update: bool) -> dict:
    """Like `_upsert` for models whose name is unique too: a row already there under the same name but
    another slug (made by hand in the admin) is used as it is. The demo slug → id map of them all."""
    taken = dict(model.objects.filter(name__in=[r.name for r in rows]).values_list("name", "slug"))
    fresh = [r for r in rows if taken.get(r.name, r.slug) == r.slug]
    if update:
        ids = _upsert(model, fresh, fields)
    else:
        model.objects.bulk_create(fresh, ignore_conflicts=True)
        ids = dict(model.objects.filter(slug__in=[r.slug for r in fresh]).values_list("slug", "id"))
    by_name = dict(model.objects.filter(name__in=[r.name for r in rows]).values_list("name", "id"))
    return {r.slug: ids.get(r.slug, by_name.get(r.name)) for r in rows}


def demo_taxonomy_write(*, update: bool = True) -> tuple[dict[str, int], dict[str, int]]:
    """The demo's sections and tags, written (or only added where missing, if not `update`).

    Returns the section and tag ids keyed by their demo slugs. Shared with `generate_catalog`,
    whose items use the same sections and tags.
    """
    catalog = demo_catalog()
    sections = [
        Section(slug=s.slug, name=s.name, description=s.description, position=s.position) for s in catalog.sections
    ]
    tags = [Tag(slug=t.slug, name=t.name) for t in catalog.tags]
    return (
        _upsert_named(Section, sections, ["name", "description", "position"], update=update),
        _upsert_named(Tag, tags, ["name"], update=update),
    )


def _sync_links(through: type[models.Model], left: str, right: str, wanted: set[tuple[int, int]], lefts) -> None:
    """Make the link rows of `lefts` in an M2M table exactly `wanted`."""
    existing = set(through.objects.filter(**{f"{left}__in": lefts}).values_list(left, right))
    stale = existing - wanted
    if stale:
        condition = Q()
        for a, b in stale:
            condition |= Q(**{left: a, right: b})
        through.objects.filter(condition).delete()
    missing = wanted - existing
    through.objects.bulk_create([through(**{left: a, right: b}) for a, b in missing], batch_size=BATCH)


def _write_catalog(catalog: DemoCatalog, anchor: datetime) -> dict[str, int]:
    section_ids, tag_ids = demo_taxonomy_write()
    author_ids = _upsert(
        Author, [Author(slug=a.slug, name=a.name, bio=a.bio) for a in catalog.authors], ["name", "bio"]
    )
    contents = []
    for item in catalog.items:
        published_at = _published_at(item, anchor)
        contents.append(
            Content(
                slug=item.slug,
                kind=item.kind,
                title=item.title,
                summary=item.summary,
                body=item.body,
                url="",
                language="en",
                section_id=section_ids[item.section],
                status=item.status,
                published_at=published_at,
                embargo_until=published_at + timedelta(days=item.embargo_days)
                if published_at and item.embargo_days
                else None,
                duration_seconds=item.duration_seconds,
            )
        )
    fields = [
        "kind", "title", "summary", "body", "url", "language", "section", "status",
        "published_at", "embargo_until", "duration_seconds", "updated_at",
    ]  # fmt: skip
    content_ids = _upsert(Content, contents, fields)
    ids = list(content_ids.values())
    _sync_links(
        Content.tags.through,
        "content_id",
        "tag_id",
        {(content_ids[i.slug], tag_ids[t]) for i in catalog.items for t in i.tags},
        ids,
    )
    _sync_links(
        Content.authors.through,
        "content_id",
        "author_id",
        {(content_ids[i.slug], author_ids[a]) for i in catalog.items for a in i.authors},
        ids,
    )
    return content_ids


def _account(username: str, password: str, *, groups: Iterable[Group] = (), **fields) -> models.Model:
    """The user `username` with `fields` set; the password only when the account is new."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is None:
        user = user_model(username=username)
        user.set_password(password)
    for name, value in fields.items():
        setattr(user, name, value)
    user.save()
    if groups:
        user.groups.add(*groups)
    return user


def _write_accounts(catalog: DemoCatalog) -> dict[str, int]:
    """Staff accounts and demo readers; the username → id map of the readers."""
    # The roles migration creates these groups with their permissions; get_or_create only covers a database
    # where it has not run, and never touches permissions.
    editors, _ = Group.objects.get_or_create(name=EDITORS)
    staff, _ = Group.objects.get_or_create(name=STAFF)
    _account("admin", ADMIN_PASSWORD, email="admin@example.com", is_staff=True, is_superuser=True)
    _account("editor", EDITOR_PASSWORD, groups=[editors], email="editor@example.com", is_staff=True)
    _account("staff", STAFF_PASSWORD, groups=[staff], email="staff@example.com", is_staff=True)
    reader_ids = {}
    for reader in catalog.readers:
        user = _account(
            reader.username,
            READER_PASSWORD,
            email=f"{reader.username}@example.com",
            first_name=reader.first_name,
            last_name=reader.last_name,
        )
        ReaderProfile.objects.update_or_create(
            user=user, defaults={"preferences": reader.preferences, "training_consent": reader.training_consent}
        )
        reader_ids[reader.username] = user.pk
    return reader_ids


def _write_histories(events: list[HistoryEvent], content_ids: dict[str, int], reader_ids: dict[str, int]) -> None:
    rows = [
        Interaction(
            user_id=reader_ids[e.username],
            session_key="",
            content_id=content_ids[e.slug],
            kind=e.kind,
            value=e.value,
            source=e.source,
            idempotency_key=e.key,
            occurred_at=e.occurred_at,
        )
        for e in events
    ]
    Interaction.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["idempotency_key"],
        update_fields=["user", "content", "kind", "value", "source", "occurred_at"],
        batch_size=BATCH,
    )
    wanted = {e.key for e in events}
    existing = Interaction.objects.filter(user_id__in=reader_ids.values(), idempotency_key__startswith=KEY_PREFIX)
    stale = [k for k in existing.values_list("idempotency_key", flat=True) if k not in wanted]
    for start in range(0, len(stale), BATCH):
        Interaction.objects.filter(idempotency_key__in=stale[start : start + BATCH]).delete()
    last_seen: dict[str, datetime] = {}
    for e in events:
        last_seen[e.username] = max(last_seen.get(e.username, e.occurred_at), e.occurred_at)
    for username, seen_at in last_seen.items():
        ReaderProfile.objects.filter(user_id=reader_ids[username]).update(last_seen_at=seen_at)


def demo_counts(catalog: DemoCatalog | None = None, *, now: datetime | None = None) -> dict[str, int]:
    """What of the demo is in the database now: items by state, accounts, readers and their signals."""
    catalog = catalog or demo_catalog()
    now = now or timezone.now()
    contents = Content.objects.filter(slug__in=[i.slug for i in catalog.items])
    readers = [r.username for r in catalog.readers]
    published = contents.filter(status=Content.Status.PUBLISHED)
    return {
        "sections": Section.objects.filter(slug__in=[s.slug for s in catalog.sections]).count(),
        "tags": Tag.objects.filter(slug__in=[t.slug for t in catalog.tags]).count(),
        "authors": Author.objects.filter(slug__in=[a.slug for a in catalog.authors]).count(),
        "items": contents.count(),
        "visible": contents.published(now).count(),
        "embargoed": published.filter(embargo_until__gt=now).count(),
        "drafts": contents.filter(status=Content.Status.DRAFT).count(),
        "archived": contents.filter(status=Content.Status.ARCHIVED).count(),
        "accounts": get_user_model().objects.filter(username__in=["admin", "editor", "staff", *readers]).count(),
        "readers": ReaderProfile.objects.filter(user__username__in=readers).count(),
        "interactions": Interaction.objects.filter(
            user__username__in=readers, idempotency_key__startswith=KEY_PREFIX
        ).count(),
    }


def demo_seed(*, stdout: TextIO | None = None, now: datetime | None = None) -> dict[str, int]:
    """Write the demo catalog, accounts and reading histories; the counts of what is there afterwards."""
    catalog = demo_catalog()
    anchor = demo_anchor(now)
    with transaction.atomic():
        content_ids = _write_catalog(catalog, anchor)
        _say(stdout, f"Catalog: {len(content_ids)} items in {len(catalog.sections)} sections")
        reader_ids = _write_accounts(catalog)
        _say(stdout, f"Accounts: admin, editor, staff and {len(reader_ids)} readers")
        published = [
            (item, _published_at(item, anchor))
            for item in catalog.items
            if item.status == "published" and not item.embargo_days
        ]
        events = [e for reader in catalog.readers for e in reading_history(reader, published, until=anchor)]
        _write_histories(events, content_ids, reader_ids)
        _say(stdout, f"Reading histories: {len(events)} interactions")
        _say(stdout, f"Default intents: {intents_load_defaults()} examples added")
    return demo_counts(catalog, now=now)
