"""What the chat path does with a message's understanding (intent and entities): the plan of one reply.

A follow-up the conversation resolves ("more like the second one", "shorter") is answered as such: its
reference is more precise than any intent. Otherwise the intent's action decides:

- small talk, help, account and feedback, and out of scope: a short written reply, no retrieval and no
  model (the chat model knows the catalog, not conversation) — unless an out-of-scope message names
  something of the catalog, or has topic words a search finds, which is then answered from the catalog;
- latest news: the newest items; more like this: neighbours of what the last reply showed;
- everything else (search, recommend, explain, compare, summarize, follow): the catalog search.

Sections, tags, authors and dates the message names filter the search; date words are not search terms.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from personalization.search import CatalogFilter, catalog_search, query_terms

from .followups import FollowUp, Kind, own_terms, shown_ids

# An out-of-scope message is the catalog's when an item is this close in meaning (all-MiniLM-L6-v2 cosine):
# "carbon markets" and the carbon-markets podcast are; "tell me a joke" and a story that mentions one are not.
KNOWN_SIMILARITY = 0.5
# Actions (personalization.models.Intent.Action values) answered without retrieval.
WRITTEN = {"small_talk", "help", "support", "fallback"}
# Words that name a kind of content rather than a topic.
KIND_WORDS = {
    "podcast": "podcast", "podcasts": "podcast", "episode": "podcast", "episodes": "podcast",
    "video": "video", "videos": "video", "clip": "video", "clips": "video",
    "article": "article", "articles": "article",
}  # fmt: skip
CATALOG_KINDS = {"section", "tag", "author", "content", "person", "place", "organization"}

REPLIES = {
    "greeting": "Hello! I can find articles, videos and podcasts from our catalog: ask me about a topic, "
    "a section or what's new.",
    "thanks": "You're welcome! Ask me anytime for more to read, watch or listen to.",
    "goodbye": "Goodbye! Come back anytime for what's new.",
    "help": "I find and recommend content from our catalog. Try “what's new in science?”, “anything on "
    "climate this week?”, “more like the second one” or “shorter please”.",
    "subscription_account": "For your subscription, billing or account, please see your account page or "
    "contact our support team; I can help you find something to read.",
    "feedback_complaint": "Thank you for telling us; your feedback reaches our editors. Rate any reply with "
    "the thumbs to help me improve.",
}
ACTION_REPLIES = {
    "small_talk": REPLIES["greeting"],
    "help": REPLIES["help"],
    "support": REPLIES["subscription_account"],
    "fallback": "That's outside what I can help with: I know our catalog of articles, videos and podcasts. "
    "Ask me about a topic, a section or what's new.",
}


@dataclass(frozen=True)
class Plan:
    follow: FollowUp
    written: str = ""  # a reply written without retrieval or model; "" when the catalog answers
    # Out of scope with topic words: the written reply stands only if a search of them finds nothing
    # (a bare topic like "carbon markets" is often unsure to a classifier, never to the catalog).
    searchable: bool = False


def catalog_knows(terms: Sequence[str], *, now: datetime) -> bool:
    """Whether the catalog clearly has something on `terms` (blocking: a search).

    An item close in meaning counts; without embeddings (none computed yet), an item whose title, summary
    or tags hold every term (a word in a body is too weak a sign).
    """
    wanted = query_terms(" ".join(terms))
    for hit in catalog_search(" ".join(terms), limit=3, now=now):
        if hit.similarity is not None:
            if hit.similarity >= KNOWN_SIMILARITY:
                return True
            continue
        content = hit.content
        described = " ".join([content.title, content.summary, *(t.name for t in content.tags.all())]).lower()
        if wanted and all(term in described for term in wanted):
            return True
    return False


def catalog_filter(entities: Sequence[dict], kinds: Sequence[str] = ()) -> CatalogFilter | None:
    """The search filter of a message's entities and the kinds of content it names (None: no filter)."""

    def values(kind: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(e["value"]) for e in entities if e.get("kind") == kind))

    since = until = None
    when = ""
    for entity in entities:
        if entity.get("kind") == "date" and "/" in str(entity.get("value", "")):
            start, end = str(entity["value"]).split("/", 1)
            try:
                since, until = datetime.fromisoformat(start), datetime.fromisoformat(end)
            except ValueError:
                continue
            when = " ".join(str(entity.get("text", "")).split())
            break
    found = CatalogFilter(
        values("section"), values("tag"), values("author"), since, until, tuple(dict.fromkeys(kinds)), when
    )
    return found if found else None


DATE_PREPOSITIONS = frozenset("since before after from in on during until till between over within for".split())


def date_phrase(filters: CatalogFilter | None) -> str:
    """The message's dates as the reader wrote them, to follow a topic: " from this week", " since Monday"."""
    when = filters.when if filters is not None else ""
    if not when:
        return ""
    return f" {when}" if when.split()[0].lower() in DATE_PREPOSITIONS else f" from {when}"


def _without_dates(text: str, entities: Sequence[dict]) -> str:
    """`text` less the spans of its date mentions ("this week" is when, not what)."""
    for entity in sorted((e for e in entities if e.get("kind") == "date"), key=lambda e: -int(e.get("start", 0))):
        start, end = int(entity.get("start", 0)), int(entity.get("end", 0))
        text = text[:start] + " " + text[end:]
    return text


def plan_reply(text: str, history: Sequence, follow: FollowUp, understanding) -> Plan:
    """The plan for message `text`: `follow` (the conversation's reading of it) adjusted by `understanding`.

    `understanding` is a personalization.understanding.recognizer.Understanding, or None (nothing classified
    it: the conversation's reading alone decides, as before intents existed).
    """
    if understanding is None or follow.kind not in (Kind.SEARCH, Kind.LATEST):
        return Plan(follow)
    entities = understanding.entities
    action = understanding.action if understanding.intent else ""
    names_catalog = any(e.get("kind") in CATALOG_KINDS for e in entities)
    if action in WRITTEN and not (action == "fallback" and names_catalog):
        searchable = action == "fallback" and follow.kind == Kind.SEARCH and bool(follow.terms)
        return Plan(follow, REPLIES.get(understanding.intent) or ACTION_REPLIES[action], searchable)

    kinds = (
        [KIND_WORDS[w] for w in query_terms(text) if w in KIND_WORDS] if follow.own_topic or not follow.terms else []
    )
    filters = catalog_filter(entities, kinds)
    terms = tuple(own_terms(_without_dates(text, entities))) if filters and filters.since else follow.terms
    terms = tuple(t for t in terms if t not in KIND_WORDS)
    if follow.kind == Kind.SEARCH and not terms and follow.own_topic:
        follow = replace(follow, kind=Kind.LATEST)
    follow = replace(follow, terms=terms, filters=filters)
    if action == "more_like":
        last_reply = next((t for t in reversed(history) if t.role == "assistant"), None)
        shown = shown_ids(last_reply) if last_reply is not None else ()
        if shown and not query_terms(" ".join(terms)):
            return Plan(replace(follow, kind=Kind.MORE, anchor_ids=shown, exclude_ids=shown))
    if action == "latest" and follow.kind == Kind.SEARCH and not terms:
        follow = replace(follow, kind=Kind.LATEST)
    return Plan(follow)
