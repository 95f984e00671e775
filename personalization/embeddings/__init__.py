"""Embeddings of catalog items: computed by Celery for new and changed items, used by search.

`backends.py` holds the embedder (a base class and all-MiniLM-L6-v2, chosen by settings.MEDIACHAT["EMBEDDER"]),
`services.py` computes and stores `ContentEmbedding` rows, `tasks.py` runs that in the worker, and
`index.py` keeps the published items' vectors in memory for `personalization.search`.
"""
