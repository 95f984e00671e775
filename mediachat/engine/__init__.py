"""Reply engines, chosen by dotted path in ``MEDIACHAT["ENGINE"]`` (else ``ENGINE_SERVED``); one per process."""

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import (
    Citation,
    Engine,
    EngineBusy,
    EngineError,
    EngineRequest,
    EngineResult,
    EngineTimeout,
    Generation,
    Recommendation,
    Turn,
)

__all__ = [
    "Citation",
    "Engine",
    "EngineBusy",
    "EngineError",
    "EngineRequest",
    "EngineResult",
    "EngineTimeout",
    "Generation",
    "Recommendation",
    "Turn",
    "get_engine",
]


def get_engine() -> Engine:
    """The engine named by the settings (loaded once: a model-backed engine holds its weights)."""
    return _load(settings.MEDIACHAT["ENGINE"] or settings.MEDIACHAT["ENGINE_SERVED"])


@cache
def _load(path: str) -> Engine:
    try:
        engine_class = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"MEDIACHAT['ENGINE'] = {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(engine_class, type) and issubclass(engine_class, Engine)):
        raise ImproperlyConfigured(f"MEDIACHAT['ENGINE'] = {path!r} is not a mediachat.engine.base.Engine")
    return engine_class()
