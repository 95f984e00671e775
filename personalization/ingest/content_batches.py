"""Writing batches of catalog items: articles, videos, podcasts and social posts.

Matching: an item with the same (source, external id) is updated when its content hash changed (its
previous text kept as a ContentRevision) and skipped otherwise; failing that, an item the
DuplicateFinder names (same canonical URL, same hash, near-duplicate text) is corrected the same way;
anything else is created. A record that repeats one created earlier in the same batch waits for the
next batch, so that it meets the committed item. Sections, tags and authors are got or created in
bulk; the items, their social side, revisions, tag and author links and fingerprints are written with
one bulk statement each.
"""

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from django.db import IntegrityError, connection, transaction
from django.db.models import Model, Q
from django.utils import timezone
from django.utils.text import slugify

from ..embeddings.tasks import contents_embed
from ..models import Author, Content, ContentRevision, ImportJob, Section, SocialPost, Tag
from . import cleaning, dedup, rules
from .records import ContentRecord, RowError, SourceRow
from .writer import BatchResult, BatchWriter, Prepared

logger = logging.getLogger(__name__)

TITLE_CHARS = Content._meta.get_field("title").max_length
URL_CHARS = Content._meta.get_field("url").max_length
EXTERNAL_ID_CHARS = Content._meta.get_field("external_id").max_length
SLUG_CHARS = Content._meta.get_field("slug").max_length
SOCIAL_TITLE_CHARS = 100
MAX_CACHED_NAMES = 100_000


class _Names:
    """Get-or-create of sections, tags or authors by name, in bulk, with a cache of name → id."""

    def __init__(self, model: type[Model]):
        self.model = model
        self.name_chars = model._meta.get_field("name").max_length
        self.slug_chars = model._meta.get_field("slug").max_length
        self.ids: dict[str, int] = {}

    def _slug(self, name: str) -> str:
        slug = slugify(name)[: self.slug_chars].strip("-")
        if not slug:
            slug = "x-" + hashlib.sha1(name.encode()).hexdigest()[:10]  # noqa: S324 - a name, not a secret
        return slug

    def resolve(self, names: Iterable[str]) -> dict[str, int]:
        """name → id for every name, creating the missing ones."""
        keys = {name: name[: self.name_chars].strip() for name in names}
        if len(self.ids) > MAX_CACHED_NAMES:
            self.ids.clear()
        wanted = set(keys.values()) - {""} - set(self.ids)
        if wanted:
            self._fetch(wanted)
            missing = wanted - set(self.ids)
            if missing:
                by_slug: dict[str, str] = {}
                for name in sorted(missing):
                    by_slug.setdefault(self._slug(name), name)
                self.model.objects.bulk_create(
                    [self.model(name=name, slug=slug) for slug, name in by_slug.items()], ignore_conflicts=True
                )
                self._fetch(missing)
            for name in wanted - set(self.ids):  # lost a race, or a clash the lookups above do not see
                raise IntegrityError(f"{self.model.__name__} {name!r} could not be created.")
        return {name: self.ids[key] for name, key in keys.items() if key}

    def _fetch(self, names: set[str]) -> None:
        slug_of = {n: self._slug(n) for n in names}
        found = self.model.objects.filter(Q(name__in=names) | Q(slug__in=set(slug_of.values())))
        by_name, by_slug = {}, {}
        for pk, name, slug in found.values_list("id", "name", "slug"):
            by_name[name] = pk
            by_slug[slug] = pk
        for name in names:
            pk = by_name.get(name) or by_slug.get(slug_of[name])
            if pk is not None:
                self.ids[name] = pk


@dataclass
class _Plan:
    item: Prepared
    record: ContentRecord
    existing: Content | None = None
    revise: bool = False  # the text changed: keep a revision and update
    social_changed: bool = False


CONTENT_UPDATE_FIELDS = [
    "title",
    "summary",
    "body",
    "url",
    "canonical_url",
    "content_hash",
    "language",
    "published_at",
    "section",
    "updated_at",
]


class ContentWriter(BatchWriter):
    """Catalog items and social posts; one per job (it keeps the job's caches and DuplicateFinder)."""

    def __init__(self, job: ImportJob):
        super().__init__(job)
        self.sections = _Names(Section)
        self.tags = _Names(Tag)
        self.authors = _Names(Author)
        self.rules = rules.RuleSet.load()
        self.finder = dedup.DuplicateFinder()

    def forget(self) -> None:
        for names in (self.sections, self.tags, self.authors):
            names.ids.clear()

    def committed(self, result: BatchResult) -> None:
        for content_id, record in result.written:
            self.finder.add(content_id, record)
        if result.written:
            # New and corrected items get their embeddings from the worker; a broker that is down only
            # delays them until the periodic sweep (robust: logged, not raised).
            ids = [content_id for content_id, _ in result.written]
            transaction.on_commit(partial(contents_embed.delay, ids), robust=True)

    # --- In the reader thread: no database ------------------------------------------------------

    def prepare(self, rows: list[SourceRow]) -> list[Prepared]:
        """Clean text, language, canonical URL and hash; checks; mapping rules; fingerprints computed."""
        valid = [row for row in rows if row.record is not None and row.error is None]
        try:
            cleaned: list[ContentRecord | None] = list(cleaning.clean_contents([row.record for row in valid]))
        except Exception:
            logger.warning("import %s: batch cleaning failed; cleaning one by one", self.job.pk, exc_info=True)
            cleaned = []
            for row in valid:
                try:
                    cleaned.append(cleaning.clean_content(row.record))
                except Exception as exc:
                    cleaned.append(None)
                    row.error = _row_error(row, f"The text could not be cleaned: {exc}")
        by_row = {id(row): record for row, record in zip(valid, cleaned, strict=True)}
        items = []
        for row in rows:
            record = by_row.get(id(row))
            if record is None:
                error = row.error or RowError(line=row.line, message="The row holds no record.")
                items.append(Prepared(line=row.line, error=error))
                continue
            problem = _check(record)
            if problem:
                items.append(Prepared(line=row.line, error=_row_error(row, problem[1], field=problem[0])))
                continue
            dedup.record_signature(record)  # computed here, off the writing thread; the finder reuses it
            items.append(Prepared(line=row.line, record=record, ruled=self.rules.apply(record)))
        return items

    # --- In the batch's transaction -------------------------------------------------------------

    def write(self, items: list[Prepared]) -> BatchResult:
        result = BatchResult()
        result.errors.extend(item.error for item in items if item.error is not None)
        result.rows = len(result.errors)
        plans = self._match([item for item in items if item.record is not None], result)
        if plans:
            self._apply(plans, result)
        return result

    def _match(self, items: list[Prepared], result: BatchResult) -> list[_Plan]:
        records: list[ContentRecord] = [item.record for item in items]  # type: ignore[misc]
        ids = [r.external_id for r in records if r.external_id]
        by_external_id = (
            {
                c.external_id: c
                for c in Content.objects.filter(source=self.source, external_id__in=ids).select_related("social")
            }
            if ids
            else {}
        )
        # Records without an item of their own id go to the DuplicateFinder, all in one call.
        unmatched = [i for i, r in enumerate(records) if by_external_id.get(r.external_id) is None]
        duplicates = dict(zip(unmatched, self.finder.match_many([records[i] for i in unmatched]), strict=True))
        duplicate_ids = {m.content_id for m in duplicates.values() if m is not None and m.content_id is not None}
        by_id = (
            {c.pk: c for c in Content.objects.filter(pk__in=duplicate_ids).select_related("social")}
            if duplicate_ids
            else {}
        )
        plans: list[_Plan] = []
        taken: set[tuple] = set()  # keys of this batch's plans; a record that meets one waits for the next batch
        for index, (item, record) in enumerate(zip(items, records, strict=True)):
            match = duplicates.get(index)
            if match is None:
                existing, repeats_batch = by_external_id.get(record.external_id), False
            else:  # an existing item, or (batch_index) an earlier record of this batch
                existing, repeats_batch = by_id.get(match.content_id), match.batch_index is not None
            keys = {("hash", record.content_hash)}
            if record.external_id:
                keys.add(("id", record.external_id))
            if record.canonical_url:
                keys.add(("url", record.canonical_url))
            if existing is not None:
                keys.add(("pk", existing.pk))
            if repeats_batch or keys & taken:
                result.leftover = items[index:]
                break
            taken |= keys
            result.rows += 1
            plan = _Plan(item=item, record=record, existing=existing)
            if existing is None:
                plans.append(plan)
                result.created += 1
                continue
            plan.revise = existing.content_hash != record.content_hash
            plan.social_changed = record.social is not None and _social_differs(existing, record)
            if plan.revise or plan.social_changed:
                plans.append(plan)
                result.updated += 1
            else:
                result.skipped += 1
        return plans

    def _apply(self, plans: list[_Plan], result: BatchResult) -> None:
        ruled = [p.item.ruled or (None, []) for p in plans]
        # A section named at the source is created only when no rule (nor an existing section) decides.
        section_names = self.sections.resolve(
            p.record.section
            for p, (section_id, _) in zip(plans, ruled, strict=True)
            if p.record.section and not section_id
        )
        tag_names = self.tags.resolve(t for p in plans for t in p.record.tags)
        author_names = self.authors.resolve(a for p in plans for a in p.record.authors)
        now = timezone.now()
        creates: list[tuple[_Plan, Content]] = []
        updates: list[Content] = []
        revisions: list[ContentRevision] = []
        tag_links: list[tuple[_Plan, list[int]]] = []
        for plan, (rule_section, rule_tags) in zip(plans, ruled, strict=True):
            record = plan.record
            section_id = rule_section or section_names.get(record.section)
            tag_ids = list(dict.fromkeys([*(tag_names[t] for t in record.tags if t in tag_names), *rule_tags]))
            tag_links.append((plan, tag_ids))
            if plan.existing is None:
                creates.append((plan, self._new_content(record, section_id, now)))
            elif plan.revise:
                item = plan.existing
                revisions.append(
                    ContentRevision(
                        content_id=item.pk,
                        title=item.title,
                        summary=item.summary,
                        body=item.body,
                        content_hash=item.content_hash,
                        job_id=self.job.pk,
                    )
                )
                item.title, item.summary, item.body = record.title, record.summary, record.body
                item.content_hash = record.content_hash
                item.url = record.url or item.url
                item.canonical_url = record.canonical_url or item.canonical_url
                item.language = record.language or item.language
                item.published_at = record.published_at or item.published_at
                item.section_id = section_id or item.section_id
                item.updated_at = now
                updates.append(item)
        self._assign_slugs([c for _, c in creates])
        Content.objects.bulk_create([c for _, c in creates])
        if updates:
            Content.objects.bulk_update(updates, CONTENT_UPDATE_FIELDS)
        if revisions:
            ContentRevision.objects.bulk_create(revisions)
        for plan, content in creates:
            plan.existing = content
        self._write_social(plans)
        _link(Content.tags.through, "tag_id", [(p.existing.pk, t) for p, ids in tag_links for t in ids])
        _link(
            Content.authors.through,
            "author_id",
            [(p.existing.pk, author_names[a]) for p in plans for a in p.record.authors if a in author_names],
        )
        written = [(c.pk, plan.record) for plan, c in creates] + [(p.existing.pk, p.record) for p in plans if p.revise]
        if written:
            dedup.fingerprints_store(items=written)
        result.written.extend(written)

    def _new_content(self, record: ContentRecord, section_id: int | None, now) -> Content:
        published_at = record.published_at
        if published_at is None and record.status == Content.Status.PUBLISHED:
            published_at = now  # published items need a date to be seen; the import is the best one known
        return Content(
            kind=record.kind,
            title=record.title,
            summary=record.summary,
            body=record.body,
            url=record.url,
            language=record.language,
            section_id=section_id,
            status=record.status,
            published_at=published_at,
            duration_seconds=record.duration_seconds,
            source=self.source,
            external_id=record.external_id,
            canonical_url=record.canonical_url,
            content_hash=record.content_hash,
        )

    def _assign_slugs(self, items: list[Content]) -> None:
        """Readable unique slugs: the title's, or with a short hash of the item's identity when that is taken."""
        bases = [(slugify(c.title)[: SLUG_CHARS - 13].strip("-") or "item") for c in items]
        wanted = list(bases)
        for attempt in range(3):
            taken = set(Content.objects.filter(slug__in=wanted).values_list("slug", flat=True))
            seen: set[str] = set()
            clash = False
            for i, slug in enumerate(wanted):
                if slug in taken or slug in seen:
                    clash = True
                    identity = f"{self.source}|{items[i].external_id}|{items[i].content_hash}|{i}|{attempt}"
                    wanted[i] = f"{bases[i]}-{hashlib.sha256(identity.encode()).hexdigest()[: 6 + 2 * attempt]}"
                seen.add(wanted[i])
            if not clash:
                break
        for item, slug in zip(items, wanted, strict=True):
            item.slug = slug

    def _write_social(self, plans: list[_Plan]) -> None:
        creates, updates = [], []
        for plan in plans:
            social = plan.record.social
            if social is None:
                continue
            values = {
                "platform": social.platform[:32],
                "handle": social.handle[:100],
                "likes": social.likes,
                "shares": social.shares,
                "comments": social.comments,
                "views": social.views,
            }
            current = _social_of(plan.existing)
            if current is None:
                creates.append(SocialPost(content_id=plan.existing.pk, **values))
            else:
                for name, value in values.items():
                    setattr(current, name, value)
                updates.append(current)
        if creates:
            SocialPost.objects.bulk_create(creates)
        if updates:
            SocialPost.objects.bulk_update(updates, ["platform", "handle", "likes", "shares", "comments", "views"])


def _link(through: type[Model], column: str, pairs: list[tuple[int, int]]) -> None:
    """Insert (content_id, other id) rows into a many-to-many table, existing ones left as they are.

    On PostgreSQL one INSERT … SELECT FROM unnest(two arrays): building a model instance and two
    placeholders per row cost the writer more than the database's work on the rows.
    """
    if not pairs:
        return
    if connection.vendor != "postgresql":
        through.objects.bulk_create([through(content_id=a, **{column: b}) for a, b in pairs], ignore_conflicts=True)
        return
    quote = connection.ops.quote_name
    sql = (  # identifiers from the model's own metadata, values as parameters
        f"INSERT INTO {quote(through._meta.db_table)} ({quote('content_id')}, {quote(column)}) "  # noqa: S608
        "SELECT * FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [[a for a, _ in pairs], [b for _, b in pairs]])


def _check(record: ContentRecord) -> tuple[str, str] | None:
    """A (field, message) the database would refuse, after filling what cleaning leaves to the writer."""
    if record.kind == Content.Kind.POST and not record.title:
        record.title = _snippet(record.body or record.summary, SOCIAL_TITLE_CHARS)
    if not record.title:
        return "title", "The title is empty once its markup is removed."
    if len(record.title) > TITLE_CHARS:
        record.title = record.title[: TITLE_CHARS - 1].rstrip() + "…"
    if len(record.external_id) > EXTERNAL_ID_CHARS:
        return "external_id", f"The id is longer than {EXTERNAL_ID_CHARS} characters."
    if len(record.url) > URL_CHARS:
        return "url", f"The URL is longer than {URL_CHARS} characters."
    if len(record.canonical_url) > URL_CHARS:
        record.canonical_url = ""
    if not record.content_hash:
        return "body", "The record has no content hash after cleaning."
    record.language = record.language[:16]
    return None


def _social_of(item: Content) -> SocialPost | None:
    try:
        return item.social
    except SocialPost.DoesNotExist:
        return None


def _social_differs(item: Content, record: ContentRecord) -> bool:
    current, social = _social_of(item), record.social
    if current is None or social is None:
        return social is not None
    return (current.platform, current.handle, current.likes, current.shares, current.comments, current.views) != (
        social.platform[:32],
        social.handle[:100],
        social.likes,
        social.shares,
        social.comments,
        social.views,
    )


def _snippet(text: str, limit: int) -> str:
    """The first line of `text`, cut at a word boundary to at most `limit` characters."""
    line = text.strip().split("\n", 1)[0].strip()
    if len(line) <= limit:
        return line
    cut = line[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.")
    return (cut or line[: limit - 1]) + "…"


def _row_error(row: SourceRow, message: str, *, field: str = "") -> RowError:
    return RowError(
        line=row.line, message=message, field=field, external_id=row.record.external_id if row.record else ""
    )
