"""Writing batches of customer messages: support tickets, comments and e-mails, kept apart from the catalog.

A message with the same (source, external id), or without an id the same (source, content hash), is
updated when anything about it changed (a withdrawn consent counts) and skipped otherwise.
"""

from ..models import CustomerMessage
from . import cleaning
from .records import CustomerRecord, RowError, SourceRow
from .writer import BatchResult, BatchWriter, Prepared

EXTERNAL_ID_CHARS = CustomerMessage._meta.get_field("external_id").max_length
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


class CustomerWriter(BatchWriter):
    def prepare(self, rows: list[SourceRow]) -> list[Prepared]:
        """Clean subject and text, language and hash; no database."""
        items = []
        for row in rows:
            if row.record is None or row.error is not None:
                error = row.error or RowError(line=row.line, message="The row holds no record.")
                items.append(Prepared(line=row.line, error=error))
                continue
            try:
                record = cleaning.clean_customer(row.record)
            except Exception as exc:
                items.append(Prepared(line=row.line, error=_error(row, f"The text could not be cleaned: {exc}")))
                continue
            record.source = (record.source or self.source)[:100]
            if not record.text:
                items.append(Prepared(line=row.line, error=_error(row, "The text is empty once cleaned.", "text")))
            elif len(record.external_id) > EXTERNAL_ID_CHARS:
                message = f"The id is longer than {EXTERNAL_ID_CHARS} characters."
                items.append(Prepared(line=row.line, error=_error(row, message, "external_id")))
            else:
                items.append(Prepared(line=row.line, record=record))
        return items

    def write(self, items: list[Prepared]) -> BatchResult:
        result = BatchResult()
        result.errors.extend(item.error for item in items if item.error is not None)
        result.rows = len(result.errors)
        ready = [item for item in items if item.record is not None]
        existing = self._existing([item.record for item in ready])
        creates, updates, taken = [], [], set()
        for index, item in enumerate(ready):
            record = item.record
            key = _customer_key(record)
            if key in taken:
                result.leftover = ready[index:]
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


def _error(row: SourceRow, message: str, field: str = "") -> RowError:
    return RowError(
        line=row.line, message=message, field=field, external_id=row.record.external_id if row.record else ""
    )
