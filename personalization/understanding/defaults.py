"""The default intent set of the media assistant: its intents, what the chat path does with each, and
examples written for it (`data/default_intents.yml`, Rasa NLU YAML)."""

from pathlib import Path

from personalization.models import OUT_OF_SCOPE, Intent, IntentExample
from training.pipelines.intent_data import IntentRecord, read_rasa_yaml

from .examples import IntentSpec, intent_examples_import

DEFAULT_INTENTS_PATH = Path(__file__).resolve().parent / "data" / "default_intents.yml"

Action = Intent.Action
DEFAULT_INTENTS: dict[str, IntentSpec] = {
    "recommend": IntentSpec(Action.RECOMMEND, "Something to read, watch or listen to, chosen for the reader."),
    "search_topic": IntentSpec(Action.SEARCH, "Content about a topic, person, place or thing the reader names."),
    "latest_news": IntentSpec(Action.LATEST, "What is new, today or lately, possibly in one section."),
    "more_like_this": IntentSpec(Action.MORE_LIKE, "More content like an item cited or just read."),
    "summarize": IntentSpec(Action.SUMMARIZE, "A summary of a cited item or a story."),
    "explain": IntentSpec(Action.EXPLAIN, "An explanation of a concept or situation, grounded in the catalog."),
    "compare": IntentSpec(Action.COMPARE, "Two or more items, positions, options or periods compared."),
    "follow_topic": IntentSpec(Action.FOLLOW, "Follow a topic, section, author or story."),
    "unfollow_topic": IntentSpec(Action.FOLLOW, "Stop following a topic, section, author or story."),
    "subscription_account": IntentSpec(Action.SUPPORT, "Subscription, billing, sign-in, profile and privacy."),
    "feedback_complaint": IntentSpec(Action.SUPPORT, "Feedback on answers, journalism or the site; complaints."),
    "greeting": IntentSpec(Action.SMALL_TALK, "Hello."),
    "thanks": IntentSpec(Action.SMALL_TALK, "Thank you."),
    "goodbye": IntentSpec(Action.SMALL_TALK, "Goodbye."),
    "help": IntentSpec(Action.HELP, "What the assistant can do and how to use it."),
    OUT_OF_SCOPE: IntentSpec(Action.FALLBACK, "Anything the media assistant cannot help with."),
}


def default_intent_records() -> list[IntentRecord]:
    """The default set's examples, as written in `data/default_intents.yml`."""
    return read_rasa_yaml(DEFAULT_INTENTS_PATH.read_text(encoding="utf-8"))


def intents_load_defaults() -> int:
    """Add the default intents and examples that are missing; returns how many examples were added.

    Idempotent, and never changes or deletes what is there: intents already there keep their action,
    description and active flag, and only examples an intent lacks are added (with source default).
    """
    summary = intent_examples_import(
        text=DEFAULT_INTENTS_PATH.read_text(encoding="utf-8"),
        fmt="rasa",
        source=IntentExample.Source.DEFAULT,
        intent_specs=DEFAULT_INTENTS,
    )
    return summary.created_total
