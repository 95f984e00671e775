"""The chat corpus: cleaning (markup, unicode, whitespace, boilerplate), PII masking, near-duplicates, the split."""

import random

import pytest

from training.pipelines.corpus import SourceDialogue, SourceDocument, corpus_build, pii_mask, text_clean

VOCABULARY = (
    "river council budget school harbour museum orchestra bridge station library tram market garden festival "
    "hospital theatre stadium factory vineyard airport island forest mountain village castle tower canal "
    "election debate minister senate court verdict strike union salary pension tax inflation export import "
    "harvest drought flood storm winter summer spring autumn morning evening engineer doctor teacher farmer "
    "painter singer author pilot sailor chef nurse student climber runner swimmer rider baker printer"
).split()


def article(doc_id: int, *, words: int = 60, seed: int | None = None, **fields) -> SourceDocument:
    """A document of `words` words drawn at random: unrelated documents share almost no 3-shingles."""
    rng = random.Random(doc_id if seed is None else seed)
    body = " ".join(rng.choice(VOCABULARY) for _ in range(words)) + "."
    fields.setdefault("title", f"Story {doc_id}")
    fields.setdefault("summary", "")
    return SourceDocument(id=doc_id, body=body, **fields)


def test_markup_becomes_plain_paragraphs():
    html = (
        "<div><h2>Caf&eacute; &amp; bar</h2><p>First&nbsp;paragraph with <b>bold</b> text.</p>"
        "<script>var tracking = 1;</script><style>p {color: red}</style><nav>Home | News</nav>"
        "<p>Second line<br>continues here.</p><ul><li>one</li><li>two</li></ul></div>"
    )
    assert text_clean(html) == "Café & bar\nFirst paragraph with bold text.\nSecond line\ncontinues here.\none\ntwo"


def test_unicode_and_whitespace_are_normalised():
    text = "Cafe\u0301 \u200bopens\t\ttoday\u00a0 \r\n\r\n\r\n  second   paragraph \u2028third\x07 line\n\n"
    cleaned = text_clean(text)
    assert cleaned == "Café opens today\nsecond paragraph\nthird line"
    assert "\u0301" not in cleaned and cleaned == text_clean(cleaned)  # NFC, and cleaning is idempotent
    assert text_clean("Fish &amp; chips &lt;3") == "Fish & chips <3"  # entities in plain text


def test_boilerplate_lines_are_dropped_but_real_paragraphs_stay():
    lines = [
        "The bridge reopens on Monday after two years of repairs.",
        "Subscribe to our newsletter for the best stories every week!",
        "Share this article",
        "Read more",
        "© 2026 Daily Courier. All rights reserved.",
        "We use cookies to improve your experience on our site.",
        "Advertisement",
        "Follow us on social media",
    ]
    long_paragraph = (
        "The lawyer argued in court that the clause 'all rights reserved' printed on the old maps did not cover "
        "the copies the museum sold, and the judge agreed with her on every point."
    )
    assert text_clean("\n".join([*lines, long_paragraph])) == f"{lines[0]}\n{long_paragraph}"


@pytest.mark.parametrize(
    "text",
    [
        "+44 20 7946 0958",
        "+1 (555) 123-4567",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "06 12 34 56 78",
        "+33 6 12 34 56 78",
        "020 7946 0958",
        "+447911123456",
    ],
)
def test_phone_numbers_are_masked(text):
    assert pii_mask(f"Call {text} today.") == "Call <phone> today."


@pytest.mark.parametrize(
    "text",
    ["ada.park@example.com", "first.last+news@mail.example.co.uk", "x_y-z@sub.domain.org"],
)
def test_email_addresses_are_masked(text):
    assert pii_mask(f"Write to {text}, please.") == "Write to <email>, please."


@pytest.mark.parametrize(
    "text",
    [
        "In 2026 the city had 3.5 million visitors.",
        "Tickets cost $1,299.99 or €45.50.",
        "Published 2026-03-12, updated 12.03.2026 and 01.02.2026.",
        "ISBN 978-3-16-148410-0 and 978-0-306-40615-7.",
        "The final score was 3-1 after 90 minutes; page 123 of 456.",
        "About 1 234 567 people, up +3 points or +1.5% since 1999-2000.",
        "Doors open at 10:30, the show costs 100,000 yen.",
        "Flight BA 2490 lands at gate 23.",
    ],
)
def test_numbers_that_are_not_contacts_stay(text):
    assert pii_mask(text) == text


def test_cleaning_masks_contacts():
    assert text_clean("<p>Mail <a href='mailto:ed@news.example'>ed@news.example</a> or 555-123-4567</p>") == (
        "Mail <email> or <phone>"
    )


def test_near_duplicates_are_dropped_and_counted():
    original = article(1)
    words = original.body.split()
    words[30] = "lighthouse"  # one word changed in sixty: a correction, not a new story
    corrected = SourceDocument(id=2, title=original.title, summary="", body=" ".join(words))
    other = article(3)
    corpus = corpus_build([corrected, original, other], seed=0)
    assert [d.id for d in corpus.documents] == [1, 3]  # the lower id is kept, whatever the input order
    assert corpus.stats["dropped"] == {"empty": 0, "short": 0, "near_duplicate": 1}
    assert corpus_build([original, other], near_dup_threshold=0.8).stats["dropped"]["near_duplicate"] == 0


def test_short_and_empty_texts_are_dropped():
    docs = [
        article(1),
        SourceDocument(id=2, title="", summary="", body="<p> </p><script>x()</script>"),
        SourceDocument(id=3, title="Brief", summary="", body="Two words."),
    ]
    corpus = corpus_build(docs)
    assert [d.id for d in corpus.documents] == [1]
    assert corpus.stats["dropped"] == {"empty": 1, "short": 1, "near_duplicate": 0}


def test_lines_repeated_across_documents_are_dropped():
    footer = "Photo: Harbour Wire agency"
    docs = [article(i) for i in range(1, 11)]
    docs = [SourceDocument(id=d.id, title=d.title, summary="", body=f"{d.body}\n{footer}") for d in docs[:6]] + docs[6:]
    corpus = corpus_build(docs)
    assert not any(footer in text for text in corpus.train + corpus.validation)
    assert corpus.stats["repeated_lines_removed"] == 6
    assert all(footer not in d.body for d in corpus.documents)


def test_text_layout_and_kept_documents_are_cleaned():
    doc = SourceDocument(
        id=7, title="  <b>Harbour</b>  news ", summary="Boats return.", body="<p>The boats returned to the harbour.</p>"
    )
    corpus = corpus_build([doc], min_words=3)
    assert corpus.train + corpus.validation == ["Harbour news\n\nBoats return.\n\nThe boats returned to the harbour."]
    assert corpus.documents[0].title == "Harbour news"
    assert corpus.documents[0].body == "The boats returned to the harbour."


def test_split_is_stable_when_documents_are_added():
    first = [article(i) for i in range(1, 41)]
    more = [article(i) for i in range(41, 121)]
    small = corpus_build(first, validation_share=0.2, seed=3)
    large = corpus_build(more + first, validation_share=0.2, seed=3)
    assert set(small.validation) <= set(large.validation)
    assert set(small.train) <= set(large.train)
    assert 0.1 < len(large.validation) / large.stats["texts"] < 0.3
    assert corpus_build(first, validation_share=0.2, seed=4).validation != small.validation  # the seed matters


def test_validation_is_never_empty_with_two_texts():
    corpus = corpus_build([article(1), article(2)], validation_share=0.0)
    assert len(corpus.train) == 1 and len(corpus.validation) == 1
    assert corpus_build([article(1)], validation_share=0.0).validation == []


def test_dataset_hash_follows_texts_and_split_not_input_order():
    docs = [article(i) for i in range(1, 21)]
    corpus = corpus_build(docs, validation_share=0.2)
    assert corpus_build(list(reversed(docs)), validation_share=0.2).dataset_hash == corpus.dataset_hash
    edited = [*docs[:-1], article(20, seed=99)]
    assert corpus_build(edited, validation_share=0.2).dataset_hash != corpus.dataset_hash
    assert corpus_build(docs, validation_share=0.2, seed=1).dataset_hash != corpus.dataset_hash
    assert len(corpus.dataset_hash) == 64


def test_stats_count_what_happened():
    docs = [
        article(1, summary="Contact ada@example.com or +44 20 7946 0958."),
        article(2),
        SourceDocument(id=3, title="", summary="", body=""),
    ]
    dialogue = SourceDialogue(
        id="c1", turns=(("user", "Any news on the harbour? Reach me at 555-123-4567."), ("assistant", "  "))
    )
    seen: list[float] = []
    corpus = corpus_build(docs, [dialogue], min_words=5, progress=seen.append)
    stats = corpus.stats
    assert stats["documents_in"] == 3 and stats["documents_out"] == 2
    assert stats["dialogues_in"] == 1 and stats["dialogues_out"] == 1
    assert stats["dropped"] == {"empty": 1, "short": 0, "near_duplicate": 0}
    assert stats["pii_masked"] == {"email": 1, "phone": 2}
    texts = corpus.train + corpus.validation
    assert stats["texts"] == 3 == stats["train"] + stats["validation"]
    assert stats["characters"] == sum(map(len, texts)) and stats["words"] == sum(len(t.split()) for t in texts)
    assert corpus.dialogues == [
        SourceDialogue(id="c1", turns=(("user", "Any news on the harbour? Reach me at <phone>."),))
    ]
    assert seen[-1] == 1.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="validation_share"):
        corpus_build([article(1)], validation_share=1.0)
    with pytest.raises(ValueError, match="document ids"):
        corpus_build([article(1), article(1, seed=5)])
