"""Moved: the embedder contract lives in the core, `unified_rag.embedder`. Kept as an import path."""
from unified_rag.embedder import (CONFIG_NAME, RELEVANCE_NAME, WEIGHTS_NAME, Embedder, EmbedderConfig,  # noqa: F401
                                  cast_adapter)
