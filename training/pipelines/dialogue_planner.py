"""Planning synthetic catalog dialogues turn by turn, over a lexical retrieval (`lexical_index`).

`Planner.dialogue(family)` plans one conversation ending with a question of that family (see
`dialogue_templates.FAMILIES`); `dialogues.py` renders plans into chat messages. Documents are indexed once
(by section, author, month, kind, visible word), so a turn costs about the size of its answer, not of the
catalog. Plain Python: no Django imports.
"""

import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import takewhile

from . import dialogue_templates as tpl
from .chat_format import ContextItem, context_line
from .corpus import SourceDocument
from .lexical_index import KIND_WORDS, WORD_RE, LexicalIndex, words

NOTHING_RATE = 0.12  # share of opening questions about something the catalog does not hold
TAG_SHARE = 0.85  # topics asked about: a tag of a document this often, else a word of its title
NEIGHBOUR_SHARE = 0.4  # "more like that" offers documents scoring at least this share of the best neighbour


@dataclass(frozen=True)
class DialogueTurn:
    """One planned turn: the question family, the question, the context items and the items the reply cites."""

    family: str  # one of dialogue_templates.FAMILIES
    question: str
    context_ids: tuple[int, ...]
    relevant_ids: tuple[int, ...]
    reply: str


def item_of(doc: SourceDocument) -> ContextItem:
    """The context item the engine shows for a document."""
    return ContextItem(
        id=doc.id, title=doc.title, summary=doc.summary, date=doc.date, section=doc.section, kind=doc.kind
    )


@dataclass
class _Step:
    turn: DialogueTurn
    relevant: list[SourceDocument]
    matches: list[SourceDocument] | None = None  # all documents answering the question, newest first ("older")
    distractor: Callable[[SourceDocument], bool] | None = None  # which documents may be shown as non-answers


def _newest(docs: Iterable[SourceDocument]) -> list[SourceDocument]:
    return sorted(docs, key=lambda d: (d.date, d.id), reverse=True)


class Planner:
    """Plans conversations about `documents`, drawing every choice from `rng`; `k` items at most per reply."""

    def __init__(self, documents: Sequence[SourceDocument], rng: random.Random, k: int) -> None:
        self.docs = sorted(documents, key=lambda d: d.id)
        self.by_id = {d.id: d for d in self.docs}
        self.rng, self.k = rng, k
        self.index = LexicalIndex(self.docs)
        self.newest = _newest(self.docs)
        self.by: dict[str, dict[str, list[SourceDocument]]] = defaultdict(lambda: defaultdict(list))
        self._visible: dict[str, set[int]] = defaultdict(set)
        for d in self.newest:
            self.by["section"][d.section].append(d)
            self.by["kind"][d.kind].append(d)
            self.by["month"][d.date[:7]].append(d)
            for author in d.authors:
                self.by["author"][author].append(d)
            for word in set(WORD_RE.findall(context_line(item_of(d)).casefold())):
                self._visible[word].add(d.id)
        # Words of title, whole summary and tags: a distractor must not be about the topic in what a retrieval
        # would match on (the body is left out: reading every body would make planning cost the corpus's size).
        self._words: dict[str, set[int]] = defaultdict(set)
        for d in self.docs:
            for word in set(WORD_RE.findall(" ".join((d.title, d.summary, *d.tags)).casefold())):
                self._words[word].add(d.id)
        self.dated = [d for d in self.newest if d.date]
        self._shows_cache: dict[str, list[SourceDocument]] = {}
        self._mentions_cache: dict[str, frozenset[int]] = {}
        dates = [d.date for d in self.docs if d.date]
        self.today = date.fromisoformat(max(dates)) + timedelta(days=1) if dates else date(2026, 1, 1)

    # --- Conversations ---------------------------------------------------------------------------------

    def dialogue(self, family: str) -> list[DialogueTurn]:
        """A conversation of 1 to 3 turns ending with a `family` question (2 or 3 turns for a follow-up)."""
        length = self.rng.randint(2 if family in tpl.FOLLOW_UP_FAMILIES else 1, 3)
        for _ in range(20):
            steps: list[_Step] = []
            while len(steps) < length - 1:
                steps.append(self._step(self._middle_family(steps), steps))
            final = self._step(family, steps)
            if final.turn.family == family:
                break
        return [s.turn for s in (*steps, final)]

    def _middle_family(self, steps: list[_Step]) -> str:
        if steps and self.rng.random() < 0.5:
            return self.rng.choice(("more", "older", "shorter"))
        return self.rng.choice(tpl.BASE_FAMILIES)

    def _step(self, family: str, steps: list[_Step]) -> _Step:
        shown = {i for s in steps for i in s.turn.relevant_ids}
        maker = getattr(self, f"_{family}")
        step = maker(steps[-1] if steps else None, shown) if family in tpl.FOLLOW_UP_FAMILIES else maker()
        return step if step is not None else self._topic()

    # --- Opening questions -----------------------------------------------------------------------------

    def _topic(self) -> _Step:
        term = self._term()
        mentioned = self._mentions(term)
        return self._answer("topic", {"topic": term}, self._shows(term), lambda d: d.id not in mentioned)

    def _section(self) -> _Step:
        name = self._pick(self.by["section"], tpl.ABSENT_SECTIONS)
        return self._answer("section", {"section": name}, self.by["section"].get(name, []), lambda d: d.section != name)

    def _author(self) -> _Step:
        name = self._pick(self.by["author"], tpl.ABSENT_AUTHORS)
        # Authors are not on the context line: retrieval filters by author and the context holds only matches.
        return self._answer("author", {"author": name}, self.by["author"].get(name, []), None)

    def _date(self) -> _Step:
        dated = self.dated
        if dated and self.rng.random() < 0.6:
            month = self.rng.choice(dated).date[:7]
            years = {m[:4] for m in self.by["month"] if m and m[5:7] == month[5:7]}
            period = f"in {tpl.MONTHS[int(month[5:7]) - 1]}" + (f" {month[:4]}" if len(years) > 1 else "")
            other = lambda d: bool(d.date) and d.date[:7] != month  # noqa: E731
            return self._answer("date", {"period": period}, self.by["month"][month], other)
        period, days = self.rng.choice(tpl.RELATIVE_PERIODS)
        start = (self.today - timedelta(days=days)).isoformat()
        # "Last week" needs today's date, which the prompt lacks: retrieval filters, no distractors.
        return self._answer("date", {"period": period}, list(takewhile(lambda d: d.date >= start, dated)), None)

    def _kind(self) -> _Step:
        kind = self.rng.choice(sorted(self.by["kind"]))
        names = {"kind": kind, "kinds": tpl.KIND_PLURALS.get(kind, kind + "s")}
        names["Kinds"] = names["kinds"].capitalize()
        if self.rng.random() < 0.3:
            return self._answer("kind", names, self.by["kind"][kind], lambda d: d.kind != kind)
        term = self._term(self.by["kind"][kind] if self.rng.random() < 0.7 else None)
        mentioned = self._mentions(term)
        matches = [d for d in self._shows(term) if d.kind == kind]
        return self._answer(
            "kind", {**names, "topic": term}, matches, lambda d: d.kind != kind or d.id not in mentioned
        )

    # --- Follow-ups ------------------------------------------------------------------------------------

    def _more(self, prev: _Step | None, shown: set[int]) -> _Step | None:
        if prev is None or not prev.relevant:
            return None
        return self._neighbours("more", {}, prev.relevant, shown)

    def _more_nth(self, prev: _Step | None, shown: set[int]) -> _Step | None:
        if prev is None or len(prev.relevant) < 2:
            return None
        nth = self.rng.randrange(min(len(prev.relevant), len(tpl.ORDINALS)))
        return self._neighbours("more_nth", {"ordinal": tpl.ORDINALS[nth]}, [prev.relevant[nth]], shown)

    def _neighbours(self, family: str, names: dict, refs: list[SourceDocument], shown: set[int]) -> _Step:
        """The `k` documents most like `refs` not cited yet; documents sharing no word with them are distractors."""
        ranked = self.index.similar(refs, exclude=shown)
        related = set(ranked) | shown | {d.id for d in refs}
        near = [self.by_id[i] for i in self.index.similar(refs, k=self.k, exclude=shown, min_share=NEIGHBOUR_SHARE)]
        return self._finish(family, names, near, lambda d: d.id not in related)

    def _older(self, prev: _Step | None, shown: set[int]) -> _Step | None:
        if prev is None or prev.matches is None or not any(d.date for d in prev.relevant):
            return None
        cutoff = min(d.date for d in prev.relevant if d.date)
        older = [d for d in prev.matches if d.id not in shown and d.date and d.date < cutoff]
        # One item already cited is what a retrieval for the same question returns first; the model skips it.
        step = self._finish("older", {}, older, prev.distractor, extra=[self.rng.choice(prev.relevant)])
        step.matches = prev.matches
        return step

    def _shorter(self, prev: _Step | None, shown: set[int]) -> _Step | None:
        if prev is None or not prev.relevant or prev.turn.family == "shorter":
            return None
        items = [f"{d.title} [#{d.id}]" for d in prev.relevant]
        forms = [f"{self.rng.choice(tpl.SHORT_OPENINGS)} {'; '.join(items)}.".strip()]
        if len(items) > 1:
            forms.append(self.rng.choice(tpl.TOP_PICK).format(item=items[0]))
        # "Shorter" must be noticeably shorter, or the example teaches nothing.
        reply = next((form for form in forms if len(form) <= 0.75 * len(prev.turn.reply)), None)
        if reply is None:
            return None
        relevant = [d for d in prev.relevant if f"[#{d.id}]" in reply]
        question = self.rng.choice(tpl.QUESTIONS["shorter"])
        context = tuple(d.id for d in prev.relevant)
        turn = DialogueTurn("shorter", question, context, tuple(d.id for d in relevant), reply)
        return _Step(turn, relevant, prev.matches, prev.distractor)

    # --- Shared ----------------------------------------------------------------------------------------

    def _answer(self, family: str, names: dict, matches: list, distractor: Callable | None) -> _Step:
        step = self._finish(family, names, matches, distractor)
        step.matches = matches
        return step

    def _finish(
        self, family: str, names: dict, matches: list, distractor: Callable | None, *, extra: Sequence = ()
    ) -> _Step:
        relevant = matches[: self.k]
        template = "kind_only" if family == "kind" and "topic" not in names else family
        context = [*relevant, *extra, *self._distractors(distractor, self.rng.choice((0, 1, 1, 2)))]
        self.rng.shuffle(context)
        question = self.rng.choice(tpl.QUESTIONS[template]).format(**names)
        question = question[0].upper() + question[1:]
        reply = self._reply(template, names, relevant)
        turn = DialogueTurn(family, question, tuple(d.id for d in context), tuple(d.id for d in relevant), reply)
        return _Step(turn, relevant, None, distractor)

    def _distractors(self, allowed: Callable | None, count: int) -> list[SourceDocument]:
        chosen: dict[int, SourceDocument] = {}
        for _ in range(20 * count if allowed else 0):  # rejection sampling: a pass over the catalog costs more
            doc = self.rng.choice(self.docs)
            if allowed(doc):
                chosen.setdefault(doc.id, doc)
            if len(chosen) == count:
                break
        return list(chosen.values())

    def _reply(self, template: str, names: dict, relevant: list[SourceDocument]) -> str:
        if not relevant:
            return self.rng.choice(tpl.NOTHING[template]).format(**names)
        opening = self.rng.choice(tpl.OPENINGS[template]).format(**names)
        style = self.rng.choice(("gist", "date", "inline"))
        if style == "inline":
            cited = [f"{d.title} [#{d.id}]" for d in relevant]
            listed = cited[0] if len(cited) == 1 else ", ".join(cited[:-1]) + " and " + cited[-1]
            return f"{opening} {listed}."
        lines = []
        for d in relevant:
            detail = _gist(d.summary) if style == "gist" else f"({d.date})" if d.date else ""
            lines.append(f"- {d.title} [#{d.id}]" + (f": {detail}" if style == "gist" and detail else f" {detail}"))
        return opening + "\n" + "\n".join(line.rstrip() for line in lines)

    def _term(self, docs: Sequence[SourceDocument] | None = None) -> str:
        """A topic to ask about: a visible tag or title word of a document, sometimes one the catalog lacks."""
        if docs is None and self.rng.random() < NOTHING_RATE:
            absent = [t for t in tpl.ABSENT_TOPICS if not self._mentions(t)]
            if absent:
                return self.rng.choice(absent)
        doc = self.rng.choice(list(docs or self.docs))
        tags = [t.casefold() for t in doc.tags if any(d.id == doc.id for d in self._shows(t.casefold()))]
        title_words = [w for w in words(doc.title) if len(w) >= 4 and w not in KIND_WORDS]
        # Tags name topics; title words only sometimes, as readers ask about things titles mention.
        candidates = tags if tags and (not title_words or self.rng.random() < TAG_SHARE) else title_words
        return self.rng.choice(candidates) if candidates else (words(doc.title) or [doc.title.casefold()])[0]

    def _shows(self, term: str) -> list[SourceDocument]:
        """Documents whose context line shows `term` (or its plural), newest first."""
        if term not in self._shows_cache:
            pattern = re.compile(rf"(?<!\w){re.escape(term)}(?:s|es)?(?!\w)")
            first = (WORD_RE.findall(term) or [""])[0]
            ids = self._visible.get(first, set()) | self._visible.get(first + "s", set())
            ids |= self._visible.get(first + "es", set())
            docs = [self.by_id[i] for i in ids]
            self._shows_cache[term] = _newest(d for d in docs if pattern.search(context_line(item_of(d)).casefold()))
        return self._shows_cache[term]

    def _mentions(self, term: str) -> frozenset[int]:
        """Ids of the documents whose title, summary or tags hold every word of `term` (or its plural)."""
        if term not in self._mentions_cache:
            found: set[int] | None = None
            for word in WORD_RE.findall(term.casefold()):
                ids = (
                    self._words.get(word, set())
                    | self._words.get(word + "s", set())
                    | self._words.get(word + "es", set())
                )
                found = ids if found is None else found & ids
            self._mentions_cache[term] = frozenset(found or ())
        return self._mentions_cache[term]

    def _pick(self, present: dict, absent: Sequence[str]) -> str:
        names = sorted(name for name in present if name)
        missing = [name for name in absent if name not in present]
        if missing and (not names or self.rng.random() < NOTHING_RATE):
            return self.rng.choice(missing)
        return self.rng.choice(names)


def _gist(summary: str, limit: int = 90) -> str:
    """The summary's first sentence, or its first clause when the sentence is long; "" when neither fits.

    Never a sentence cut mid-way: a model copies what it sees, trailing "…" included.
    """
    first = re.split(r"(?<=[.!?])\s", summary.strip(), maxsplit=1)[0].rstrip(".!?")
    if len(first) <= limit:
        return first
    clause = re.split(r",\s|;\s|:\s|\s[\u2013\u2014-]\s", first, maxsplit=1)[0]
    return clause if 25 <= len(clause) <= limit else ""
