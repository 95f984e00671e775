"""Intent examples in and out: CSV (text,label), CLINC150 JSON and Rasa NLU YAML, as `IntentRecord`s.

Plain Python (csv, json, PyYAML): the admin's import and export and the intent benchmark read and write
through here. Readers forgive a byte-order mark, CRLF line ends and blank lines, collapse runs of whitespace
in a text, and raise `IntentDataError` naming the line or row of anything else they cannot read.
CLINC150's out-of-scope label "oos" is `OUT_OF_SCOPE` here, and "oos" again when written as CLINC.
"""

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath

import yaml

OUT_OF_SCOPE = "out_of_scope"
CLINC_OOS = "oos"
FORMATS = ("csv", "clinc", "rasa")
CLINC_SPLITS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")
EXTENSION_FORMATS = {".csv": "csv", ".json": "clinc", ".yml": "rasa", ".yaml": "rasa"}
RASA_VERSION = "3.1"
# Rasa entity markup: [text](entity), [text](entity:value), [text]{"entity": "...", ...}.
RASA_ENTITY = re.compile(r"\[([^\[\]]+)\](?:\([^()]*\)|\{[^{}]*\})")


class IntentDataError(ValueError):
    """A file that cannot be read as intent examples; the message names the line or row."""


@dataclass(frozen=True)
class IntentRecord:
    text: str
    label: str


@dataclass
class ClincSplits:
    """CLINC150's six lists (data_full.json layout); out-of-scope records carry the label `OUT_OF_SCOPE`."""

    train: list[IntentRecord] = field(default_factory=list)
    val: list[IntentRecord] = field(default_factory=list)
    test: list[IntentRecord] = field(default_factory=list)
    oos_train: list[IntentRecord] = field(default_factory=list)
    oos_val: list[IntentRecord] = field(default_factory=list)
    oos_test: list[IntentRecord] = field(default_factory=list)

    def records(self) -> list[IntentRecord]:
        """Every split's records, in the order of `CLINC_SPLITS`."""
        return [record for split in CLINC_SPLITS for record in getattr(self, split)]


def _clean_text(text: object) -> str:
    return " ".join(str(text).split())


def _record(text: object, label: object, where: str) -> IntentRecord:
    if not isinstance(text, str) or not isinstance(label, str):
        raise IntentDataError(f"{where}: text and label must be strings.")
    text, label = _clean_text(text), label.strip()
    if not text:
        raise IntentDataError(f"{where}: the text is empty.")
    if not label:
        raise IntentDataError(f"{where}: the label is empty.")
    return IntentRecord(text=text, label=OUT_OF_SCOPE if label == CLINC_OOS else label)


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


# --- CSV --------------------------------------------------------------------------------------------------


def read_csv(text: str, *, text_column: str = "text", label_column: str = "label") -> list[IntentRecord]:
    """Rows of a CSV with a header naming `text_column` and `label_column` (other columns are ignored)."""
    reader = csv.reader(io.StringIO(_strip_bom(text), newline=""))
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise IntentDataError("CSV: the file is empty (expected a header such as text,label).")
        columns = [cell.strip() for cell in header]
        missing = [name for name in (text_column, label_column) if name not in columns]
        if missing:
            raise IntentDataError(
                f"CSV line {reader.line_num}: no column {' or '.join(map(repr, missing))} "
                f"(the header has {', '.join(map(repr, columns))})."
            )
        text_at, label_at = columns.index(text_column), columns.index(label_column)
        records = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"CSV line {reader.line_num}"
            if len(row) <= max(text_at, label_at):
                raise IntentDataError(f"{where}: {len(row)} cells, the header has {len(columns)}.")
            records.append(_record(row[text_at], row[label_at], where))
    except csv.Error as exc:
        raise IntentDataError(f"CSV line {reader.line_num}: {exc}.") from exc
    return records


def write_csv(records: Iterable[IntentRecord]) -> str:
    """A text,label CSV (RFC 4180: CRLF line ends, quoted where needed) that `read_csv` reads back."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows([record.text, record.label] for record in records)
    return out.getvalue()


# --- CLINC150 JSON ----------------------------------------------------------------------------------------


def read_clinc(text: str) -> ClincSplits:
    """CLINC150's data_full.json layout: {"train": [[text, label], ...], "val": ..., "oos_train": ..., ...}.

    Any of the six splits may be missing, but not all; other keys are ignored.
    """
    try:
        data = json.loads(_strip_bom(text))
    except json.JSONDecodeError as exc:
        raise IntentDataError(f"JSON line {exc.lineno} column {exc.colno}: {exc.msg}.") from exc
    if not isinstance(data, dict) or not any(split in data for split in CLINC_SPLITS):
        raise IntentDataError(f"JSON: expected an object with the lists {', '.join(CLINC_SPLITS)} (CLINC150).")
    splits = ClincSplits()
    for split in CLINC_SPLITS:
        rows = data.get(split, [])
        if not isinstance(rows, list):
            raise IntentDataError(f"JSON {split!r}: expected a list of [text, label] pairs.")
        for i, row in enumerate(rows):
            where = f"JSON {split}[{i}] (row {i + 1})"
            if not isinstance(row, list) or len(row) != 2:
                raise IntentDataError(f"{where}: expected a [text, label] pair, got {json.dumps(row)[:80]}.")
            getattr(splits, split).append(_record(row[0], row[1], where))
    return splits


def read_clinc_records(text: str) -> list[IntentRecord]:
    """Every record of a CLINC150 file, all splits together (for importing)."""
    return read_clinc(text).records()


def write_clinc(records: Iterable[IntentRecord]) -> str:
    """CLINC150 layout: in-scope records under "train", `OUT_OF_SCOPE` ones under "oos_train" labelled "oos"."""
    data: dict[str, list[list[str]]] = {split: [] for split in CLINC_SPLITS}
    for record in records:
        if record.label == OUT_OF_SCOPE:
            data["oos_train"].append([record.text, CLINC_OOS])
        else:
            data["train"].append([record.text, record.label])
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


# --- Rasa NLU YAML ----------------------------------------------------------------------------------------


def _mapping(node: yaml.Node, where: str) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise IntentDataError(f"{where}: expected a mapping (key: value).")
    return {key.value: value for key, value in node.value if isinstance(key, yaml.ScalarNode)}


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _rasa_examples(node: yaml.Node, intent: str) -> list[tuple[str, int]]:
    """(example, line) pairs of one intent: a block of "- text" lines, or a list of strings or {text: ...}."""
    if isinstance(node, yaml.ScalarNode):
        # A block scalar's text starts on the line after its "|" indicator.
        first = _line(node) + (1 if node.style in ("|", ">") else 0)
        examples = []
        for offset, raw in enumerate(node.value.splitlines()):
            line = raw.strip()
            if not line:
                continue
            if line != "-" and not line.startswith("- "):
                raise IntentDataError(
                    f"Rasa YAML line {first + offset}: intent {intent!r}: write examples as '- text'."
                )
            examples.append((line[2:], first + offset))
        return examples
    if isinstance(node, yaml.SequenceNode):
        examples = []
        for item in node.value:
            if isinstance(item, yaml.MappingNode):
                item = _mapping(item, f"Rasa YAML line {_line(item)}").get("text", item)
            if not isinstance(item, yaml.ScalarNode):
                raise IntentDataError(f"Rasa YAML line {_line(item)}: intent {intent!r}: expected example text.")
            examples.append((item.value, _line(item)))
        return examples
    raise IntentDataError(f"Rasa YAML line {_line(node)}: intent {intent!r}: examples must be a '|' block of '- text'.")


def read_rasa_yaml(text: str) -> list[IntentRecord]:
    """The intents' examples of Rasa NLU training data (`nlu:` items with `intent:` and `examples:`).

    Entity annotations are stripped to their text ("[Paris](city)" reads "Paris"); synonym, regex and
    lookup items are skipped.
    """
    try:
        root = yaml.compose(_strip_bom(text), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"Rasa YAML line {mark.line + 1}" if mark else "Rasa YAML"
        raise IntentDataError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc}).") from exc
    if root is None:
        raise IntentDataError("Rasa YAML: the file is empty (expected an 'nlu:' list).")
    nlu = _mapping(root, "Rasa YAML line 1").get("nlu")
    if not isinstance(nlu, yaml.SequenceNode):
        raise IntentDataError("Rasa YAML: expected an 'nlu:' list of '- intent: name' items.")
    records = []
    for item in nlu.value:
        fields = _mapping(item, f"Rasa YAML line {_line(item)}")
        if "intent" not in fields:
            continue
        intent = fields["intent"].value if isinstance(fields["intent"], yaml.ScalarNode) else ""
        if "examples" not in fields:
            raise IntentDataError(f"Rasa YAML line {_line(item)}: intent {intent!r} has no 'examples:'.")
        for example, line in _rasa_examples(fields["examples"], intent):
            records.append(_record(RASA_ENTITY.sub(r"\1", example), intent, f"Rasa YAML line {line}"))
    return records


def write_rasa_yaml(records: Iterable[IntentRecord]) -> str:
    """Rasa NLU YAML (version 3.1), one `- intent:` item per label in order of first appearance."""
    by_label: dict[str, list[str]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(_clean_text(record.text))
    lines = [f'version: "{RASA_VERSION}"', "", "nlu:" if by_label else "nlu: []"]
    for label, texts in by_label.items():
        # Quoted, so that a label such as "yes" or "null" stays a string for YAML readers.
        lines += [f"- intent: {json.dumps(label)}", "  examples: |"]
        lines += [f"    - {text}" for text in texts]
    return "\n".join(lines) + "\n"


# --- By format name ---------------------------------------------------------------------------------------


def format_for_filename(filename: str) -> str | None:
    """The format a file name suggests (.csv, .json, .yml/.yaml), or None."""
    return EXTENSION_FORMATS.get(PurePath(filename.lower()).suffix)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise IntentDataError(f"Unknown format {fmt!r}: choose one of {', '.join(FORMATS)}.")


def read_any(text: str, fmt: str) -> list[IntentRecord]:
    """Records of `text` in `fmt` (csv, clinc or rasa); CLINC splits flattened."""
    _check_format(fmt)
    readers = {"csv": read_csv, "clinc": read_clinc_records, "rasa": read_rasa_yaml}
    return readers[fmt](text)


def write_any(records: Iterable[IntentRecord], fmt: str) -> str:
    """`records` written in `fmt` (csv, clinc or rasa)."""
    _check_format(fmt)
    writers = {"csv": write_csv, "clinc": write_clinc, "rasa": write_rasa_yaml}
    return writers[fmt](records)
