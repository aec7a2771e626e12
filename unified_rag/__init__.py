"""unified-rag: one decoder LLM embeds the corpus, embeds the query and writes the answer.

Read in data-flow order: readers.py, chunking.py -> backbone.py -> embedder.py (the contract; methods in
embedders/) -> index.py, store.py, sparse.py -> retriever.py -> generator.py, answer_adapter.py ->
rag.py (composes them) -> persist.py (the index dir on disk).

Names are imported on first use, so that `unified-rag --help` stays fast; the embedder classes come
from the registry (unified_rag/registry.py), since the core never imports the packages built on it.
"""
from importlib import import_module

_EXPORTS = {
    ".embedder": ["Embedder", "EmbedderConfig", "load_embedder"],
    ".registry": ["register"],
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
# Embedder classes are found through the registry (the core never imports `embedders/` by name).
_KINDS = {"MeanPoolEmbedder": "mean", "LastTokenEmbedder": "last", "LLM2VecGenEmbedder": "llm2vec-gen"}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_WHERE, *_KINDS, "EMBEDDERS", "LLM2VecGenConfig"]) + ["__version__"]


def __getattr__(name: str):
    if name == "__version__":
        return import_module(".rag", __name__).library_version()
    embedder_class = import_module(".embedder", __name__).embedder_class
    if name in _KINDS:
        value = embedder_class(_KINDS[name])
    elif name == "LLM2VecGenConfig":
        value = embedder_class("llm2vec-gen").config_class
    elif name == "EMBEDDERS":
        names = import_module(".registry", __name__).names
        value = {kind: embedder_class(kind) for kind in names("embedders")}
    elif name in _WHERE:
        value = getattr(import_module(_WHERE[name], __name__), name)
    else:
        raise AttributeError(f"module 'unified_rag' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
