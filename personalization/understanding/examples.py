"""Intent examples in and out of the database (CSV, CLINC150 JSON, Rasa NLU YAML), and the training set.

The formats themselves are `training.pipelines.intent_data`'s; here they meet the `Intent` and
`IntentExample` rows: an import is all-or-nothing, creates the intents it names and skips examples an
intent already has.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import Count

from personalization.models import OUT_OF_SCOPE, Intent, IntentExample
from training.pipelines.intent_data import FORMATS, IntentDataError, IntentRecord, read_any, write_any

MAX_TEXT = IntentExample._meta.get_field("text").max_length
MAX_NAME = Intent._meta.get_field("name").max_length


class IntentImportError(ValueError):
    """A file that cannot be imported; nothing was written. The message says why, naming lines or intents."""


class TooLittleDataError(ValueError):
    """Intents with too few examples to train on; `counts` holds each one's example count."""

    def __init__(self, message: str, counts: Mapping[str, int]) -> None:
        super().__init__(message)
        self.counts = dict(counts)


@dataclass(frozen=True)
class IntentSpec:
    """How an intent an import creates is set up."""

    action: str
    description: str = ""


@dataclass
class ImportSummary:
    """What an import did: examples created and skipped (already there, or repeated in the file) per intent."""

    created: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    intents_created: list[str] = field(default_factory=list)

    @property
    def created_total(self) -> int:
        return sum(self.created.values())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        intents = f", {len(self.intents_created)} new intents" if self.intents_created else ""
        return f"{self.created_total} examples added, {self.skipped_total} already there{intents}"


def _check_records(records: list[IntentRecord]) -> None:
    if not records:
        raise IntentImportError("The file holds no examples.")
    for number, record in enumerate(records, start=1):
        if len(record.text) > MAX_TEXT:
            raise IntentImportError(
                f"Example {number} ({record.label}) has {len(record.text)} characters; the most is {MAX_TEXT}."
            )
    for label in sorted({record.label for record in records}):
        try:
            validate_slug(label)
            if len(label) > MAX_NAME:
                raise ValidationError("too long")
        except ValidationError as exc:
            raise IntentImportError(
                f"{label[:MAX_NAME]!r} is not a usable intent name: use letters, digits, _ and - "
                f"(at most {MAX_NAME} characters)."
            ) from exc


def _spec(name: str, intent_specs: Mapping[str, IntentSpec] | None) -> IntentSpec:
    if intent_specs and name in intent_specs:
        return intent_specs[name]
    return IntentSpec(Intent.Action.FALLBACK if name == OUT_OF_SCOPE else Intent.Action.SEARCH)


def intent_examples_import(
    *,
    text: str,
    fmt: str,
    source: str = IntentExample.Source.IMPORT,
    create_intents: bool = True,
    intent_specs: Mapping[str, IntentSpec] | None = None,
) -> ImportSummary:
    """Import the examples of `text` in `fmt` (csv, clinc or rasa) as `source`, in one transaction.

    Intents the file names are created when missing (set up from `intent_specs`, else with action search,
    fallback for out_of_scope), or with `create_intents=False` refused; examples an intent already has,
    and repeats within the file, are skipped. Raises IntentImportError, and writes nothing, on a file that
    cannot be read or holds an unusable example or intent name.
    """
    if fmt not in FORMATS:
        raise IntentImportError(f"Unknown format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    try:
        records = read_any(text, fmt)
    except IntentDataError as exc:
        raise IntentImportError(str(exc)) from exc
    _check_records(records)
    names = sorted({record.label for record in records})
    summary = ImportSummary()
    with transaction.atomic():
        intents = {intent.name: intent for intent in Intent.objects.select_for_update().filter(name__in=names)}
        missing = [name for name in names if name not in intents]
        if missing and not create_intents:
            raise IntentImportError(f"No such intents: {', '.join(missing)}. Create them first.")
        for name in missing:
            spec = _spec(name, intent_specs)
            intents[name] = Intent.objects.create(name=name, action=spec.action, description=spec.description)
        summary.intents_created = missing
        seen = set(
            IntentExample.objects.filter(intent__in=intents.values()).values_list("intent__name", "text").iterator()
        )
        fresh = []
        for record in records:
            key = (record.label, record.text)
            if key in seen:
                summary.skipped[record.label] = summary.skipped.get(record.label, 0) + 1
                continue
            seen.add(key)
            fresh.append(IntentExample(intent=intents[record.label], text=record.text, source=source))
            summary.created[record.label] = summary.created.get(record.label, 0) + 1
        IntentExample.objects.bulk_create(fresh, batch_size=1000)
    return summary


def _records(examples: Iterable[IntentExample]) -> list[IntentRecord]:
    return [IntentRecord(text=example.text, label=example.intent.name) for example in examples]


def intent_examples_export(*, fmt: str, intent_ids: Iterable[int] | None = None) -> str:
    """Every example of the intents `intent_ids` (all intents when None) in `fmt`: csv, clinc or rasa."""
    if fmt not in FORMATS:
        raise IntentImportError(f"Unknown format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    examples = IntentExample.objects.select_related("intent").order_by("intent__name", "id")
    if intent_ids is not None:
        examples = examples.filter(intent_id__in=list(intent_ids))
    return write_any(_records(examples.iterator(chunk_size=2000)), fmt)


def intent_training_set(*, min_examples: int) -> list[IntentRecord]:
    """The examples of every active intent, ordered by intent name and id.

    Raises TooLittleDataError naming every active intent (out_of_scope aside, which may have few) with
    fewer than `min_examples` examples, or when fewer than two intents are left to tell apart.
    """
    counts = dict(
        Intent.objects.filter(is_active=True).annotate(n=Count("examples")).values_list("name", "n").order_by("name")
    )
    short = {name: n for name, n in counts.items() if name != OUT_OF_SCOPE and n < min_examples}
    if short:
        listed = ", ".join(f"{name} ({n})" for name, n in short.items())
        raise TooLittleDataError(f"too little data: {listed} need at least {min_examples} examples each", short)
    in_scope = {name: n for name, n in counts.items() if name != OUT_OF_SCOPE}
    if len(in_scope) < 2:
        have = ", ".join(in_scope) or "none"
        raise TooLittleDataError(f"too little data: at least two active intents are needed (have: {have})", in_scope)
    examples = IntentExample.objects.filter(intent__is_active=True).select_related("intent")
    return _records(examples.order_by("intent__name", "id").iterator(chunk_size=2000))
