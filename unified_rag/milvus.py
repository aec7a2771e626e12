"""Moved: the Milvus store lives in `unified_rag.vectors.milvus_store`. Kept as an import path."""
from .vectors.milvus_store import EMBEDDED_DB, META_FILE, MilvusIndex  # noqa: F401
