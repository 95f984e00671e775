"""The batch writer behind every import: rows in, catalog items or customer messages out, in batches.

Each batch of up to BATCH_SIZE rows is cleaned, matched against what exists, and written in one
transaction with bulk statements (items, their social side, tags and authors, revisions, row errors and
the job's counts together), so a batch is all there or not at all. When the database refuses a batch
(a constraint the checks missed, a race with another import), it is retried row by row, each in its
own transaction: the good rows are written and the refused one becomes a row error.

Matching: an item with the same (source, external id) is updated when its content hash changed (its
previous text kept as a ContentRevision) and skipped otherwise; failing that, an item the
DuplicateFinder names (same canonical URL, same hash, near-duplicate text) is corrected the same way;
anything else is created. A record that collides with one created earlier in the same batch waits for
the next batch, so that it meets the committed item.
"""

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.db import DataError, IntegrityError, transaction
from django.db.models import F, Model, Q
from django.utils import timezone
from django.utils.text import slugify

from ..models import (
    Author,
    Content,
    ContentRevision,
    CustomerMessage,
    ImportJob,
    ImportRowError,
    Section,
    SocialPost,
    Tag,
)
from . import cleaning, dedup, rules
from .records import ContentRecord, CustomerRecord, RowError, SourceRow

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
PROGRESS_INTERVAL_S = 0.5
# Past this many stored row errors a job only counts its failures (the first ones show what is wrong).
MAX_STORED_ROW_ERRORS = 10_000
# This many failed rows before any row went through: the file is not what the job says it is.
GIVE_UP_AFTER = 1_000
RAW_CHARS = 2000
TITLE_CHARS = Content._meta.get_field("title").max_length
URL_CHARS = Content._meta.get_field("url").max_length
EXTERNAL_ID_CHARS = Content._meta.get_field("external_id").max_length
SLUG_CHARS = Content._meta.get_field("slug").max_length
SOCIAL_TITLE_CHARS = 100
MAX_CACHED_NAMES = 100_000


class ImportAborted(Exception):
    """The import stopped on purpose; the message says why, for people."""


@dataclass
class ImportProgress:
    """Where an import stands, as reported after each batch."""

    fraction: float = 0.0
    rows_seen: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass
class _Result:
    """What writing one batch did."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    written: list[tuple[int, ContentRecord]] = field(default_factory=list)  # for the DuplicateFinder
    leftover: list[SourceRow] = field(default_factory=list)  # rows to write in the next batch


def job_source(job: ImportJob) -> str:
    """The `source` of the items a job writes: feed:<id> for a feed, else the job's source option."""
    if job.feed_id:
        return f"feed:{job.feed_id}"
    return str((job.options or {}).get("source") or f"file:{job.filename}")[:100]


def rows_write(
    *,
    job: ImportJob,
    rows: Iterable[SourceRow],
    progress: Callable[[], float] | None = None,
    on_batch: Callable[[ImportProgress], None] | None = None,
) -> ImportProgress:
    """Write `rows` for `job` batch by batch, adding to its counts and row errors; returns the totals.

    `progress` gives the fraction read (stored at most every PROGRESS_INTERVAL_S); `on_batch` hears
    after each batch. Raises ImportAborted when the first GIVE_UP_AFTER rows all failed.
    """
    writer: _BatchWriter = _CustomerWriter(job) if job.target == ImportJob.Target.CUSTOMER else _ContentWriter(job)
    state = ImportProgress()
    stored_errors = ImportRowError.objects.filter(job=job).count()
    last_progress = 0.0
    pending: list[SourceRow] = []
    source = iter(rows)
    stopped: Exception | None = None
    while True:
        if stopped is None:
            try:
                _fill(pending, source, BATCH_SIZE)
            except Exception as exc:  # the reader gave up: write the rows it read before, then say why
                stopped = exc
        if not pending:
            break
        fraction = None  # stored with this batch's counts when PROGRESS_INTERVAL_S has passed
        if progress is not None:
            state.fraction = round(min(max(progress(), 0.0), 1.0), 4)
            if time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
                fraction, last_progress = state.fraction, time.monotonic()
        result = writer.write_committed(pending, fraction=fraction, stored_errors=stored_errors)
        stored_errors += min(len(result.errors), max(MAX_STORED_ROW_ERRORS - stored_errors, 0))
        pending = result.leftover
        state.rows_seen += result.rows
        state.created += result.created
        state.updated += result.updated
        state.skipped += result.skipped
        state.failed += len(result.errors)
        if on_batch is not None:
            on_batch(state)
        if state.failed >= GIVE_UP_AFTER and not (state.created or state.updated or state.skipped):
            first = ImportRowError.objects.filter(job=job).order_by("line").first()
            example = f" (line {first.line}: {first.message})" if first else ""
            raise ImportAborted(
                f"The first {state.failed:,} rows all failed{example}: check the file's format, target and "
                "column mapping."
            )
    if stopped is not None:
        raise stopped
    return state


def _fill(pending: list[SourceRow], rows: Iterator[SourceRow], size: int) -> None:
    """Read rows into `pending` until it holds `size` (appending as it goes, so a failing reader loses none)."""
    while len(pending) < size:
        row = next(rows, None)
        if row is None:
            return
        pending.append(row)


class _BatchWriter:
    def __init__(self, job: ImportJob):
        self.job = job
        self.source = job_source(job)

    def write(self, rows: list[SourceRow]) -> _Result:
        raise NotImplementedError

    def committed(self, result: _Result) -> None:
        """Called once a batch's transaction committed."""

    def forget(self) -> None:
        """Drop whatever was cached from a transaction that rolled back."""

    def write_committed(self, rows: list[SourceRow], *, fraction: float | None, stored_errors: int) -> _Result:
        """Write `rows` in one transaction, or row by row when the database refuses the batch."""
        try:
            with transaction.atomic():
                result = self.write(rows)
                self._record(result, fraction=fraction, stored_errors=stored_errors)
        except (IntegrityError, DataError):
            logger.info("import %s: a batch was refused; writing its rows one by one", self.job.pk, exc_info=True)
            self.forget()
            return self._write_one_by_one(rows, fraction=fraction, stored_errors=stored_errors)
        self.committed(result)
        return result

    def _write_one_by_one(self, rows: list[SourceRow], *, fraction: float | None, stored_errors: int) -> _Result:
        total = _Result()
        queue = list(rows)
        while queue:
            row = queue.pop(0)
            try:
                with transaction.atomic():
                    result = self.write([row])
                    self._record(result, fraction=fraction, stored_errors=stored_errors + len(total.errors))
            except (IntegrityError, DataError) as exc:
                self.forget()
                message = f"The database refused the row: {str(exc).strip().splitlines()[0][:500]}"
                record = row.record
                error = RowError(line=row.line, message=message, external_id=record.external_id if record else "")
                result = _Result(rows=1, errors=[error])
                with transaction.atomic():
                    self._record(result, fraction=fraction, stored_errors=stored_errors + len(total.errors))
            else:
                self.committed(result)
            queue[:0] = result.leftover
            total.rows += result.rows
            total.created += result.created
            total.updated += result.updated
            total.skipped += result.skipped
            total.errors.extend(result.errors)
        return total

    def _record(self, result: _Result, *, fraction: float | None, stored_errors: int) -> None:
        room = max(MAX_STORED_ROW_ERRORS - stored_errors, 0)
        if result.errors and room:
            ImportRowError.objects.bulk_create(
                ImportRowError(
                    job_id=self.job.pk,
                    line=max(e.line, 0),
                    external_id=e.external_id[:300],
                    field=e.field[:100],
                    message=e.message,
                    raw=e.raw[:RAW_CHARS],
                )
                for e in result.errors[:room]
            )
        updates: dict = {
            "rows_seen": F("rows_seen") + result.rows,
            "created_count": F("created_count") + result.created,
            "updated_count": F("updated_count") + result.updated,
            "skipped_count": F("skipped_count") + result.skipped,
            "failed_count": F("failed_count") + len(result.errors),
        }
        if fraction is not None:
            updates["progress"] = fraction
        ImportJob.objects.filter(pk=self.job.pk).update(**updates)


# --- Catalog items (articles, videos, podcasts, social posts) ---------------------------------


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
    row: SourceRow
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


class _ContentWriter(_BatchWriter):
    def __init__(self, job: ImportJob):
        super().__init__(job)
        self.sections = _Names(Section)
        self.tags = _Names(Tag)
        self.authors = _Names(Author)
        self.rules = rules.RuleSet.load()
        self.finder = dedup.DuplicateFinder()
        self.now = timezone.now()

    def forget(self) -> None:
        for names in (self.sections, self.tags, self.authors):
            names.ids.clear()

    def committed(self, result: _Result) -> None:
        for content_id, record in result.written:
            self.finder.add(content_id, record)

    def write(self, rows: list[SourceRow]) -> _Result:
        result = _Result()
        records = self._clean(rows, result)
        plans = self._match(records, result)
        if plans:
            self._apply(plans, result)
        return result

    def _clean(self, rows: list[SourceRow], result: _Result) -> list[tuple[SourceRow, ContentRecord]]:
        valid = [row for row in rows if row.record is not None and row.error is None]
        try:
            cleaned = cleaning.clean_contents([row.record for row in valid])
        except Exception:
            logger.warning("import %s: batch cleaning failed; cleaning one by one", self.job.pk, exc_info=True)
            cleaned = []
            for row in valid:
                try:
                    cleaned.append(cleaning.clean_content(row.record))
                except Exception as exc:
                    cleaned.append(None)
                    result.errors.append(_row_error(row, f"The text could not be cleaned: {exc}"))
        out = []
        for row, record in zip(valid, cleaned, strict=True):
            if record is None:
                continue
            problem = self._check(record)
            if problem:
                result.errors.append(_row_error(row, problem[1], field=problem[0]))
            else:
                out.append((row, record))
        # Error rows keep their place in the count; their order among the batch does not matter.
        result.errors.extend(
            row.error or RowError(line=row.line, message="The row holds no record.")
            for row in rows
            if row.error is not None or row.record is None
        )
        return out

    def _check(self, record: ContentRecord) -> tuple[str, str] | None:
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

    def _match(self, records: list[tuple[SourceRow, ContentRecord]], result: _Result) -> list[_Plan]:
        ids = [r.external_id for _, r in records if r.external_id]
        by_external_id = (
            {
                c.external_id: c
                for c in Content.objects.filter(source=self.source, external_id__in=ids).select_related("social")
            }
            if ids
            else {}
        )
        # Records without an item of their own id go to the DuplicateFinder, all in one call.
        unmatched = [i for i, (_, r) in enumerate(records) if by_external_id.get(r.external_id) is None]
        duplicates = dict(zip(unmatched, self.finder.match_many([records[i][1] for i in unmatched]), strict=True))
        duplicate_ids = {m.content_id for m in duplicates.values() if m is not None and m.content_id is not None}
        by_id = (
            {c.pk: c for c in Content.objects.filter(pk__in=duplicate_ids).select_related("social")}
            if duplicate_ids
            else {}
        )
        found: list[tuple[SourceRow, ContentRecord, Content | None, bool]] = []
        for i, (row, record) in enumerate(records):
            match = duplicates.get(i)
            if match is None:
                found.append((row, record, by_external_id.get(record.external_id), False))
            else:  # an existing item, or (batch_index) an earlier record of this batch
                found.append((row, record, by_id.get(match.content_id), match.batch_index is not None))
        plans: list[_Plan] = []
        taken: set[object] = set()  # keys of this batch's plans; a record that meets one waits for the next batch
        for index, (row, record, existing, repeats_batch) in enumerate(found):
            keys = {("hash", record.content_hash)}
            if record.external_id:
                keys.add(("id", record.external_id))
            if record.canonical_url:
                keys.add(("url", record.canonical_url))
            if existing is not None:
                keys.add(("pk", existing.pk))
            if repeats_batch or keys & taken:
                result.leftover = [r for r, *_ in found[index:]]
                break
            taken |= keys
            result.rows += 1
            plan = _Plan(row=row, record=record, existing=existing)
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
        # Rows that failed before matching count in this batch; leftover rows count when they are written.
        result.rows += len(result.errors)
        return plans

    def _apply(self, plans: list[_Plan], result: _Result) -> None:
        ruled = [self.rules.apply(p.record) for p in plans]
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
        through_tags = Content.tags.through
        through_authors = Content.authors.through
        through_tags.objects.bulk_create(
            [through_tags(content_id=p.existing.pk, tag_id=t) for p, ids in tag_links for t in ids],
            ignore_conflicts=True,
        )
        through_authors.objects.bulk_create(
            [
                through_authors(content_id=p.existing.pk, author_id=author_names[a])
                for p in plans
                for a in p.record.authors
                if a in author_names
            ],
            ignore_conflicts=True,
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


# --- Customer messages ------------------------------------------------------------------------

CUSTOMER_UPDATE_FIELDS = [
    "channel",
    "subject",
    "text",
    "received_at",
    "labels",
    "training_consent",
    "language",
    "content_hash",
    "job",
]


class _CustomerWriter(_BatchWriter):
    def write(self, rows: list[SourceRow]) -> _Result:
        result = _Result()
        records: list[tuple[SourceRow, CustomerRecord]] = []
        for row in rows:
            if row.record is None or row.error is not None:
                result.errors.append(row.error or RowError(line=row.line, message="The row holds no record."))
                continue
            try:
                record = cleaning.clean_customer(row.record)
            except Exception as exc:
                result.errors.append(_row_error(row, f"The text could not be cleaned: {exc}"))
                continue
            record.source = (record.source or self.source)[:100]
            if not record.text:
                result.errors.append(_row_error(row, "The text is empty once cleaned.", field="text"))
            elif len(record.external_id) > 300:
                result.errors.append(_row_error(row, "The id is longer than 300 characters.", field="external_id"))
            else:
                records.append((row, record))
        result.rows = len(result.errors)
        existing = self._existing([r for _, r in records])
        creates, updates, taken = [], [], set()
        for index, (_, record) in enumerate(records):
            key = _customer_key(record)
            if key in taken:
                result.leftover = [r for r, _ in records[index:]]
                break
            taken.add(key)
            result.rows += 1
            message = existing.get(key)
            values = {
                "channel": record.channel,
                "subject": record.subject,
                "text": record.text,
                "received_at": record.received_at,
                "labels": record.labels,
                "training_consent": record.training_consent,
                "language": record.language[:16],
                "content_hash": record.content_hash,
            }
            if message is None:
                creates.append(
                    CustomerMessage(source=record.source, external_id=record.external_id, job_id=self.job.pk, **values)
                )
                result.created += 1
            elif any(getattr(message, name) != value for name, value in values.items()):
                for name, value in values.items():
                    setattr(message, name, value)
                message.job_id = self.job.pk
                updates.append(message)
                result.updated += 1
            else:
                result.skipped += 1
        CustomerMessage.objects.bulk_create(creates)
        if updates:
            CustomerMessage.objects.bulk_update(updates, CUSTOMER_UPDATE_FIELDS)
        return result

    def _existing(self, records: list[CustomerRecord]) -> dict[tuple, CustomerMessage]:
        """The stored messages these records are, by (source, id) or, for records without an id, (source, hash)."""
        with_id = [r for r in records if r.external_id]
        without = [r for r in records if not r.external_id]
        found: dict[tuple, CustomerMessage] = {}
        if with_id:
            query = CustomerMessage.objects.filter(
                source__in={r.source for r in with_id}, external_id__in={r.external_id for r in with_id}
            )
            for message in query:
                found[("id", message.source, message.external_id)] = message
        if without:
            query = CustomerMessage.objects.filter(
                source__in={r.source for r in without},
                external_id="",
                content_hash__in={r.content_hash for r in without},
            )
            for message in query:
                found.setdefault(("hash", message.source, message.content_hash), message)
        return found


def _customer_key(record: CustomerRecord) -> tuple:
    if record.external_id:
        return ("id", record.source, record.external_id)
    return ("hash", record.source, record.content_hash)
