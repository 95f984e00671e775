"""Understanding in the chat path: intent and entities for one message at a time, against the classifier alone.

    .venv/bin/python bench/understanding.py [--messages 500] [--threads 1]

Runs on DATABASE_URL when set, else on a SQLite file of its own under MEDIACHAT_DATA_DIR. It migrates,
loads the demo catalog and the default intent set into an empty database (`seed_demo`), trains and
activates the default intent model when none is active (`train_intent_model --activate`, about two
minutes) and rebuilds the gazetteer. Then it times, one message at a time and model load excluded,
what the chat path calls for every reader message, `understand()` (keyword rules, the deployed
classifier, entities: catalog names, synonyms, dates), side by side with the deployed classifier's own
`predict` and the entity extractor alone, on the same messages: the default set's examples and messages
naming the catalog's sections, authors, titles and dates. Torch keeps to `--threads` (1: an engine
process sharing two cores does). The last line is JSON: {"messages", "pipeline", "threads", "p50_ms",
"p95_ms", "classifier_p95_ms", "entities_p95_ms", "with_entities"}.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import django_setup, log, manage, percentile, server_env

PHRASES = [
    "anything new in {section} this week?",
    "articles by {author} since Monday",
    "tell me more about {title}",
    "{section} podcasts from last month",
    "what did {author} write yesterday",
    "more like {title} please",
]


def prepare(env: dict[str, str]) -> None:
    django_setup(env)
    from personalization.models import Content
    from training.models import ModelKind, ModelVersion

    if not Content.objects.exists():
        log("loading the demo catalog and the default intent set (seed_demo)")
        manage(env, "seed_demo")
    if not ModelVersion.objects.active().filter(kind=ModelKind.INTENT).exists():
        log("training the default intent model (train_intent_model --activate, about two minutes)")
        manage(env, "train_intent_model", "--activate")
    from personalization.understanding.gazetteer import gazetteer_rebuild

    log(f"gazetteer: {gazetteer_rebuild()} entries")


def messages(count: int, seed: int) -> list[str]:
    from personalization.models import Author, Content, IntentExample, Section

    rng = random.Random(seed)
    examples = list(IntentExample.objects.values_list("text", flat=True))
    sections = list(Section.objects.values_list("name", flat=True)) or ["news"]
    authors = list(Author.objects.values_list("name", flat=True)) or ["our reporter"]
    titles = list(Content.objects.filter(status=Content.Status.PUBLISHED).values_list("title", flat=True)[:200])
    titles = titles or ["the latest story"]
    named = [
        rng.choice(PHRASES).format(section=rng.choice(sections), author=rng.choice(authors), title=rng.choice(titles))
        for _ in range(count)
    ]
    pool = examples + named
    rng.shuffle(pool)
    return pool[:count]


def timed(func, texts: list[str]) -> list[float]:
    for text in texts[:5]:  # warm up
        func(text)
    out = []
    for text in texts:
        started = time.perf_counter()
        func(text)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = server_env("understanding.sqlite3")
    prepare(env)

    import torch
    from django.utils import timezone

    from personalization.understanding.entities import extractor_load
    from personalization.understanding.recognizer import recognizer_get

    torch.set_num_threads(args.threads)
    recognizer = recognizer_get()
    recognizer.refresh(force=True)
    model = recognizer.model
    if model is None:
        raise SystemExit("no intent model is active: train one with manage.py train_intent_model --activate")
    texts = messages(args.messages, args.seed)
    now = timezone.now()
    log(f"{len(texts)} messages; deployed pipeline {model.meta.get('pipeline')}; torch threads {args.threads}")

    extractor = extractor_load()
    whole = timed(lambda t: recognizer.understand(t, now=now), texts)
    classifier = timed(lambda t: model.predict([t]), texts)
    entities = timed(lambda t: extractor.extract(t, now=now), texts)
    with_entities = sum(bool(recognizer.understand(t, now=now).entities) for t in texts)
    figures = {
        "messages": len(texts),
        "pipeline": model.meta.get("pipeline"),
        "threads": args.threads,
        "p50_ms": round(percentile(whole, 50), 2),
        "p95_ms": round(percentile(whole, 95), 2),
        "classifier_p95_ms": round(percentile(classifier, 95), 2),
        "entities_p95_ms": round(percentile(entities, 95), 2),
        "with_entities": with_entities,
    }
    log(f"understand(): p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
