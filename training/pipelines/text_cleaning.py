"""Text cleaning for the chat corpus: markup to plain text, unicode and whitespace, boilerplate lines, PII.

`text_clean` turns markup into plain text (lxml parses HTML and decodes entities), normalises unicode
(NFC, no control or zero-width characters) and whitespace (one paragraph per line), drops boilerplate lines
(`BOILERPLATE_PATTERNS`) and masks e-mail addresses and phone numbers (`pii_mask`). `clean_counted` does the
same and counts what it removed and masked, for the corpus statistics. Plain Python: no Django imports.
"""

import html
import re
import unicodedata
from collections import Counter

import lxml.html
from lxml import etree

# Lines that are site furniture rather than content; matched case-insensitively on lines up to
# BOILERPLATE_MAX_CHARS long only, so that a real paragraph quoting one of them stays.
BOILERPLATE_PATTERNS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\b(subscribe|sign up|sign-up)\b.*\bnewsletter\b",
        r"\ball rights reserved\b",
        r"^(©|\(c\)|copyright\b)",
        r"^share (this|on|via)\b",
        r"^(read|see|show|load) more\b",
        r"\b(we|this (web)?site) uses? cookies\b|\bcookie (policy|settings|preferences)\b|\baccept (all )?cookies\b",
        r"^follow us\b",
        r"^(advertisement|sponsored( content)?|ad)$",
        r"^click here\b",
        r"^(related|recommended|most read)( articles| stories| content)?:?$",
    )
)
BOILERPLATE_MAX_CHARS = 120

_TAG_RE = re.compile(r"<(?:/?[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?/?|!--.*?--|!DOCTYPE[^>]*)>", re.DOTALL)
_ENTITY_RE = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")
_DROP_TAGS = ("script", "style", "noscript", "template", "nav", "aside", "footer", "header", "form", "iframe", "svg")
_BLOCK_TAGS = tuple("p div section article main blockquote pre li h1 h2 h3 h4 h5 h6 tr figcaption dt dd".split())
# C0/C1 controls (newline and tab excepted) and invisible characters that only split words.
_INVISIBLE = {c: None for c in (*range(0, 9), 11, 12, *range(14, 32), *range(127, 160), 0x200B, 0x2060, 0xFEFF, 0xAD)}
_INVISIBLE.update({ord("\t"): " ", 0xA0: " "})
_LINE_BREAK_RE = re.compile(r"\r\n?|[\u2028\u2029\x0b\x0c\x85]")

_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE_RES = (
    # International: +44 20 7946 0958, +1 (555) 123-4567, +33 6 12 34 56 78, +447911123456.
    (re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,5}){1,6}(?!\w)"), 8),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567.
    (re.compile(r"(?<![\w.,/+-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w|[.,/-]\d)"), 10),
    # National numbers with a trunk 0: 06 12 34 56 78, 020 7946 0958, 01.23.45.67.89.
    (re.compile(r"(?<![\w.,/+-])0\d{1,4}(?:[ .-]\d{2,4}){2,4}(?!\w|[.,/-]\d)"), 9),
)  # (pattern, fewest digits): fewer digits is a date, a score or an amount, not a phone number
_PHONE_MAX_DIGITS = 15


def text_clean(text: str) -> str:
    """Plain text from `text` (HTML or plain): NFC, one paragraph per line, boilerplate lines dropped, PII masked.

    Tags go, entities are decoded, scripts/styles/navigation dropped, block elements and <br> become line
    breaks; control and zero-width characters go; runs of spaces collapse; empty lines go.
    """
    return clean_counted(text, Counter())


def pii_mask(text: str) -> str:
    """`text` with e-mail addresses replaced by "<email>" and phone numbers by "<phone>".

    Years, dates, prices, scores and plain figures ("2026", "3.5 million", "2026-03-12", "$1,299.99") stay.
    """
    return _pii_mask(text, Counter())


def clean_counted(text: str, counts: Counter) -> str:
    """`text_clean(text)`, adding to `counts` the lines dropped ("boilerplate_lines") and masks ("email", "phone")."""
    if not text:
        return ""
    if "<" in text and _TAG_RE.search(text):
        text = _markup_text(text)
    elif "&" in text and _ENTITY_RE.search(text):
        text = html.unescape(text)
    text = unicodedata.normalize("NFC", _LINE_BREAK_RE.sub("\n", text)).translate(_INVISIBLE)
    lines = []
    for line in text.split("\n"):
        line = " ".join(line.split())
        if not line:
            continue
        if len(line) <= BOILERPLATE_MAX_CHARS and any(p.search(line) for p in BOILERPLATE_PATTERNS):
            counts["boilerplate_lines"] += 1
            continue
        lines.append(line)
    return _pii_mask("\n".join(lines), counts)


def _markup_text(markup: str) -> str:
    try:
        root = lxml.html.fromstring(markup)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return ""
    etree.strip_elements(root, *_DROP_TAGS, with_tail=False)
    for element in root.iter(*_BLOCK_TAGS, "br"):
        element.tail = "\n" + (element.tail or "")
        if element.tag != "br":
            element.text = "\n" + (element.text or "")
    return root.text_content()


def _pii_mask(text: str, counts: Counter) -> str:
    text, found = _EMAIL_RE.subn("<email>", text)
    counts["email"] += found
    for pattern, fewest_digits in _PHONE_RES:

        def phone(match: re.Match, fewest: int = fewest_digits) -> str:
            digits = sum(ch.isdigit() for ch in match.group(0))
            if not fewest <= digits <= _PHONE_MAX_DIGITS:
                return match.group(0)
            counts["phone"] += 1
            return "<phone>"

        text = pattern.sub(phone, text)
    return text
