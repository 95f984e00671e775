"""Streaming readers of import files: JSON Lines, JSON arrays, CSV and WordPress exports (WXR).

Each reader takes a seekable binary file and yields `SourceRow`s numbered by the line they start on.
None reads the whole file: JSON Lines and CSV go line by line through a text wrapper, a JSON array is
decoded one element at a time from a sliding buffer, and WXR goes through lxml's `iterparse`, each
<item> dropped once read. The ids seen so far, kept to report duplicates inside one file, live in a
temporary SQLite file, so memory stays flat however large the file.

Encodings: a byte order mark wins; else UTF-8 when the first 64 KiB decode as UTF-8; else the guess of
charset-normalizer, preferring Windows-1252 when it reads about as well (charset-normalizer often
takes French or Spanish Windows-1252 text for a Baltic code page). A line that still does not decode
is a row error, not a crash.
"""

import codecs
import csv
import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import BinaryIO

import charset_normalizer
from lxml import etree

from .columns import REQUIRED, RowConverter
from .records import ContentRecord, CustomerRecord, RowError, SourceRow

CHUNK = 64 * 1024
MAX_LINE_CHARS = 16 * 1024 * 1024  # a JSON Lines line or a CSV field longer than this is a row error
MAX_ITEM_CHARS = 32 * 1024 * 1024  # one element of a JSON array
RAW_CHARS = 2000
WP_NAMESPACE = "http://wordpress.org/export/"
BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
# First bytes of files people upload by mistake, and what to tell them.
MAGIC = [
    (b"PK\x03\x04", "a ZIP archive (or an Excel or Word file): export the data as CSV or JSON Lines"),
    (b"\x1f\x8b", "a gzip-compressed file: decompress it first"),
    (b"BZh", "a bzip2-compressed file: decompress it first"),
    (b"\xfd7zXZ\x00", "an xz-compressed file: decompress it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive: extract it first"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (such as an .xls workbook): save it as CSV"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"SQLite format 3\x00", "a SQLite database"),
]


class FormatError(ValueError):
    """The file cannot be read (on): not of the format it claims, or broken at `line` past repair."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.line = line


def read_rows(
    *,
    format: str,
    target: str,
    stream: BinaryIO,
    column_mapping: dict[str, str] | None = None,
    options: dict | None = None,
) -> Iterator[SourceRow]:
    """The rows of a file of `format` ("jsonl", "json", "csv", "wxr") for `target`, duplicates flagged.

    Raises FormatError, possibly after some rows, when the file cannot be read on.
    """
    options = options or {}
    if format == "wxr" and target != "content":
        raise FormatError("A WordPress export holds posts and pages: import it as content.")
    convert = RowConverter(target=target, column_mapping=column_mapping, options=options)
    if format == "jsonl":
        rows = read_jsonl(stream, convert)
    elif format == "json":
        rows = read_json_array(stream, convert)
    elif format == "csv":
        rows = read_csv(stream, convert, delimiter=options.get("delimiter") or None)
    elif format == "wxr":
        rows = read_wxr(stream, convert)
    else:
        raise FormatError(f"Unknown file format {format!r}; one of jsonl, json, csv, wxr.")
    yield from flag_duplicate_ids(rows)


# --- What a file is ---------------------------------------------------------------------------


def sniff(head: bytes, *, format: str) -> None:
    """Refuse a file whose first bytes show it is not of `format`; raises FormatError saying what it looks like."""
    if not head.strip():
        raise FormatError("The file is empty.")
    for magic, what in MAGIC:
        if head.startswith(magic):
            raise FormatError(f"This is {what}; the importer takes JSON Lines, JSON, CSV or WordPress export files.")
    encoding = detect_encoding(head)
    if not encoding.startswith("utf-16") and not encoding.startswith("utf-32") and b"\x00" in head[:4096]:
        raise FormatError("This is a binary file, not text; the importer takes JSON Lines, JSON, CSV or WXR files.")
    text = head.decode(encoding, errors="replace").lstrip("\ufeff \t\r\n")
    first = text[:1]
    if format == "jsonl" and first != "{":
        hint = " It starts with '[': choose the JSON format for an array." if first == "[" else ""
        raise FormatError(f"This is not JSON Lines: the first line must be a JSON object.{hint}")
    if format == "json" and first != "[":
        hint = " For one object per line, choose JSON Lines." if first == "{" else ""
        raise FormatError(f"This is not a JSON array of objects: it must start with '['.{hint}")
    if format == "csv" and first in ("<", "{", "["):
        raise FormatError("This looks like XML or JSON, not CSV; choose the format that matches the file.")
    if format == "wxr":
        if first != "<":
            raise FormatError("This is not XML, so not a WordPress export (WXR).")
        if "<rss" in text and WP_NAMESPACE not in text:
            raise FormatError("This is an RSS feed, not a WordPress export: add its address as a feed instead.")
        if "<feed" in text and "<rss" not in text:
            raise FormatError("This is an Atom feed, not a WordPress export: add its address as a feed instead.")


def detect_encoding(head: bytes) -> str:
    """The encoding of a file from its first bytes (see the module docstring)."""
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return encoding
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    matches = list(charset_normalizer.from_bytes(head[:CHUNK]))
    if not matches:
        return "cp1252"
    best = matches[0]
    western = next((m for m in matches if m.encoding == "cp1252"), None)
    if western is not None and western.chaos <= best.chaos + 0.2:
        return "cp1252"
    return best.encoding


def _open_text(stream: BinaryIO) -> tuple[io.TextIOWrapper, str, bytes]:
    """A text view of `stream` in its detected encoding; bytes that do not decode become lone surrogates."""
    start = stream.tell()
    head = stream.read(CHUNK)
    stream.seek(start)
    encoding = detect_encoding(head)
    text = io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape", newline="")  # type: ignore[arg-type]
    return text, encoding, head


def _bad_byte(line: str, encoding: str) -> str:
    """'' when `line` decoded cleanly, else a message naming the first byte that did not."""
    if line.isascii():
        return ""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(line[exc.start]) - 0xDC00
        return f"Not valid {encoding} text: byte 0x{byte:02x} at character {exc.start + 1}."
    return ""


def _error(line: int, message: str, *, raw: str = "", field: str = "") -> SourceRow:
    return SourceRow(line=line, error=RowError(line=line, message=message, field=field, raw=raw[:RAW_CHARS]))


# --- JSON Lines and JSON ----------------------------------------------------------------------


def read_jsonl(stream: BinaryIO, convert: RowConverter) -> Iterator[SourceRow]:
    """One JSON object per line; blank lines are skipped, any other line that is not an object is a row error."""
    text, encoding, _ = _open_text(stream)
    number = 0
    try:
        while line := text.readline(MAX_LINE_CHARS):
            number += 1
            if len(line) >= MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
                while (rest := text.readline(CHUNK)) and not rest.endswith(("\n", "\r")):
                    pass
                yield _error(number, f"The line is longer than {MAX_LINE_CHARS:,} characters.", raw=line[:200])
                continue
            stripped = line.strip()
            if not stripped:
                continue
            if bad := _bad_byte(stripped, encoding):
                yield _error(number, bad, raw=stripped.encode("utf-8", "replace").decode())
                continue
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                yield _error(number, f"Not valid JSON: {exc.msg} at column {exc.colno}.", raw=stripped)
                continue
            if not isinstance(value, dict):
                yield _error(number, f"Each line must hold one JSON object, not {_json_type(value)}.", raw=stripped)
                continue
            yield convert(number, value, stripped)
    except UnicodeDecodeError as exc:
        raise FormatError(f"The file is not valid {encoding} text after line {number}: {exc.reason}.") from None
    finally:
        text.detach()


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false"}.get(
        type(value), "null"
    )


class _Buffer:
    """A sliding window over a text stream that knows the line number of its read position."""

    def __init__(self, text: io.TextIOWrapper):
        self.text = text
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False

    def fill(self, at_least: int = CHUNK) -> bool:
        """Read more (at least `at_least` characters unless the file ends); False at the end of the file."""
        if self.eof:
            return False
        more = self.text.read(max(at_least, CHUNK))
        if not more:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + more
        self.pos = 0
        return True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def next_char(self) -> str:
        """The next character that is not white space ('' at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                if self.buf[self.pos] == "\n":
                    self.line += 1
                self.pos += 1
            if self.pos < len(self.buf) or not self.fill():
                return self.buf[self.pos : self.pos + 1]


def read_json_array(stream: BinaryIO, convert: RowConverter) -> Iterator[SourceRow]:
    """A JSON array of objects, decoded element by element; an element that is not an object is a row error.

    Broken JSON cannot be resynchronised: the elements before it are yielded, then FormatError with its line.
    """
    text, encoding, _ = _open_text(stream)
    decoder = json.JSONDecoder()
    window = _Buffer(text)
    try:
        if window.next_char() != "[":
            raise FormatError("A JSON file must hold an array of objects ([{…}, {…}]).", line=window.line)
        window.advance(window.pos + 1)
        first = True
        while True:
            char = window.next_char()
            if char == "":
                raise FormatError(
                    f"The JSON array is not closed: the file ends at line {window.line}.", line=window.line
                )
            if char == "]":
                window.advance(window.pos + 1)
                break
            if not first:
                if char != ",":
                    raise FormatError(f"Not valid JSON at line {window.line}: expected ',' or ']'.", line=window.line)
                window.advance(window.pos + 1)
                char = window.next_char()
            if char == "":
                raise FormatError(
                    f"The JSON array is not closed: the file ends at line {window.line}.", line=window.line
                )
            first = False
            value, end = _decode_element(decoder, window)
            number, raw = window.line, window.buf[window.pos : min(end, window.pos + RAW_CHARS)]
            window.advance(end)
            if bad := _bad_byte(raw, encoding):
                yield _error(number, bad, raw=raw.encode("utf-8", "replace").decode())
            elif not isinstance(value, dict):
                yield _error(number, f"Each element must be a JSON object, not {_json_type(value)}.", raw=raw)
            else:
                yield convert(number, value, raw)
        if window.next_char():
            raise FormatError(f"Unexpected text after the JSON array at line {window.line}.", line=window.line)
    except UnicodeDecodeError as exc:
        raise FormatError(f"The file is not valid {encoding} text after line {window.line}: {exc.reason}.") from None
    finally:
        text.detach()


def _decode_element(decoder: json.JSONDecoder, window: _Buffer) -> tuple[object, int]:
    """Decode the element at the window's position, reading on while it is incomplete."""
    want = CHUNK
    while True:
        try:
            value, end = decoder.raw_decode(window.buf, window.pos)
        except json.JSONDecodeError as exc:
            incomplete = exc.pos >= len(window.buf) - 16 or exc.msg.startswith("Unterminated string")
            if not incomplete or window.eof:
                line = window.line + window.buf.count("\n", window.pos, exc.pos)
                raise FormatError(f"Not valid JSON at line {line}: {exc.msg}.", line=line) from None
        else:
            if end < len(window.buf) or window.eof:  # a number at the window's edge may go on
                return value, end
        if len(window.buf) - window.pos > MAX_ITEM_CHARS:
            raise FormatError(
                f"The element at line {window.line} is not valid JSON or longer than {MAX_ITEM_CHARS:,} characters.",
                line=window.line,
            )
        window.fill(want)
        want *= 2


# --- CSV --------------------------------------------------------------------------------------


def read_csv(stream: BinaryIO, convert: RowConverter, *, delimiter: str | None = None) -> Iterator[SourceRow]:
    """CSV with a header row; the delimiter (, ; tab |) is the one the header uses most unless given."""
    text, encoding, head = _open_text(stream)
    sample = head.decode(encoding, errors="replace").lstrip("\ufeff")
    header_line = sample.splitlines()[0] if sample.strip() else ""
    delimiter = delimiter or max(",;\t|", key=header_line.count)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_CHARS))
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = _csv_header(reader, convert)
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield _error(start, f"Not valid CSV: {exc}.")
                continue
            if not any(v.strip() for v in values):
                continue
            raw = delimiter.join(values)
            if bad := _bad_byte(raw, encoding):
                yield _error(start, bad, raw=raw.encode("utf-8", "replace").decode())
                continue
            if len(values) > len(header) and any(v.strip() for v in values[len(header) :]):
                yield _error(start, f"The row has {len(values)} fields; the header has {len(header)}.", raw=raw)
                continue
            row: dict[str, str] = {}
            for name, value in zip(header, values, strict=False):
                if name and name not in row:
                    row[name] = value
            yield convert(start, row, raw)
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"The file is not valid {encoding} text after line {reader.line_num}: {exc.reason}."
        ) from None
    finally:
        text.detach()


def _csv_header(reader, convert: RowConverter) -> list[str]:
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
    except csv.Error as exc:
        raise FormatError(f"The CSV header cannot be read: {exc}.", line=1) from None
    if not any(header):
        raise FormatError("The CSV file has no header row: its first line must name the columns.", line=1)
    shown = ", ".join(h for h in header if h)[:300]
    if missing := convert.missing_mapped(header):
        raise FormatError(f"Mapped columns not in the header: {', '.join(missing)}. The header has: {shown}.", line=1)
    required = REQUIRED[convert.target]
    if required not in convert.columns(tuple(header)):
        raise FormatError(
            f"No column for the required field {required}: map one (e.g. {required}=COLUMN). The header has: {shown}.",
            line=1,
        )
    return header


# --- WordPress export (WXR) -------------------------------------------------------------------


def read_wxr(stream: BinaryIO, convert: RowConverter) -> Iterator[SourceRow]:
    """Posts and pages (published or draft) of a WordPress export; other items are passed over.

    Rows are numbered by the line their <item> starts on. Malformed XML ends the file: the items before
    it are yielded, then FormatError with the line and column where parsing failed.
    """
    parser = etree.iterparse(
        stream,
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        remove_comments=True,
        remove_pis=True,
    )
    authors: dict[str, str] = {}
    items = 0
    depth = 0
    try:
        for event, elem in parser:
            if event == "start":
                depth += 1
                if depth == 1:
                    _wxr_check_root(elem)
                continue
            depth -= 1
            if depth != 2:  # only direct children of <channel> are read, and dropped once read
                continue
            name = etree.QName(elem)
            if name.localname == "author" and (name.namespace or "").startswith(WP_NAMESPACE):
                login = _child_text(elem, "author_login")
                if login:
                    authors[login] = _child_text(elem, "author_display_name") or login
            elif name.localname == "item":
                items += 1
                row = _wxr_item(elem, convert, authors)
                if row is not None:
                    yield row
            elem.clear(keep_tail=False)
            parent = elem.getparent()
            while parent is not None and elem.getprevious() is not None:
                del parent[0]
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (exc.lineno, 0)
        raise FormatError(
            f"The XML is malformed at line {line}, column {column}: {exc.msg}. "
            f"The {items} item{'s' if items != 1 else ''} before it were read.",
            line=line,
        ) from None


def _wxr_check_root(elem) -> None:
    if etree.QName(elem).localname != "rss":
        raise FormatError(f"Not a WordPress export: the root element is <{etree.QName(elem).localname}>, not <rss>.")
    if not any((ns or "").startswith(WP_NAMESPACE) for ns in elem.nsmap.values()):
        raise FormatError("This is an RSS feed, not a WordPress export: add its address as a feed instead.")


def _child_text(elem, localname: str) -> str:
    for child in elem:
        if isinstance(child.tag, str) and etree.QName(child).localname == localname:
            return (child.text or "").strip()
    return ""


WXR_STATUS = {"publish": "published", "draft": "draft"}
WXR_FIELDS = {  # (namespace prefix, local name) → field
    ("", "title"): "title",
    ("", "link"): "url",
    ("", "pubDate"): "pubDate",
    ("http://purl.org/dc/elements/1.1/", "creator"): "creator",
    ("http://purl.org/rss/1.0/modules/content/", "encoded"): "body",
    (WP_NAMESPACE, "post_id"): "id",
    (WP_NAMESPACE, "post_date_gmt"): "post_date_gmt",
    (WP_NAMESPACE, "post_date"): "post_date",
    (WP_NAMESPACE, "status"): "status",
    (WP_NAMESPACE, "post_type"): "post_type",
}


def _wxr_item(elem, convert: RowConverter, authors: dict[str, str]) -> SourceRow | None:
    values: dict[str, str] = {}
    categories: list[str] = []
    tags: list[str] = []
    for child in elem:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child)
        namespace, local, text = name.namespace or "", name.localname, child.text or ""
        if local == "encoded" and "/excerpt" in namespace:
            values["summary"] = text
        elif local == "category":
            domain = child.get("domain", "")
            found = categories if domain == "category" else tags if domain == "post_tag" else None
            if found is not None and text.strip() and text.strip() not in found:
                found.append(text.strip())
        else:
            key = (WP_NAMESPACE if namespace.startswith(WP_NAMESPACE) else namespace, local)
            if field := WXR_FIELDS.get(key):
                values[field] = text
    if values.get("post_type", "post").strip() not in ("post", "page"):
        return None
    status = WXR_STATUS.get(values.get("status", "publish").strip())
    if status is None:
        return None
    date = values.get("post_date_gmt", "").strip()
    if not date or date.startswith("0000"):
        date = values.get("pubDate", "").strip() or values.get("post_date", "").strip()
        date = "" if date.startswith("0000") else date
    creator = values.get("creator", "").strip()
    row = {
        "id": values.get("id", "").strip(),
        "title": values.get("title", ""),
        "body": values.get("body", ""),
        "summary": values.get("summary", ""),
        "url": values.get("url", ""),
        "published_at": date,
        "status": status,
        "authors": [authors.get(creator, creator)] if creator else [],
        "tags": tags,
        "categories": categories,
        "section": categories[0] if categories else "",
    }
    raw = f"<item> wp:post_id={row['id']!r} title={row['title'][:300]!r}"
    return convert(elem.sourceline or 0, row, raw)


# --- Duplicate ids inside one file ------------------------------------------------------------


def flag_duplicate_ids(rows: Iterator[SourceRow]) -> Iterator[SourceRow]:
    """`rows`, with the second and later records of an id turned into row errors naming the first line."""
    seen = sqlite3.connect("")  # a private temporary database on disk: flat memory for any number of ids
    try:
        seen.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        insert = _seen_insert(seen)
        for row in rows:
            record = row.record
            if record is not None and record.external_id:
                key = _record_key(record)
                first = insert(key, row.line)
                if first is not None:
                    message = f"Duplicate id in this file, first seen on line {first}."
                    error = RowError(
                        line=row.line, message=message, field="external_id", external_id=record.external_id
                    )
                    row = SourceRow(line=row.line, error=error)
            yield row
    finally:
        seen.close()


def _seen_insert(db: sqlite3.Connection) -> Callable[[str, int], int | None]:
    def insert(key: str, line: int) -> int | None:
        if db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (key, line)).rowcount:
            return None
        return db.execute("SELECT line FROM seen WHERE key = ?", (key,)).fetchone()[0]

    return insert


def _record_key(record: ContentRecord | CustomerRecord) -> str:
    if isinstance(record, CustomerRecord):
        return f"{record.source}\x1f{record.external_id}"
    return record.external_id
