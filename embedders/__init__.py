"""Embedding methods over the shared backbone, each an `unified_rag.embedder.Embedder`. Each kind is
registered through pyproject.toml's `unified_rag.embedders` entry points; `unified_rag.load_embedder`
finds it there."""
from __future__ import annotations

from unified_rag.embedder import AUTO_ADAPTER, CONFIG_NAME, Embedder, EmbedderConfig, load_embedder  # noqa: F401

from .birecon import BiReconEmbedder
from .gem import GEMEmbedder
from .llm2vec import LLM2VecEmbedder
from .llm2vec_gen import LLM2VecGenConfig, LLM2VecGenEmbedder
from .pooling import LastTokenEmbedder, MeanPoolEmbedder

EMBEDDERS: dict[str, type[Embedder]] = {
    "mean": MeanPoolEmbedder,
    "last": LastTokenEmbedder,
    "llm2vec-gen": LLM2VecGenEmbedder,
    "gem": GEMEmbedder,
    "llm2vec": LLM2VecEmbedder,
    "birecon": BiReconEmbedder,
}

__all__ = ["EMBEDDERS", "Embedder", "EmbedderConfig", "LLM2VecGenConfig", "LLM2VecGenEmbedder",
           "LastTokenEmbedder", "MeanPoolEmbedder", "load_embedder"]
