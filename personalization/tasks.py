"""Celery tasks of the personalization app. Each domain keeps its tasks beside its code; importing them
here is what lets Celery's autodiscovery register them."""

from .embeddings.tasks import contents_embed, contents_embed_pending  # noqa: F401
from .ingest.feed_tasks import feed_poll, feeds_poll_due  # noqa: F401
from .ingest.tasks import import_job_run  # noqa: F401
from .understanding.tasks import gazetteer_rebuild  # noqa: F401
