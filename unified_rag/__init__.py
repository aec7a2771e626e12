"""unified-rag: one decoder LLM embeds the corpus, embeds the query and writes the answer.

Read in data-flow order: backbone.py -> embedders/ -> chunking.py, store.py, index.py -> rag.py
(retrieve) -> generator.py (answer).
"""
from embedders import (EMBEDDERS, Embedder, EmbedderConfig, LastTokenEmbedder, LLM2VecGenConfig,
                       LLM2VecGenEmbedder, MeanPoolEmbedder, load_embedder)

from .backbone import DEFAULT_MODEL, Backbone
from .chunking import ChunkConfig
from .errors import (EmbedderMismatchError, EmptyCorpusError, IndexLoadError, InputError, ModelLoadError,
                     UnifiedRAGError)
from .generator import GenerationConfig, Generator
from .index import IndexConfig, VectorIndex
from .rag import AnswerStream, UnifiedRAG, library_version
from .readers import read_documents
from .store import DocStore
from .types import Answer, Document, Hit

__version__ = library_version()

__all__ = [
    "Answer", "AnswerStream", "Backbone", "ChunkConfig", "DEFAULT_MODEL", "DocStore", "Document", "EMBEDDERS",
    "Embedder", "EmbedderConfig", "EmbedderMismatchError", "EmptyCorpusError", "GenerationConfig", "Generator",
    "Hit", "IndexConfig", "IndexLoadError", "InputError", "LLM2VecGenConfig", "LLM2VecGenEmbedder",
    "LastTokenEmbedder", "MeanPoolEmbedder", "ModelLoadError", "UnifiedRAG", "UnifiedRAGError", "VectorIndex",
    "load_embedder", "read_documents",
]
