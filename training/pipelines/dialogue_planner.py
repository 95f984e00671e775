"""Planning synthetic catalog dialogues: a lexical retrieval over the documents and the turn-by-turn planner.

`Planner.dialogue(family)` plans one conversation ending with a question of that family (see
`dialogue_templates.FAMILIES`); `dialogues.py` renders plans into chat messages. Plain Python: no Django imports.
"""

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from . import dialogue_templates as tpl
from .chat_format import ContextItem, context_line
from .corpus import SourceDocument

NOTHING_RATE = 0.12  # share of opening questions about something the catalog does not hold
_WORD_RE = re.compile(r"[^\W\d_]+")
# "podcast" in two titles says nothing about their subjects.
_KIND_WORDS = frozenset(tpl.KIND_PLURALS) | frozenset(tpl.KIND_PLURALS.values())


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


def words(text: str) -> list[str]:
    """Lower-case content words (letters only, three or more, no stopwords)."""
    return [w for w in _WORD_RE.findall(text.casefold()) if len(w) >= 3 and w not in tpl.STOPWORDS]


class LexicalIndex:
    """BM25 over each document's title, summary, tags and section: the retrieval the dialogues assume."""

    def __init__(self, documents: Sequence[SourceDocument], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.terms = {
            d.id: Counter(words(" ".join((d.title, d.summary, " ".join(d.tags), d.section)))) for d in documents
        }
        self.df = Counter(term for counts in self.terms.values() for term in counts)
        self.avg_len = max(sum(sum(c.values()) for c in self.terms.values()) / max(len(documents), 1), 1.0)
        self.k1, self.b, self.n = k1, b, len(documents)

    def scores(self, query_words: Iterable[str]) -> dict[int, float]:
        """BM25 score of every document with at least one query word."""
        out: dict[int, float] = {}
        for term in set(query_words):
            if term not in self.df:
                continue
            idf = math.log(1 + (self.n - self.df[term] + 0.5) / (self.df[term] + 0.5))
            for doc_id, counts in self.terms.items():
                if tf := counts.get(term):
                    length = sum(counts.values())
                    norm = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * length / self.avg_len))
                    out[doc_id] = out.get(doc_id, 0.0) + idf * norm
        return out

    def similar(self, docs: Sequence[SourceDocument], *, k: int, exclude: Iterable[int] = ()) -> list[int]:
        """Ids of up to `k` documents sharing most with the title and tags of `docs`, best first, ties by id."""
        query = [w for w in words(" ".join(f"{d.title} {' '.join(d.tags)}" for d in docs)) if w not in _KIND_WORDS]
        skip = set(exclude) | {d.id for d in docs}
        ranked = sorted((-s, i) for i, s in self.scores(query).items() if i not in skip and s > 0)
        return [i for _, i in ranked[:k]]


@dataclass
class _Step:
    turn: DialogueTurn
    relevant: list[SourceDocument]
    template: str = ""
    predicate: Callable[[SourceDocument], bool] | None = None  # what "anything older on that" keeps matching
    pool: list[SourceDocument] = field(default_factory=list)  # distractors the question allows


class Planner:
    """Plans conversations about `documents`, drawing every choice from `rng`; `k` items at most per reply."""

    def __init__(self, documents: Sequence[SourceDocument], rng: random.Random, k: int) -> None:
        self.docs = sorted(documents, key=lambda d: d.id)
        self.by_id = {d.id: d for d in self.docs}
        self.rng, self.k = rng, k
        self.index = LexicalIndex(self.docs)
        self.visible = {d.id: context_line(item_of(d)).casefold() for d in self.docs}
        self.full = {d.id: " ".join((d.title, d.summary, d.body, *d.tags)).casefold() for d in self.docs}
        dates = [d.date for d in self.docs if d.date]
        self.today = date.fromisoformat(max(dates)) + timedelta(days=1) if dates else date(2026, 1, 1)

    # --- Conversations ---------------------------------------------------------------------------------

    def dialogue(self, family: str) -> list[DialogueTurn]:
        """A conversation of 1 to 3 turns ending with a `family` question (2 or 3 turns for a follow-up)."""
        follow_up = family in tpl.FOLLOW_UP_FAMILIES
        length = self.rng.randint(2 if follow_up else 1, 3)
        for _ in range(20):
            steps: list[_Step] = []
            while len(steps) < length - 1:
                steps.append(self._step(self._middle_family(steps), steps))
            final = self._step(family, steps)
            if final.turn.family == family:
                return [s.turn for s in (*steps, final)]
        return [s.turn for s in (*steps, final)]

    def _middle_family(self, steps: list[_Step]) -> str:
        if steps and self.rng.random() < 0.5:
            return self.rng.choice(("more", "older", "shorter"))
        return self.rng.choice(tpl.BASE_FAMILIES)

    def _step(self, family: str, steps: list[_Step]) -> _Step:
        shown = {i for s in steps for i in s.turn.relevant_ids}
        prev = steps[-1] if steps else None
        maker = getattr(self, f"_{family}")
        step = maker(prev, shown) if family in tpl.FOLLOW_UP_FAMILIES else maker()
        return step if step is not None else self._topic()

    # --- Opening questions -----------------------------------------------------------------------------

    def _topic(self) -> _Step:
        term = self._term()
        return self._answer("topic", {"topic": term}, self._shows(term), lambda d: not self._mentions(d, term))

    def _section(self) -> _Step:
        sections = sorted({d.section for d in self.docs if d.section})
        absent = [s for s in tpl.ABSENT_SECTIONS if s not in sections]
        name = self._pick(sections, absent)
        return self._answer("section", {"section": name}, lambda d: d.section == name, lambda d: d.section != name)

    def _author(self) -> _Step:
        authors = sorted({a for d in self.docs for a in d.authors})
        name = self._pick(authors, [a for a in tpl.ABSENT_AUTHORS if a not in authors])
        # Authors are not on the context line: retrieval filters by author and the context holds only matches.
        return self._answer("author", {"author": name}, lambda d: name in d.authors, None)

    def _date(self) -> _Step:
        dated = [d for d in self.docs if d.date]
        if dated and self.rng.random() < 0.6:
            month = self.rng.choice(dated).date[:7]
            years = {d.date[:4] for d in dated if d.date[5:7] == month[5:7]}
            period = f"in {tpl.MONTHS[int(month[5:7]) - 1]}" + (f" {month[:4]}" if len(years) > 1 else "")
            return self._answer(
                "date",
                {"period": period},
                lambda d: d.date[:7] == month,
                lambda d: bool(d.date) and d.date[:7] != month,
            )
        period, days = self.rng.choice(tpl.RELATIVE_PERIODS)
        start = (self.today - timedelta(days=days)).isoformat()
        # "last week" needs today's date, which the prompt lacks: retrieval filters, no distractors.
        return self._answer("date", {"period": period}, lambda d: start <= d.date < self.today.isoformat(), None)

    def _kind(self) -> _Step:
        kinds = sorted({d.kind for d in self.docs})
        kind = self.rng.choice(kinds)
        names = {"kind": kind, "kinds": tpl.KIND_PLURALS.get(kind, kind + "s")}
        names["Kinds"] = names["kinds"].capitalize()
        if self.rng.random() < 0.3:
            step = self._answer("kind", names, lambda d: d.kind == kind, lambda d: d.kind != kind)
            step.template = "kind_only"
            return step
        own = [d for d in self.docs if d.kind == kind]
        term = self._term(own if own and self.rng.random() < 0.7 else None)
        shows = self._shows(term)
        return self._answer(
            "kind",
            {**names, "topic": term},
            lambda d: d.kind == kind and shows(d),
            lambda d: d.kind != kind or not self._mentions(d, term),
        )

    # --- Follow-ups ------------------------------------------------------------------------------------

    def _more(self, prev: _Step | None, shown: set[int]) -> _Step | None:
        if prev is None or not prev.relevant:
            return None
        return self._finish("more", {}, *self._neighbours(prev.relevant, shown))

    def _more_nth(self, prev: _Step | None, shown: set[int]) -> _Step | None:
        if prev is None or len(prev.relevant) < 2:
            return None
        nth = self.rng.randrange(min(len(prev.relevant), len(tpl.ORDINALS)))
        names = {"ordinal": tpl.ORDINALS[nth]}
        return self._finish("more_nth", names, *self._neighbours([prev.relevant[nth]], shown))

    def _neighbours(self, refs: list[SourceDocument], shown: set[int]) -> tuple[list, list]:
        """The `k` documents most like `refs` not cited yet, and those sharing no word with them (distractors)."""
        near = [self.by_id[i] for i in self.index.similar(refs, k=self.k, exclude=shown)]
        related = set(self.index.similar(refs, k=len(self.docs))) | shown | {d.id for d in refs}
        return near, [d for d in self.docs if d.id not in related]

    def _older(self, prev: _Step | None, shown: set[int]) -> _Step | None:
        if prev is None or prev.predicate is None or not any(d.date for d in prev.relevant):
            return None
        cutoff = min(d.date for d in prev.relevant if d.date)
        older = self._newest(
            d for d in self.docs if d.id not in shown and d.date and d.date < cutoff and prev.predicate(d)
        )
        # One item already cited is what a retrieval for the same question returns first; the model skips it.
        step = self._finish("older", {}, older, prev.pool, extra=[self.rng.choice(prev.relevant)])
        step.predicate = prev.predicate
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
        ids = tuple(d.id for d in prev.relevant)
        turn = DialogueTurn("shorter", question, ids, tuple(d.id for d in relevant), reply)
        return _Step(turn, relevant, "shorter", prev.predicate, prev.pool)

    # --- Shared ----------------------------------------------------------------------------------------

    def _answer(self, family: str, names: dict, match: Callable, distractor: Callable | None) -> _Step:
        relevant = self._newest(d for d in self.docs if match(d))
        pool = [d for d in self.docs if distractor(d)] if distractor else []
        step = self._finish(family, names, relevant, pool)
        step.predicate = match
        return step

    def _finish(
        self, family: str, names: dict, relevant: list, pool: list, *, extra: Sequence[SourceDocument] = ()
    ) -> _Step:
        relevant = relevant[: self.k]
        template = "kind_only" if family == "kind" and "topic" not in names else family
        count = min(len(pool), self.rng.choice((0, 1, 1, 2)))
        context = [*relevant, *extra, *self.rng.sample(pool, count)]
        self.rng.shuffle(context)
        question = self.rng.choice(tpl.QUESTIONS[template]).format(**names)
        question = question[0].upper() + question[1:]
        reply = self._reply(template, names, relevant)
        turn = DialogueTurn(family, question, tuple(d.id for d in context), tuple(d.id for d in relevant), reply)
        return _Step(turn, relevant, template, None, pool)

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
            detail = _gist(d.summary) if style == "gist" else d.date
            lines.append(f"- {d.title} [#{d.id}]" + (f": {detail}" if detail and style == "gist" else ""))
            if style == "date" and detail:
                lines[-1] += f" ({detail})"
        return opening + "\n" + "\n".join(lines)

    def _term(self, docs: Sequence[SourceDocument] | None = None) -> str:
        """A topic to ask about: a visible tag or title word of a document, sometimes one the catalog lacks."""
        if docs is None and self.rng.random() < NOTHING_RATE:
            absent = [t for t in tpl.ABSENT_TOPICS if not any(self._mentions(d, t) for d in self.docs)]
            if absent:
                return self.rng.choice(absent)
        doc = self.rng.choice(list(docs or self.docs))
        tags = [t.casefold() for t in doc.tags if self._shows(t.casefold())(doc)]
        title_words = [w for w in words(doc.title) if len(w) >= 4 and w not in _KIND_WORDS]
        # Tags name topics; title words only sometimes, as readers ask about things titles mention.
        candidates = tags if tags and (not title_words or self.rng.random() < 0.75) else title_words
        return self.rng.choice(candidates) if candidates else (words(doc.title) or [doc.title.casefold()])[0]

    def _shows(self, term: str) -> Callable[[SourceDocument], bool]:
        pattern = re.compile(rf"(?<!\w){re.escape(term)}(?:s|es)?(?!\w)")
        return lambda d: pattern.search(self.visible[d.id]) is not None

    def _mentions(self, doc: SourceDocument, term: str) -> bool:
        return term in self.full[doc.id]

    def _pick(self, present: list[str], absent: list[str]) -> str:
        return (
            self.rng.choice(absent)
            if absent and (not present or self.rng.random() < NOTHING_RATE)
            else self.rng.choice(present)
        )

    def _newest(self, docs: Iterable[SourceDocument]) -> list[SourceDocument]:
        return sorted(docs, key=lambda d: (d.date, d.id), reverse=True)


def _gist(summary: str, limit: int = 70) -> str:
    first = re.split(r"(?<=[.!?])\s", summary.strip(), maxsplit=1)[0].rstrip(".!?")
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return first
