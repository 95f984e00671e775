from .catalog import Author, Content, Section, Tag
from .ingest import (
    ContentEmbedding,
    ContentFingerprint,
    ContentRevision,
    CustomerMessage,
    FeedSource,
    ImportJob,
    ImportRowError,
    MappingRule,
    SocialPost,
)
from .intents import OUT_OF_SCOPE, EntityKind, EntitySynonym, GazetteerEntry, Intent, IntentExample, KeywordRule
from .interactions import Interaction
from .readers import ReaderProfile

__all__ = [
    "OUT_OF_SCOPE",
    "Author",
    "Content",
    "ContentEmbedding",
    "ContentFingerprint",
    "ContentRevision",
    "CustomerMessage",
    "EntityKind",
    "EntitySynonym",
    "FeedSource",
    "GazetteerEntry",
    "ImportJob",
    "ImportRowError",
    "Intent",
    "IntentExample",
    "Interaction",
    "KeywordRule",
    "MappingRule",
    "ReaderProfile",
    "Section",
    "SocialPost",
    "Tag",
]
