"""The entity gazetteer: every surface form the extractor looks for, built from the catalog and the synonyms.

Sections (name and slug), tags, authors (full name, and surname where only one author has it), published
titles, editors' synonyms, and the people, places and organisations that published items name in at least
two documents. `gazetteer_rebuild` swaps the whole table in one transaction, so readers see the old
gazetteer or the new one, never half of it.
"""

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from ..models import Author, Content, EntityKind, EntitySynonym, GazetteerEntry, Section, Tag
from .entities import STOPWORDS, GazetteerEntryData, surface_normalise

MIN_DOCUMENTS = 2  # a name must appear in this many published items to enter the gazetteer
MAX_SURFACE = 300  # GazetteerEntry.surface and .value
BATCH_SIZE = 1000

# Light typing of names found in the catalog. Small lists; the catalog's own context words do the rest.
FIRST_NAMES = frozenset(
    """adam adrian agnese ahmed aisha alan alex alexander alice amelia amir ana andrea andrew angela anna anne
    antonio arjun barack ben benedict boris carlos caroline catherine charles charlotte chen chloe chris
    christine clara daniel david deborah diana diego donald elena elizabeth ella emily emma emmanuel eric
    fatima felix fernando frank gabriel george grace greta hannah harriet harry helen henry hugo ian imogen
    isabel jack jacob james jane javier jean jennifer jessica joe john jonathan jose joseph julia julian karen
    kate keir laura leo liam lin linda lucia lucy luis marco marcus margaret maria marie mark martin mary
    matteo maya mei michael michelle mira mohammed nadia natalia nicola nina noah olivia omar oscar owen paul
    peter piotr priya rachel rahul raj rebecca richard rishi robert rosa ruth sam samuel sara sarah sean
    sophie stephen susan tamsin thomas tom tomasz victoria william xi yusuf zoe""".split()
)
ORG_WORDS = frozenset(
    """inc ltd llc plc corp corporation company co group holdings university college school institute council
    ministry department agency authority commission committee board party bank fc club united trust
    foundation society association union hospital court police service services observatory museum theatre
    theater gallery library works press news times courier chamber commerce academy primary""".split()
)
PLACE_WORDS = frozenset(
    """street road avenue lane square bridge hill hills mount mountain bay river lake island islands valley
    park harbour harbor port coast beach quay estuary county province state city town district ground stadium
    arena green row way place gardens terrace crescent wharf dock docks marsh heath common yard yards""".split()
)
PLACES = frozenset(
    """afghanistan albania algeria argentina armenia australia austria bangladesh belgium bolivia brazil
    bulgaria cambodia canada chile china colombia croatia cuba cyprus denmark egypt england estonia ethiopia
    europe africa asia america finland france georgia germany ghana greece hungary iceland india indonesia
    iran iraq ireland israel italy japan jordan kenya korea latvia lebanon libya lithuania luxembourg
    malaysia mexico morocco nepal netherlands nigeria norway pakistan palestine peru philippines poland
    portugal qatar romania russia scotland serbia singapore slovakia slovenia somalia spain sudan sweden
    switzerland syria taiwan thailand tunisia turkey uganda ukraine venezuela vietnam wales yemen zimbabwe
    london paris berlin madrid rome washington beijing tokyo moscow kyiv delhi mumbai cairo lagos nairobi
    sydney toronto chicago boston dublin edinburgh manchester amsterdam brussels vienna warsaw prague
    istanbul dubai seoul shanghai jakarta lisbon athens stockholm oslo copenhagen helsinki geneva""".split()
) | {"new york", "los angeles", "san francisco", "hong kong", "united states", "united kingdom", "south africa"}
# Words before a name that say what it is: "in Saltmarsh", "said Mira Okonkwo".
PLACE_CONTEXT = frozenset("in at from near across around outside inside to into towards via".split())
PERSON_CONTEXT = frozenset("said says told by mr mrs ms dr mayor minister president professor".split())
# Titles before a name are context, not part of it: "Mayor Teodora Vance" is "Teodora Vance".
HONORIFICS = frozenset(
    """mr mrs ms miss dr prof professor sir dame lord lady mayor councillor councilor minister president
    senator judge inspector captain coach chancellor governor""".split()
)
CONNECTORS = frozenset("of de del della di da van von der du la le".split())
CALENDAR_WORDS = frozenset(
    """monday tuesday wednesday thursday friday saturday sunday january february march april may june july
    august september october november december""".split()
)

_WORD = re.compile(r"[^\W_][\w'\u2019-]*")
_TAG = re.compile(r"<[^>]{0,500}>")
_SENTENCE_END = re.compile(r"(?:^|[.!?:;\"“”(\n])\s*$")


# --- Names in the catalog's text --------------------------------------------------------------------------


@dataclass
class _Name:
    documents: int = 0
    place_votes: int = 0
    person_votes: int = 0


def _capitalised_runs(text: str) -> Iterator[tuple[list[str], str, str]]:
    """Runs of capitalised words (joined by spaces or a connector such as "of"): words, word before, word after."""
    words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
    i = 0
    while i < len(words):
        word, start, _ = words[i]
        if not word[0].isupper():
            i += 1
            continue
        run, j = [word], i + 1
        sentence_start = bool(_SENTENCE_END.search(text, max(0, start - 3), start)) or start == 0
        while j < len(words):
            gap = text[words[j - 1][2] : words[j][1]]
            nxt = words[j][0]
            if gap.strip(" &") or "\n" in gap:
                break
            if nxt[0].isupper():
                run += ["&", nxt] if "&" in gap else [nxt]
                j += 1
            elif nxt.lower() in CONNECTORS and j + 1 < len(words) and words[j + 1][0][0].isupper():
                if text[words[j][2] : words[j + 1][1]].strip():
                    break
                run += [nxt, words[j + 1][0]]
                j += 2
            else:
                break
        before = words[i - 1][0].lower() if i and not sentence_start else ""
        after = words[j][0].lower() if j < len(words) else ""
        yield (run, before, after) if not sentence_start else (["\0", *run], before, after)
        i = j


def _clean_run(run: list[str], lower_words: set[str]) -> list[str]:
    """The name in a run: without a sentence-initial common word, a leading "The", a trailing possessive."""
    if run[0] == "\0":
        # A sentence's first word is capitalised anyway: drop it when it is a common word ("After", "Residents").
        run = run[1:]
        if run and (run[0].lower() in STOPWORDS or (len(run) == 1 and run[0].lower() in lower_words)):
            run = run[1:]
    while run and run[0].lower() in {"the", "a", "an", "&"}:
        run = run[1:]
    while run and run[-1].lower() in CONNECTORS:
        run = run[:-1]
    if run:
        run[-1] = re.sub(r"['\u2019]s$", "", run[-1])
    return run


def _name_kind(words: list[str], name: _Name, lower_words: set[str]) -> str | None:
    """Organisation, place or person by the name's own words, then by the words around it; None if unsure."""
    lowered = [w.lower() for w in words]
    surface = " ".join(lowered)
    if any(w in ORG_WORDS for w in lowered[1:]) or (len(lowered) > 1 and lowered[-1] in ORG_WORDS):
        return EntityKind.ORGANIZATION
    if surface in PLACES:
        return EntityKind.PLACE
    if len(words) == 1:
        # A single word is a name only when the catalog never writes it in lower case and puts it "in" places.
        if surface in lower_words or surface in CALENDAR_WORDS or words[0].isupper():
            return None
        return EntityKind.PLACE if name.place_votes >= 2 and name.place_votes > name.person_votes else None
    if any(w in CALENDAR_WORDS for w in lowered):
        return None
    place = name.place_votes + (1.5 if lowered[-1] in PLACE_WORDS or lowered[0] in PLACE_WORDS else 0)
    person = name.person_votes + (1.5 if lowered[0] in FIRST_NAMES and len(words) <= 3 else 0)
    if place > person:
        return EntityKind.PLACE
    if person > place:
        return EntityKind.PERSON
    return None


def catalog_names(documents: Callable[[], Iterable[str]]) -> list[GazetteerEntryData]:
    """People, places and organisations named in at least MIN_DOCUMENTS documents, typed by heuristics.

    `documents()` is called twice (once to learn which words the catalog writes in lower case), so a large
    catalog streams from the database rather than sitting in memory.
    """
    lower_words = {
        m.group() for doc in documents() for m in _WORD.finditer(_TAG.sub(" ", doc or "")) if m.group()[0].islower()
    }
    names: dict[str, _Name] = defaultdict(_Name)
    spelled: dict[str, Counter] = defaultdict(Counter)
    for doc in documents():
        seen = set()
        for run, before, after in _capitalised_runs(_TAG.sub(" ", doc or "")):
            words = _clean_run(run, lower_words)
            if not words:
                continue
            honorific = words[0].lower().rstrip(".") in HONORIFICS
            if honorific:
                words = words[1:]
                if not words:
                    continue
            key = " ".join(words)
            spelled[key.lower()][key] += 1
            name = names[key.lower()]
            name.place_votes += before in PLACE_CONTEXT
            name.person_votes += honorific or before in PERSON_CONTEXT or after in {"said", "says", "told"}
            seen.add(key.lower())
        for key in seen:
            names[key].documents += 1
    entries = []
    for key, name in names.items():
        if name.documents < MIN_DOCUMENTS:
            continue
        display = spelled[key].most_common(1)[0][0]
        kind = _name_kind(display.split(), name, lower_words)
        surface = surface_normalise(display)
        if kind and surface and surface not in STOPWORDS:
            entries.append(GazetteerEntryData(kind, surface[:MAX_SURFACE], display[:MAX_SURFACE], None, name.documents))
    return entries


# --- The catalog ---------------------------------------------------------------------------------------


def _document(title: str, summary: str, body: str) -> str:
    """An item's text for name finding; a Title Case Title capitalises every word, so it is left out."""
    words = _WORD.findall(title)
    title_case = len(words) >= 4 and sum(w[0].isupper() for w in words) > 0.6 * len(words)
    return "\n".join(([] if title_case else [title]) + [summary, body])


def _catalog_entries() -> list[GazetteerEntryData]:
    published = Content.objects.published()
    live = Q(contents__in=published.values("pk"))
    entries = []
    for section in Section.objects.annotate(n=Count("contents", filter=live)):
        for form in (section.name, section.slug):
            entries.append(
                GazetteerEntryData(EntityKind.SECTION, surface_normalise(form), section.slug, section.pk, section.n)
            )
    for tag in Tag.objects.annotate(n=Count("contents", filter=live)):
        for form in (tag.name, tag.slug):
            entries.append(GazetteerEntryData(EntityKind.TAG, surface_normalise(form), tag.slug, tag.pk, tag.n))
    authors = list(Author.objects.annotate(n=Count("contents", filter=live)))
    surnames = Counter(surface_normalise(a.name.split()[-1]) for a in authors if a.name.split())
    for author in authors:
        entries.append(
            GazetteerEntryData(EntityKind.AUTHOR, surface_normalise(author.name), author.slug, author.pk, author.n)
        )
        if len(author.name.split()) > 1 and surnames[surname := surface_normalise(author.name.split()[-1])] == 1:
            entries.append(GazetteerEntryData(EntityKind.AUTHOR, surname, author.slug, author.pk, author.n))
    for pk, title, slug in published.values_list("pk", "title", "slug").iterator(chunk_size=2000):
        entries.append(GazetteerEntryData(EntityKind.CONTENT, surface_normalise(title), slug[:MAX_SURFACE], pk))
        # "Video: Mira Okonkwo's win" is also asked for as "Mira Okonkwo's win".
        label, sep, rest = title.partition(":")
        if sep and len(label.split()) <= 2 and len(rest.split()) >= 2:
            entries.append(GazetteerEntryData(EntityKind.CONTENT, surface_normalise(rest), slug[:MAX_SURFACE], pk))
    texts = published.values_list("title", "summary", "body")
    entries += catalog_names(lambda: (_document(*parts) for parts in texts.iterator(chunk_size=500)))
    return entries


def _synonym_entries(catalog: list[GazetteerEntryData]) -> list[GazetteerEntryData]:
    """Editors' synonyms, each pointing at its canonical catalog entity when one matches its value."""
    canonical: dict[tuple[str, str], GazetteerEntryData] = {}
    for entry in catalog:
        canonical.setdefault((entry.kind, surface_normalise(entry.value)), entry)
        canonical.setdefault((entry.kind, entry.surface), entry)
    entries = []
    for synonym in EntitySynonym.objects.all():
        target = canonical.get((synonym.kind, surface_normalise(synonym.value)))
        value, ref_id, weight = (target.value, target.ref_id, target.weight) if target else (synonym.value, None, 1.0)
        entries.append(
            GazetteerEntryData(synonym.kind, surface_normalise(synonym.synonym), value[:MAX_SURFACE], ref_id, weight)
        )
    return entries


def gazetteer_build() -> list[GazetteerEntryData]:
    """Every surface form, once per (kind, surface); an editor's synonym replaces any other use of its surface.

    Surfaces are normalised (`surface_normalise`); empty ones and lone stop words ("us", "it") are left out.
    """
    catalog = _catalog_entries()
    synonyms = _synonym_entries(catalog)
    taken = {entry.surface for entry in synonyms}
    result: dict[tuple[str, str], GazetteerEntryData] = {}
    for entry in (*synonyms, *(e for e in catalog if e.surface not in taken)):
        surface = entry.surface[:MAX_SURFACE]
        if len(surface) < 2 or surface in STOPWORDS or (entry.kind, surface) in result:
            continue
        result[(entry.kind, surface)] = GazetteerEntryData(
            entry.kind, surface, entry.value, entry.ref_id, float(entry.weight)
        )
    return list(result.values())


def gazetteer_rebuild() -> int:
    """Replace every GazetteerEntry with a fresh build, atomically; returns how many entries there are now."""
    entries = gazetteer_build()
    built_at = timezone.now()
    rows = [
        GazetteerEntry(
            kind=e.kind, surface=e.surface, value=e.value, ref_id=e.ref_id, weight=e.weight, built_at=built_at
        )
        for e in entries
    ]
    with transaction.atomic():
        GazetteerEntry.objects.all().delete()
        GazetteerEntry.objects.bulk_create(rows, batch_size=BATCH_SIZE)
    return len(rows)
