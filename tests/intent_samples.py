"""Small intent data the tests make: four intents over eight topics, and out-of-scope queries."""

import itertools
import random

from training.pipelines.intent_data import IntentRecord

TOPICS = ["climate", "football", "elections", "space", "jazz", "startups", "cooking", "the economy"]
TEMPLATES = {
    "latest_news": ["what's new today", "latest news on {t}", "any fresh stories about {t}", "what happened with {t}"
                    " this week", "show me today's headlines", "breaking news {t}"],
    "search_topic": ["find articles about {t}", "search for {t}", "do you have anything on {t}",
                     "I'm looking for pieces about {t}", "look up {t} for me"],
    "greeting": ["hello", "hi there", "good morning", "hey", "hiya, how are you", "good evening to you"],
    "thanks": ["thanks", "thank you so much", "cheers for that", "much appreciated", "thanks a lot, that helps",
               "great, thank you"],
}  # fmt: skip
OUT = [
    "what's 17 times 23", "book me a flight to Rome", "how do I bake sourdough", "what is my bank balance",
    "tell me a joke about cats", "set an alarm for 7am", "how tall is mount everest", "translate hello to german",
]  # fmt: skip


def examples(seed: int = 0) -> list[IntentRecord]:
    rng = random.Random(seed)
    records = []
    for label, templates in TEMPLATES.items():
        texts = {tpl.format(t=t) for tpl, t in itertools.product(templates, TOPICS)}
        texts |= {text + suffix for text in list(texts) for suffix in ("?", " please")}
        chosen = sorted(texts)
        rng.shuffle(chosen)
        records += [IntentRecord(text, label) for text in chosen[:40]]
    return records
