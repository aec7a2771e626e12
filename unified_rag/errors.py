"""Typed errors. Every user mistake surfaces as one of these, never as a bare traceback."""


class UnifiedRAGError(Exception):
    """Base class for every error this library raises on purpose."""


class InputError(UnifiedRAGError, ValueError):
    """Bad user input: empty texts, bad k, unreadable paths."""


class EmptyCorpusError(InputError):
    """Nothing indexable was given, or the index is empty."""


class ModelLoadError(UnifiedRAGError):
    """A backbone or adapter could not be found or loaded."""


class IndexLoadError(UnifiedRAGError):
    """A saved index dir is missing, corrupt, truncated or of an unknown format."""


class EmbedderMismatchError(IndexLoadError):
    """A saved index was built by another backbone or embedder than the one offered."""
