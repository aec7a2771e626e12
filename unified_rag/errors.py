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


class IndexChangedError(UnifiedRAGError):
    """Another writer saved the index dir since this object read it, and this object's changes cannot be
    merged onto that version (it was built by another embedder or backbone)."""


class IndexLockedError(UnifiedRAGError):
    """Another process is saving to the same index dir and did not finish within the lock timeout."""


class MissingDependencyError(UnifiedRAGError, ImportError):
    """An optional package is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, feature: str):
    """Import an optional package, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{feature} needs the optional package {module.split('.')[0]!r}: "
            f"pip install 'unified-rag[{extra}]'") from None
