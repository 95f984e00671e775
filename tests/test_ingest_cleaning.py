"""Cleaning of imported items: HTML to text, unicode, language, canonical URLs and content hashes."""

import unicodedata
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ImproperlyConfigured

from personalization.ingest import cleaning
from personalization.ingest.cleaning import (
    canonical_url,
    clean_content,
    clean_contents,
    clean_customer,
    clean_text,
    clean_title,
    content_hash,
    detect_language,
    detect_languages,
)
from personalization.ingest.records import ContentRecord, CustomerRecord

ARTICLE_HTML = """
<div class="article">
  <script type="text/javascript">window.tracker = {"id": 42};</script>
  <style>.article p { color: red; }</style>
  <nav><a href="/">Home</a> | <a href="/news">News</a></nav>
  <h2>Council backs   bike&nbsp;lanes</h2>
  <p>The city council voted on Tuesday to expand the <a href="/bikes"><em>bike lane</em> network</a>
     by 40&nbsp;kilometres &mdash; a decision &amp; a promise.</p>
  <p>Opponents said the cost, <strong>estimated at &euro;12&#160;million</strong>, was too high.<br>
     The mayor disagreed.</p>
  <!-- an editor's note that readers never see -->
  <ul><li>First segment: the river</li><li>Second: the <span><b>old</b> town</span></li></ul>
  <footer>&copy; 2026 The Daily</footer>
</div>
"""

ARTICLE_TEXT = (
    "Council backs bike lanes\n\n"
    "The city council voted on Tuesday to expand the bike lane network by 40 kilometres \u2014 a decision & a "
    "promise.\n\n"
    "Opponents said the cost, estimated at \u20ac12 million, was too high.\nThe mayor disagreed.\n\n"
    "First segment: the river\n\n"
    "Second: the old town"
)


def test_html_fragment_becomes_clean_paragraphs():
    assert clean_text(ARTICLE_HTML) == ARTICLE_TEXT


def test_whole_page_keeps_the_article_and_drops_menus_and_footer():
    page = f"""<!DOCTYPE html><html><head><title>The Daily</title><script>var a = 1;</script></head><body>
    <header><a href="/">The Daily</a>
      <ul class="menu"><li><a href="/a">News</a></li><li><a href="/b">Sport</a></li></ul></header>
    <div class="cookie-banner">We use cookies. Accept all</div>
    <main><article><h1>Bike lanes expand</h1>{ARTICLE_HTML}
    <p>Construction is expected to begin next spring and last about two years.</p></article>
    <div class="share">Share on Facebook Share on X</div>
    <aside><h3>Related</h3><a href="/c">Other story one</a></aside></main>
    <footer>Privacy · Contact</footer></body></html>"""
    text = clean_text(page)
    paragraphs = text.split("\n\n")
    assert paragraphs[0] == "Bike lanes expand"
    assert "Opponents said the cost, estimated at \u20ac12 million, was too high." in text
    assert paragraphs[-1] == "Construction is expected to begin next spring and last about two years."
    for boilerplate in ("Sport", "cookies", "Share on", "Related", "Other story one", "Privacy", "var a", "The Daily"):
        assert boilerplate not in text


def test_plain_text_is_kept_as_written():
    text = "First paragraph, with a line break\nin the middle.\n\nSecond paragraph: 3 < 5 and AT&T stay as they are."
    assert clean_text(text) == text


def test_plain_text_decodes_complete_entities_only():
    assert clean_text("Tom &amp; Jerry &#233;t&eacute; &copy AT&T") == "Tom & Jerry \u00e9t\u00e9 &copy AT&T"


def test_unicode_is_nfc_without_control_characters():
    decomposed = "Cafe\u0301 cre\u0300me"
    raw = f"{decomposed}\x00\x07 ok\r\nnext\tline\u200b here\x85\n\n\n\n\nlast  para  "
    text = clean_text(raw)
    assert text == "Caf\u00e9 cr\u00e8me ok\nnext line here\n\nlast para"
    assert unicodedata.is_normalized("NFC", text)
    assert "\u00e9" in text and "e\u0301" not in text


def test_dropped_elements_keep_the_text_that_follows_them():
    assert clean_text("<p>Before <script>track()</script>after, <style>p {}</style>still here.</p>") == (
        "Before after, still here."
    )


def test_markup_without_text_gives_empty_text():
    for markup in ("", "   ", "<p></p>", "<!-- nothing -->", "<script>alert(1)</script>", "<br><br>"):
        assert clean_text(markup) == ""


def test_xml_declaration_and_broken_markup():
    assert clean_text('<?xml version="1.0" encoding="iso-8859-1"?><p>d\u00e9j\u00e0 vu</p>') == "d\u00e9j\u00e0 vu"
    assert clean_text("<p>unclosed <b>bold <i>italic</p><p>next") == "unclosed bold italic\n\nnext"


def test_title_loses_tags_entities_and_line_breaks():
    assert clean_title("  <b>Bike</b> lanes &amp; <i>buses</i>\n  expand ") == "Bike lanes & buses expand"
    assert clean_title("Rock &#8217;n&#8217; roll") == "Rock \u2019n\u2019 roll"


def test_clean_content_fills_summary_hash_url_and_language():
    record = ContentRecord(
        external_id="a-1",
        title="<h1>Council backs bike lanes</h1>",
        body=ARTICLE_HTML,
        url="https://News.Example.com/bikes/?utm_source=rss&id=7#comments",
    )
    cleaned = clean_content(record)
    assert cleaned is not record and record.title == "<h1>Council backs bike lanes</h1>"  # the input is left as it was
    assert cleaned.title == "Council backs bike lanes"
    assert cleaned.body == ARTICLE_TEXT
    # The heading is skipped; the lead runs on into the next paragraph for its second sentence.
    assert cleaned.summary == (
        "The city council voted on Tuesday to expand the bike lane network by 40 kilometres \u2014 a decision & a "
        "promise. Opponents said the cost, estimated at \u20ac12 million, was too high."
    )
    assert cleaned.canonical_url == "https://news.example.com/bikes?id=7"
    assert cleaned.content_hash == content_hash(cleaned.title, cleaned.body)
    assert cleaned.language == "en"


def test_summary_is_the_first_two_sentences_when_missing():
    body = (
        "<p>The council voted on Tuesday. Supporters cheered! Opponents left early. Nobody stayed.</p>"
        "<p>Second paragraph.</p>"
    )
    cleaned = clean_content(ContentRecord(external_id="1", title="Vote", body=body))
    assert cleaned.summary == "The council voted on Tuesday. Supporters cheered!"
    given = clean_content(ContentRecord(external_id="2", title="Vote", body=body, summary="<p>Given &amp; kept</p>"))
    assert given.summary == "Given & kept"
    long_body = "word " * 200
    assert len(clean_content(ContentRecord(external_id="3", title="Long", body=long_body)).summary) <= 301


LANGUAGE_SAMPLES = {
    "en": "The city council voted on Tuesday to expand the bike lane network, a decision that supporters say "
    "will make the streets safer for everyone.",
    "fr": "Le conseil municipal a voté mardi pour étendre le réseau de pistes cyclables, une décision qui selon "
    "ses partisans rendra les rues plus sûres pour tout le monde.",
    "de": "Der Stadtrat hat am Dienstag beschlossen, das Radwegenetz zu erweitern, eine Entscheidung, die nach "
    "Ansicht der Befürworter die Straßen für alle sicherer macht.",
    "es": "El ayuntamiento votó el martes para ampliar la red de carriles bici, una decisión que según sus "
    "partidarios hará las calles más seguras para todos.",
}


@pytest.mark.parametrize("code", sorted(LANGUAGE_SAMPLES))
def test_language_is_detected(code):
    assert detect_language(LANGUAGE_SAMPLES[code]) == code
    cleaned = clean_content(ContentRecord(external_id=code, title="", body=f"<p>{LANGUAGE_SAMPLES[code]}</p>"))
    assert cleaned.language == code


def test_language_is_empty_when_unsure():
    for text in ("", "ok", "Hello", "12345 67890 !!!", "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3067\u3059\u3002" * 3):
        assert detect_language(text) == ""


def test_batch_detection_matches_single_detection():
    texts = [*LANGUAGE_SAMPLES.values(), "ok", ""]
    assert detect_languages(texts) == [detect_language(text) for text in texts] == ["en", "fr", "de", "es", "", ""]
    records = [ContentRecord(external_id=str(i), title="", body=text) for i, text in enumerate(texts)]
    records.append(ContentRecord(external_id="declared", title="", body=LANGUAGE_SAMPLES["fr"], language="pt_BR"))
    cleaned = clean_contents(records)
    assert [r.language for r in cleaned] == ["en", "fr", "de", "es", "", "", "pt"]
    assert [r.content_hash for r in cleaned] == [clean_content(r).content_hash for r in records]


def test_declared_language_is_kept_as_its_primary_subtag():
    cleaned = clean_content(
        ContentRecord(external_id="1", title="Titre", body=LANGUAGE_SAMPLES["en"], language="FR-ca")
    )
    assert cleaned.language == "fr"


def test_configured_languages(settings):
    settings.MEDIACHAT = {**settings.MEDIACHAT, "INGEST_LANGUAGES": ["en", "de"]}
    assert detect_language(LANGUAGE_SAMPLES["de"]) == "de"
    settings.MEDIACHAT = {**settings.MEDIACHAT, "INGEST_LANGUAGES": ["en", "xx"]}
    with pytest.raises(ImproperlyConfigured, match="unknown ISO 639-1"):
        detect_language(LANGUAGE_SAMPLES["en"])


def test_detector_is_built_once_per_language_set():
    assert cleaning._detector() is cleaning._detector()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a/b", "https://example.com/a/b"),
        # Tracking parameters go; the others are sorted.
        (
            "https://example.com/a?utm_source=x&b=2&UTM_Medium=y&a=1&fbclid=abc&gclid=def",
            "https://example.com/a?a=1&b=2",
        ),
        ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
        # Case, default port, fragment, trailing slash, credentials.
        ("HTTPS://Example.COM:443/Path/Page/#section-2", "https://example.com/Path/Page"),
        ("http://example.com:80/", "http://example.com/"),
        ("http://example.com:8080/x/", "http://example.com:8080/x"),
        ("https://user:secret@example.com/a", "https://example.com/a"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com/a/./b/../c", "https://example.com/a/c"),
        # Encoding normalised; international domain names in punycode.
        ("https://example.com/caf\u00e9 menu?q=\u00fc", "https://example.com/caf%C3%A9%20menu?q=%C3%BC"),
        ("https://m\u00fcnchen.de/news", "https://xn--mnchen-3ya.de/news"),
        # No scheme: https.
        ("example.com/a/", "https://example.com/a"),
        ("//cdn.example.com/a", "https://cdn.example.com/a"),
        # Not a web address.
        ("", ""),
        ("   ", ""),
        ("mailto:desk@example.com", ""),
        ("ftp://example.com/file", ""),
        ("javascript:alert(1)", ""),
        ("not a url", ""),
        ("http://exa mple.com/", ""),
        ("https://example.com:99999/", ""),
    ],
)
def test_canonical_url(url, expected):
    assert canonical_url(url) == expected


def test_same_text_in_other_markup_or_spacing_hashes_alike():
    a = clean_content(ContentRecord(external_id="1", title="Bike  lanes", body="<p>One <b>two</b>.</p><p>Three.</p>"))
    b = clean_content(ContentRecord(external_id="2", title=" Bike lanes ", body="One   two.\n\nThree."))
    c = clean_content(ContentRecord(external_id="3", title="Bike lanes", body="<div>One two.</div>\n<div>Three.</div>"))
    assert a.content_hash == b.content_hash == c.content_hash
    assert len(a.content_hash) == 64 and int(a.content_hash, 16) >= 0
    d = clean_content(ContentRecord(external_id="4", title="Bike lanes", body="One two. Four."))
    e = clean_content(ContentRecord(external_id="5", title="Bus lanes", body="One two.\n\nThree."))
    assert len({a.content_hash, d.content_hash, e.content_hash}) == 3


def test_clean_customer():
    record = CustomerRecord(
        channel="email",
        source="zendesk",
        external_id="t-1",
        subject="Re: <b>my subscription</b> &amp; invoice",
        text="<p>Bonjour,</p><p>Je voudrais annuler mon abonnement au journal, merci de me confirmer la date.</p>",
        received_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    cleaned = clean_customer(record)
    assert cleaned.subject == "Re: my subscription & invoice"
    assert cleaned.text == ("Bonjour,\n\nJe voudrais annuler mon abonnement au journal, merci de me confirmer la date.")
    assert cleaned.language == "fr"
    assert cleaned.content_hash == content_hash(cleaned.subject, cleaned.text)
    assert record.subject.startswith("Re: <b>")
