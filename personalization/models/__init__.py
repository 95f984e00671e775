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
from .interactions import Interaction
from .readers import ReaderProfile

__all__ = [
    "Author",
    "Content",
    "ContentEmbedding",
    "ContentFingerprint",
    "ContentRevision",
    "CustomerMessage",
    "FeedSource",
    "ImportJob",
    "ImportRowError",
    "Interaction",
    "MappingRule",
    "ReaderProfile",
    "Section",
    "SocialPost",
    "Tag",
]
