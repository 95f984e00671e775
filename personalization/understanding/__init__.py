"""Understanding readers: what a message wants (intent, with out-of-scope) and what it is about (entities).

- `rules.py`: editors' keyword and regex rules, checked first and time-bounded.
- `examples.py`, `defaults.py`: intent examples in and out (CSV, CLINC150 JSON, Rasa NLU YAML), the default set.
- `dates.py`, `gazetteer.py`, `entities.py`: dates and relative times; the catalog gazetteer; the extractor.
- `recognizer.py`: the runtime pipeline the chat path calls (rules → deployed classifier → threshold).
- `tasks.py`: the Celery `nlu` queue (batch classification, reclassification, nightly gazetteer rebuild).
The classifiers themselves are trained in `training/pipelines/intents*.py`.
"""
