"""Embedding methods over the shared backbone, each an `unified_rag.embedder.Embedder`. Each kind is
registered through pyproject.toml's `unified_rag.embedders` entry points; `unified_rag.load_embedder`
finds it there."""
from __future__ import annotations

from unified_rag.embedder import AUTO_ADAPTER, CONFIG_NAME, Embedder, EmbedderConfig, load_embedder  # noqa: F401
from unified_rag.registry import lookup, names

from .birecon import BiReconEmbedder
from .gem import GEMEmbedder
from .gritlm import GritLMEmbedder
from .llm2vec import LLM2VecEmbedder
from .llm2vec_gen import LLM2VecGenConfig, LLM2VecGenEmbedder
from .llm2vec_gen_official import LLM2VecGenOfficialEmbedder
from .llm2vec_official import LLM2VecOfficialEmbedder
from .pooling import LastTokenEmbedder, MeanPoolEmbedder

# Every registered kind (pyproject.toml's entry points, plug-ins included), read from the registry.
EMBEDDERS: dict[str, type[Embedder]] = {k: lookup("embedders", k) for k in names("embedders")}

__all__ = ["EMBEDDERS", "BiReconEmbedder", "Embedder", "EmbedderConfig", "GEMEmbedder", "GritLMEmbedder",
           "LLM2VecEmbedder", "LLM2VecGenConfig", "LLM2VecGenEmbedder", "LLM2VecGenOfficialEmbedder",
           "LLM2VecOfficialEmbedder", "LastTokenEmbedder", "MeanPoolEmbedder", "load_embedder"]
