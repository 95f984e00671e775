from .catalog import Author, Content, Section, Tag
from .interactions import Interaction
from .readers import ReaderProfile

__all__ = ["Author", "Content", "Interaction", "ReaderProfile", "Section", "Tag"]
