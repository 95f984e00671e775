"""Data collection: read sources (files, feeds), clean and deduplicate, write to the catalog.

Flow: a reader in `formats.py` or `feeds.py` yields `SourceRow`s holding records (`records.py`);
`cleaning.py` turns raw text into clean text, language, canonical URL and hash; `dedup.py` finds the
item a record duplicates; `rules.py` maps sections and tags by editors' rules; `services.py` writes
batches, each in its own transaction, and keeps the `ImportJob`'s counts, progress and row errors.
"""
