"""unified-rag: one decoder LLM embeds the corpus, embeds the query and writes the answer.

Read in data-flow order: backbone.py -> embedders/ -> chunking.py, store.py, index.py -> rag.py
(retrieve) -> generator.py (answer).

Names are imported on first use: `embedders` builds on `unified_rag.backbone`, so an eager import
here would be circular, and `unified-rag --help` stays fast.
"""
from importlib import import_module

_EXPORTS = {
    "embedders": ["EMBEDDERS", "Embedder", "EmbedderConfig", "LastTokenEmbedder", "LLM2VecGenConfig",
                  "LLM2VecGenEmbedder", "MeanPoolEmbedder", "load_embedder"],
    ".backbone": ["DEFAULT_MODEL", "Backbone"],
    ".chunking": ["ChunkConfig"],
    ".errors": ["EmbedderMismatchError", "EmptyCorpusError", "IndexChangedError", "IndexLoadError",
                "IndexLockedError", "InputError", "ModelLoadError", "UnifiedRAGError"],
    ".answer_adapter": ["AnswerAdapter", "AnswerAdapterConfig"],
    ".generator": ["GenerationConfig", "Generator"],
    ".index": ["IndexConfig", "VectorIndex"],
    ".rag": ["AnswerStream", "UnifiedRAG", "library_version"],
    ".readers": ["read_documents"],
    ".store": ["DocStore"],
    ".types": ["Answer", "Citation", "Document", "Hit"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str):
    if name == "__version__":
        return import_module(".rag", __name__).library_version()
    if name not in _WHERE:
        raise AttributeError(f"module 'unified_rag' has no attribute {name!r}")
    mod = _WHERE[name]
    value = getattr(import_module(mod, __name__ if mod.startswith(".") else None), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
